package gc

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/ulikunitz/xz"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

const dir storepath.Dir = "/nix/store"

// sp makes a store path whose hash part is c repeated.
func sp(t testing.TB, c byte, name string) storepath.Path {
	t.Helper()
	p, err := dir.Base(strings.Repeat(string(c), storepath.HashLen) + "-" + name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// testGraph is a → b → c, d → b, e alone, f unreadable.
func testGraph(t *testing.T) (graph, map[string]storepath.Path) {
	p := map[string]storepath.Path{}
	for _, n := range "abcdef" {
		c := byte("0123456"[strings.IndexRune("abcdef", n)])
		p[string(n)] = sp(t, c, string(n))
	}
	g := graph{}
	add := func(n string, refs ...string) {
		node := &node{path: p[n], url: "nar/" + n + ".nar"}
		for _, r := range refs {
			node.refs = append(node.refs, p[r].Hash)
		}
		g[p[n].Hash] = node
	}
	add("a", "b")
	add("b", "c")
	add("c")
	add("d", "b")
	add("e")
	g[p["f"].Hash] = &node{err: errors.New("garbled")}
	return g, p
}

func TestClosure(t *testing.T) {
	g, p := testGraph(t)
	for _, tc := range []struct {
		seeds      []string
		keep       []string
		unreadable []string
	}{
		{[]string{"a"}, []string{"a", "b", "c"}, nil},
		{[]string{"d", "e"}, []string{"b", "c", "d", "e"}, nil},
		{[]string{"c"}, []string{"c"}, nil},
		{[]string{"f"}, []string{"f"}, []string{"f"}},
		{nil, nil, nil},
	} {
		var seeds []storepath.Path
		for _, s := range tc.seeds {
			seeds = append(seeds, p[s])
		}
		// A seed the cache lacks is no error: it is kept if it comes.
		seeds = append(seeds, sp(t, 'z', "absent"))
		keep, unreadable := g.closure(seeds)
		want := map[string]bool{}
		for _, k := range tc.keep {
			want[p[k].Hash] = true
		}
		var wantBad []string
		for _, u := range tc.unreadable {
			wantBad = append(wantBad, p[u].Hash)
		}
		if diff := cmp.Diff(want, keep); diff != "" {
			t.Errorf("closure(%v) keep (-want +got):\n%s", tc.seeds, diff)
		}
		if diff := cmp.Diff(wantBad, unreadable); diff != "" {
			t.Errorf("closure(%v) unreadable (-want +got):\n%s", tc.seeds, diff)
		}
	}
}

func TestRemovalLevels(t *testing.T) {
	g, p := testGraph(t)
	remove := map[string]bool{}
	for _, n := range "abcde" {
		remove[p[string(n)].Hash] = true
	}
	levels := g.removalLevels(remove)
	var got [][]string
	for _, l := range levels {
		var names []string
		for _, h := range l {
			names = append(names, g[h].path.Name)
		}
		got = append(got, names)
	}
	// Every narinfo before those it refers to: a, d and e first (in hash
	// order), then b, then c.
	want := [][]string{{"a", "d", "e"}, {"b"}, {"c"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("removal levels (-want +got):\n%s", diff)
	}
	// Removing b alone: a and d stay, so b would dangle... which is what
	// the caller's closure prevents; the order itself is one level.
	if l := g.removalLevels(map[string]bool{p["c"].Hash: true}); len(l) != 1 {
		t.Errorf("one path: %d levels", len(l))
	}
}

func TestNeeds(t *testing.T) {
	out1, src, out2, shared := sp(t, '1', "system-1"), sp(t, '2', "source.tar.gz"), sp(t, '3', "system-2"), sp(t, '4', "lib")
	base := &record{name: "base.json", m: &bundle.Manifest{
		Mode:    role.ModeSources,
		Targets: []bundle.Target{{Spec: ".#sys", Outputs: map[string]storepath.Path{"out": out1}}},
		Paths:   []bundle.PathEntry{{Path: out1}, {Path: src}, {Path: shared}},
	}}
	delta := func(mode role.Mode, provides ...storepath.Path) *record {
		return &record{name: "delta.json", m: &bundle.Manifest{
			Mode:    mode,
			Targets: []bundle.Target{{Spec: ".#sys", Outputs: map[string]storepath.Path{"out": out2}}},
			Bases:   []bundle.Base{{Paths: 3, Provides: provides}},
			Paths:   []bundle.PathEntry{{Path: out2}},
		}}
	}
	for _, tc := range []struct {
		name string
		r    *record
		want []storepath.Path
		ok   bool
	}{
		{"a full bundle", base, []storepath.Path{out1, src, shared, out1}, true},
		{"a sources delta that says what its bases provide", delta(role.ModeSources, src, shared), []storepath.Path{out2, out2, src, shared}, true},
		// Its references reach what it needs of its base.
		{"a runtime delta", delta(role.ModeRuntime), []storepath.Path{out2, out2}, true},
		{"a sources delta that predates provides", delta(role.ModeSources), []storepath.Path{out2, out2, out1, src, shared}, false},
		// Its base provides nothing it needs: only its own paths.
		{"a sources delta whose base provides nothing", delta(role.ModeSources, []storepath.Path{}...), []storepath.Path{out2, out2}, true},
	} {
		got, ok := needs(tc.r, []*record{base})
		if diff := cmp.Diff(tc.want, got); diff != "" || ok != tc.ok {
			t.Errorf("%s: ok %v, want %v; needs (-want +got):\n%s", tc.name, ok, tc.ok, diff)
		}
	}
}

func TestNewestFirst(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	recs := []*record{
		{name: "b", imported: t0, m: &bundle.Manifest{Created: t0}},
		{name: "c", imported: t0.Add(time.Hour), m: &bundle.Manifest{Created: t0}},
		{name: "a", imported: t0, m: &bundle.Manifest{Created: t0.Add(time.Minute)}},
		{name: "d", imported: t0, m: &bundle.Manifest{Created: t0}},
	}
	newestFirst(recs)
	var got []string
	for _, r := range recs {
		got = append(got, r.name)
	}
	if diff := cmp.Diff([]string{"c", "a", "d", "b"}, got); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
}

func TestParseRoots(t *testing.T) {
	a, b := sp(t, 'a', "hello-2.12"), sp(t, 'b', "glibc-2.40")
	text := "# a channel's store-paths\n" + a.String() + "\n\n  " + b.String() + "  \n"
	var xzText bytes.Buffer
	w, err := xz.NewWriter(&xzText)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(text))
	w.Close()
	for name, in := range map[string][]byte{"plain": []byte(text), "xz": xzText.Bytes()} {
		got, err := ParseRoots(bytes.NewReader(in), dir)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if diff := cmp.Diff([]storepath.Path{a, b}, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", name, diff)
		}
	}
	for _, bad := range []string{"/other/store/" + a.Base() + "\n", a.String() + "/bin/hello\n", "hello\n"} {
		if _, err := ParseRoots(strings.NewReader(bad), dir); err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("ParseRoots(%q) = %v, want an error naming line 1", bad, err)
		}
	}
	if got, err := ParseRoots(strings.NewReader(""), dir); err != nil || got == nil || len(got) != 0 {
		t.Errorf("no roots: %v, %v; want an empty, non-nil list (keep nothing)", got, err)
	}
	// A line too long to be a store path is the user's mistake, named by
	// its line; a cut xz file says what failed.
	long := a.String() + "\n" + strings.Repeat("x", maxRootsLine) + "\n"
	var bl *BadLineError
	if _, err := ParseRoots(strings.NewReader(long), dir); !errors.As(err, &bl) || bl.Line != 2 {
		t.Errorf("ParseRoots(a line of %d bytes) = %v, want a *BadLineError for line 2", maxRootsLine, err)
	}
	cut := xzText.Bytes()[:xzText.Len()/2]
	if _, err := ParseRoots(bytes.NewReader(cut), dir); err == nil || !strings.HasPrefix(err.Error(), "decompress xz: ") {
		t.Errorf("ParseRoots(a cut xz file) = %v, want decompress xz: …", err)
	}
}

func FuzzParseRoots(f *testing.F) {
	f.Add([]byte("/nix/store/" + strings.Repeat("a", 32) + "-hello\n# comment\n\n"))
	f.Add([]byte("\xfd7zXZ\x00garbage"))
	f.Add([]byte("relative\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		paths, err := ParseRoots(bytes.NewReader(in), dir)
		if err != nil {
			return
		}
		for _, p := range paths {
			if q, err := dir.Parse(p.String()); err != nil || q != p {
				t.Errorf("root %s does not parse back: %v", p, err)
			}
		}
	})
}

func TestRootsString(t *testing.T) {
	p := storepath.Path{Dir: storepath.DefaultDir, Hash: "0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk", Name: "hello"}
	tests := []struct {
		roots Roots
		want  string
	}{
		{Roots{KeepBundles: 1}, "the closure of the last imported bundle"},
		{Roots{KeepBundles: 3}, "the closures of the last 3 imported bundles"},
		{Roots{Paths: []storepath.Path{p}}, "the closures of 1 root path"},
		{Roots{Paths: []storepath.Path{p, p}}, "the closures of 2 root paths"},
	}
	for _, tt := range tests {
		if got := tt.roots.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.roots, got, tt.want)
		}
	}
}
