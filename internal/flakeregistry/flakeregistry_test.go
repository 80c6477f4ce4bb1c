package flakeregistry_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nix-airgap/nix-airgap/internal/flakeregistry"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

const dir = storepath.Dir("/nix/store")

var (
	kept = "/nix/store/" + strings.Repeat("a", 32) + "-source"
	gone = "/nix/store/" + strings.Repeat("b", 32) + "-source"
)

func entry(id, to string) string {
	return `{"from":{"type":"indirect","id":"` + id + `"},"to":` + to + `}`
}

func reg(entries ...string) string {
	return `{"version":2,"flakes":[` + strings.Join(entries, ",") + `]}` + "\n"
}

func parse(t *testing.T, s string) *flakeregistry.Registry {
	t.Helper()
	r, err := flakeregistry.Parse([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func marshal(t *testing.T, r *flakeregistry.Registry) string {
	t.Helper()
	out, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want string // the error, or Marshal's output
	}{
		{reg(entry("nixpkgs", `{"type":"path","path":"`+kept+`"}`)), reg(entry("nixpkgs", `{"type":"path","path":"`+kept+`"}`))},
		{`{"flakes": [ ], "version": 2}`, reg()},
		{`{"version":2}`, reg()},
		{`{"version":2,"flakes":[{"from":{"id":"a&b"},"to":{}}]}`, reg(`{"from":{"id":"a&b"},"to":{}}`)},
		{`{"version":1,"flakes":[]}`, "not a version 2 flake registry: version 1"},
		{`{"flakes":[]}`, "not a version 2 flake registry: version 0"},
		{`null`, "not a version 2 flake registry: version 0"},
		{`{"version":2,"flakes":[`, "not a version 2 flake registry: unexpected end of JSON input"},
		{``, "not a version 2 flake registry: unexpected end of JSON input"},
		{`{"version":"2"}`, "not a version 2 flake registry: json: cannot unmarshal string into Go struct field file.version of type int"},
		{`{"version":2,"flakes":{}}`, "not a version 2 flake registry: json: cannot unmarshal object into Go struct field file.flakes of type []json.RawMessage"},
	}
	for _, tt := range tests {
		r, err := flakeregistry.Parse([]byte(tt.in))
		var got string
		if err != nil {
			got = err.Error()
			if !errors.Is(err, flakeregistry.ErrInvalid) {
				t.Errorf("Parse(%q) = %v, not ErrInvalid", tt.in, err)
			}
		} else {
			got = marshal(t, r)
		}
		if got != tt.want {
			t.Errorf("Parse(%q): %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestRead(t *testing.T) {
	d := t.TempDir()
	b, err := storage.Open(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := flakeregistry.Read(t.Context(), b, "flake-registry.json"); !storage.IsNotExist(err) {
		t.Errorf("Read of no file: %v, want not-exist", err)
	}
	for content, want := range map[string]string{
		`{"version":1}`: filepath.Join(d, "flake-registry.json") + ": not a version 2 flake registry: version 1",
		strings.Repeat(" ", flakeregistry.MaxSize+1): filepath.Join(d, "flake-registry.json") + ": not a version 2 flake registry: larger than 16777216 bytes",
	} {
		os.WriteFile(filepath.Join(d, "flake-registry.json"), []byte(content), 0o644)
		_, err := flakeregistry.Read(t.Context(), b, "flake-registry.json")
		if err == nil || err.Error() != want || !errors.Is(err, flakeregistry.ErrInvalid) {
			t.Errorf("Read: %v, want %s", err, want)
		}
	}
}

func TestMergeAndExtend(t *testing.T) {
	a1 := entry("a", `{"type":"path","path":"/1"}`)
	a2 := `{"from":{"id":"a","type":"indirect"},"to":{"type":"path","path":"/2"}}` // the same "from", keys in another order
	b := entry("b", `{"type":"github","owner":"o","repo":"r"}`)
	c := entry("c", `{"type":"path","path":"/3"}`)
	merged := parse(t, reg(a1, b))
	merged.Merge(parse(t, reg(c, a2)))
	if got, want := marshal(t, merged), reg(a2, b, c); got != want {
		t.Errorf("Merge:\n%s\nwant\n%s", got, want)
	}
	extended := parse(t, reg(a1, b))
	extended.Extend(parse(t, reg(c, a2)))
	if got, want := marshal(t, extended), reg(a1, b, c); got != want {
		t.Errorf("Extend:\n%s\nwant\n%s", got, want)
	}
	var empty flakeregistry.Registry
	empty.Merge(parse(t, reg(a1, a2)))
	if got, want := marshal(t, &empty), reg(a2); got != want {
		t.Errorf("Merge of one registry's duplicates:\n%s\nwant the last\n%s", got, want)
	}
}

func TestPrune(t *testing.T) {
	in := reg(
		entry("nixpkgs", `{"type":"path","path":"`+kept+`","narHash":"sha256-x"}`),
		entry("old", `{"type":"path","path":"`+gone+`"}`),
		entry("sub", `{"type":"path","path":"`+gone+`/sub/dir"}`),
		entry("other", `{"type":"path","path":"/other/store/`+strings.Repeat("b", 32)+`-source"}`),
		entry("remote", `{"type":"github","owner":"o","repo":"r"}`),
		`1`, `{"to":{"path":7}}`)
	r := parse(t, in)
	dropped := r.Prune(dir, func(h string) bool { return h[0] == 'b' })
	want := reg(
		entry("nixpkgs", `{"type":"path","path":"`+kept+`","narHash":"sha256-x"}`),
		entry("other", `{"type":"path","path":"/other/store/`+strings.Repeat("b", 32)+`-source"}`),
		entry("remote", `{"type":"github","owner":"o","repo":"r"}`),
		`1`, `{"to":{"path":7}}`)
	if got := marshal(t, r); dropped != 2 || got != want {
		t.Errorf("pruned %d entries:\n%s\nwant 2:\n%s", dropped, got, want)
	}
}

func TestFinal(t *testing.T) {
	r := parse(t, reg(
		entry("pinned", `{"type":"path","path":"/s/x","narHash":"sha256-x"}`),
		entry("final", `{"type":"path","path":"/s/y","narHash":"sha256-y","__final":false}`),
		entry("remote", `{"type":"github","owner":"o&p","repo":"r"}`),
		`1`))
	want := reg(
		`{"from":{"type":"indirect","id":"pinned"},"to":{"__final":true,"narHash":"sha256-x","path":"/s/x","type":"path"}}`,
		entry("final", `{"type":"path","path":"/s/y","narHash":"sha256-y","__final":false}`),
		entry("remote", `{"type":"github","owner":"o&p","repo":"r"}`),
		`1`)
	if diff := cmp.Diff(want, marshal(t, r.Final())); diff != "" {
		t.Errorf("Final (-want +got):\n%s", diff)
	}
}

func TestValid(t *testing.T) {
	for in, want := range map[string]bool{
		entry("a", `{"type":"path","path":"/s"}`): true,
		`{"from":{"id":"a"}}`:                     false,
		`{"from":"a","to":{}}`:                    false,
		`{"from":{},"to":null}`:                   false,
		`1`:                                       false,
	} {
		if got := flakeregistry.Valid(json.RawMessage(in)); got != want {
			t.Errorf("Valid(%s) = %v, want %v", in, got, want)
		}
	}
}

func ExampleRegistry_Merge() {
	cache, _ := flakeregistry.Parse([]byte(`{"version":2,"flakes":[
		{"from":{"type":"indirect","id":"nixpkgs"},"to":{"type":"path","path":"/nix/store/old-source"}},
		{"from":{"type":"indirect","id":"home"},"to":{"type":"path","path":"/nix/store/home-source"}}]}`))
	bundle, _ := flakeregistry.Parse([]byte(`{"version":2,"flakes":[
		{"from":{"id":"nixpkgs","type":"indirect"},"to":{"type":"path","path":"/nix/store/new-source"}}]}`))
	cache.Merge(bundle)
	out, _ := cache.Marshal()
	fmt.Print(string(out))
	// Output:
	// {"version":2,"flakes":[{"from":{"id":"nixpkgs","type":"indirect"},"to":{"type":"path","path":"/nix/store/new-source"}},{"from":{"type":"indirect","id":"home"},"to":{"type":"path","path":"/nix/store/home-source"}}]}
}

// FuzzParse parses two registries, a and b, as the cache's and a
// bundle's (import), a cache's (gc) or two served directories' (serve)
// may be after a hand edit or a bad disk. What parses marshals to what
// parses back the same; Prune drops exactly the entries that lock a
// removed path; Merge keeps, for each "from", b's last entry, and a's
// where b has none; Extend keeps a's entries first, then b's first of
// each other "from"; Final marks each pinned entry and only those.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, a, b []byte) {
		ra, err := flakeregistry.Parse(a)
		if err != nil {
			if !errors.Is(err, flakeregistry.ErrInvalid) {
				t.Fatalf("Parse: %v, not ErrInvalid", err)
			}
			return
		}
		out := roundTrip(t, ra)
		checkPrune(t, out)
		checkFinal(t, ra)
		rb, err := flakeregistry.Parse(b)
		if err != nil {
			return
		}
		checkMerge(t, ra, rb)
	})
}

// same reports whether a and b are the same JSON value: Marshal
// compacts entries.
func same(a, b json.RawMessage) bool {
	var va, vb any
	return json.Unmarshal(a, &va) == nil && json.Unmarshal(b, &vb) == nil && cmp.Equal(va, vb)
}

func roundTrip(t *testing.T, r *flakeregistry.Registry) []byte {
	out, err := r.Marshal()
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	back, err := flakeregistry.Parse(out)
	if err != nil {
		t.Fatalf("marshalled registry %q does not parse: %v", out, err)
	}
	if len(back.Flakes) != len(r.Flakes) {
		t.Fatalf("%d entries marshalled, %d parsed back", len(r.Flakes), len(back.Flakes))
	}
	for i := range back.Flakes {
		if !same(back.Flakes[i], r.Flakes[i]) {
			t.Fatalf("entry %d: %s parsed back as %s", i, r.Flakes[i], back.Flakes[i])
		}
	}
	if again, _ := back.Marshal(); string(again) != string(out) {
		t.Fatalf("marshalled twice: %q, then %q", out, again)
	}
	return out
}

func locks(e json.RawMessage) string {
	var v struct {
		To struct {
			Path string `json:"path"`
		} `json:"to"`
	}
	if json.Unmarshal(e, &v) != nil {
		return ""
	}
	if p, _, err := dir.ParseBelow(v.To.Path); err == nil {
		return p.Hash
	}
	return ""
}

func checkPrune(t *testing.T, data []byte) {
	r, _ := flakeregistry.Parse(data)
	before := slices.Clone(r.Flakes)
	isGone := func(h string) bool { return h[0] == 'b' }
	dropped := r.Prune(dir, isGone)
	var want []json.RawMessage
	for _, e := range before {
		if h := locks(e); h == "" || !isGone(h) {
			want = append(want, e)
		}
	}
	if dropped != len(before)-len(want) || !slices.EqualFunc(r.Flakes, want, func(a, b json.RawMessage) bool { return string(a) == string(b) }) {
		t.Fatalf("pruned %d of %d entries, leaving %s; want %d left", dropped, len(before), r.Flakes, len(want))
	}
}

func checkFinal(t *testing.T, r *flakeregistry.Registry) {
	fin := r.Final()
	if len(fin.Flakes) != len(r.Flakes) {
		t.Fatalf("Final: %d entries of %d", len(fin.Flakes), len(r.Flakes))
	}
	for i, e := range r.Flakes {
		var to struct {
			To map[string]json.RawMessage `json:"to"`
		}
		var whole map[string]json.RawMessage
		json.Unmarshal(e, &to)
		_, pinned := to.To["narHash"]
		_, marked := to.To["__final"]
		if json.Unmarshal(e, &whole) != nil || !pinned || marked {
			if string(fin.Flakes[i]) != string(e) {
				t.Fatalf("Final changed %s, which pins nothing or is marked already, to %s", e, fin.Flakes[i])
			}
			continue
		}
		to.To["__final"] = json.RawMessage("true")
		whole["to"], _ = json.Marshal(to.To)
		want, _ := json.Marshal(whole)
		if !same(fin.Flakes[i], want) {
			t.Fatalf("Final of %s: %s, want %s", e, fin.Flakes[i], want)
		}
	}
}

func checkMerge(t *testing.T, a, b *flakeregistry.Registry) {
	merged := &flakeregistry.Registry{Flakes: slices.Clone(a.Flakes)}
	merged.Merge(b)
	last := map[string]json.RawMessage{}
	for _, e := range b.Flakes {
		last[flakeregistry.Key(e)] = e
	}
	want := slices.Collect(maps.Values(last))
	for _, e := range a.Flakes {
		if _, replaced := last[flakeregistry.Key(e)]; !replaced {
			want = append(want, e)
		}
	}
	for _, e := range want {
		if !slices.ContainsFunc(merged.Flakes, func(m json.RawMessage) bool { return string(m) == string(e) }) {
			t.Fatalf("merged registry %s lacks %s", merged.Flakes, e)
		}
	}
	extended := &flakeregistry.Registry{Flakes: slices.Clone(a.Flakes)}
	extended.Extend(b)
	if len(extended.Flakes) < len(a.Flakes) || !slices.EqualFunc(extended.Flakes[:len(a.Flakes)], a.Flakes, func(x, y json.RawMessage) bool { return string(x) == string(y) }) {
		t.Fatalf("Extend changed the first registry's entries: %s", extended.Flakes)
	}
	seen := map[string]bool{}
	for _, e := range a.Flakes {
		seen[flakeregistry.Key(e)] = true
	}
	wantExtra := []json.RawMessage{}
	for _, e := range b.Flakes {
		if k := flakeregistry.Key(e); !seen[k] {
			seen[k] = true
			wantExtra = append(wantExtra, e)
		}
	}
	if got := extended.Flakes[len(a.Flakes):]; !slices.EqualFunc(got, wantExtra, func(x, y json.RawMessage) bool { return string(x) == string(y) }) {
		t.Fatalf("Extend added %s, want %s", got, wantExtra)
	}
}
