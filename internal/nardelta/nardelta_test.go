package nardelta

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

const (
	oldDep  = "0c6kzph7l0dcbm4y4ppr8xq7lk4sbpfq"
	newDep  = "1d7lzqh8m1fcdn5z5qqs9yr8ml5scqgr"
	oldSelf = "2f8mzrg9n2gdfp6a6rrv0zs9nm6sdrhs"
	newSelf = "3g9nasi0p3hfgq7b7ssw1a0pn7vfsik0"
)

// file is a NAR entry for makeNAR: a regular file unless link is set.
type file struct {
	data string
	exec bool
	link string
}

// makeNAR makes the NAR of a directory holding files, by slash path.
func makeNAR(t testing.TB, files map[string]file) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := nar.NewWriter(&buf)
	if err := w.WriteHeader(&nar.Header{Path: "/", Type: nar.TypeDirectory}); err != nil {
		t.Fatal(err)
	}
	// Directories first, as a walk in NAR order meets them.
	var paths []string
	dirs := map[string]bool{}
	for p := range files {
		paths = append(paths, p)
		for d := p; strings.Contains(d, "/"); {
			d = d[:strings.LastIndexByte(d, '/')]
			if !dirs[d] {
				dirs[d] = true
				paths = append(paths, d+"/")
			}
		}
	}
	slices.SortFunc(paths, func(a, b string) int {
		return strings.Compare(strings.ReplaceAll(a, "/", "\x00"), strings.ReplaceAll(b, "/", "\x00"))
	})
	for _, p := range paths {
		if strings.HasSuffix(p, "/") {
			if err := w.WriteHeader(&nar.Header{Path: "/" + strings.TrimSuffix(p, "/"), Type: nar.TypeDirectory}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		f := files[p]
		if f.link != "" {
			if err := w.WriteHeader(&nar.Header{Path: "/" + p, Type: nar.TypeSymlink, LinkTarget: f.link}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := w.WriteHeader(&nar.Header{Path: "/" + p, Type: nar.TypeRegular, Size: int64(len(f.data)), Executable: f.exec}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func narHash(b []byte) storepath.Hash {
	h := nar.NewHashWriter(io.Discard)
	h.Write(b)
	return h.Sum()
}

// randomBytes is incompressible, like much of a binary.
func randomBytes(seed uint64, n int) string {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return string(b)
}

func newBase(t testing.TB, baseNAR []byte, rws []Rewrite) *Base {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "base")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	b, err := NewBase(f, bytes.NewReader(baseNAR), rws)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func encode(t testing.TB, baseNAR, newNAR []byte, rws []Rewrite, opts EncodeOptions) []byte {
	t.Helper()
	var delta bytes.Buffer
	if err := Encode(&delta, bytes.NewReader(newNAR), narHash(newNAR), uint64(len(newNAR)), newBase(t, baseNAR, rws), opts); err != nil {
		t.Fatal(err)
	}
	return delta.Bytes()
}

func rebuild(t testing.TB, delta, baseNAR []byte) ([]byte, error) {
	t.Helper()
	r, err := NewReader(bytes.NewReader(delta))
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var out bytes.Buffer
	err = r.Rebuild(&out, newBase(t, baseNAR, r.Header().Rewrites))
	return out.Bytes(), err
}

func TestRoundTrip(t *testing.T) {
	lib := randomBytes(1, 300<<10)
	big := randomBytes(2, 9<<20) // spans several segments
	rpath := "/nix/store/" + oldDep + "-dep-1.0/lib"
	self := "/nix/store/" + oldSelf + "-hello-1.0"
	base := map[string]file{
		"bin/hello":                  {data: lib[:1000] + rpath + lib[1000:] + self, exec: true},
		"lib/libhello.so.1.2.3":      {data: lib[:5000]},
		"lib/libhello.so":            {link: "libhello.so.1.2.3"},
		"lib/big":                    {data: big},
		"share/doc/hello-1.0/README": {data: "hello, version 1.0, from " + self + "\n"},
		"nix-support/propagated":     {data: self + " " + rpath + "\n"},
	}
	rebuilt := map[string]file{}
	for p, f := range base {
		f.data = strings.NewReplacer(oldDep, newDep, oldSelf, newSelf).Replace(f.data)
		rebuilt[p] = f
	}
	rws := []Rewrite{{oldDep, newDep}, {oldSelf, newSelf}}

	// A version bump: a file changed in the middle, one renamed with its
	// version, one new, one gone, the big one with bytes inserted.
	bumped := map[string]file{}
	for p, f := range rebuilt {
		bumped[p] = f
	}
	delete(bumped, "lib/libhello.so.1.2.3")
	bumped["lib/libhello.so.1.2.4"] = file{data: lib[:2000] + "NEW CODE" + lib[2000:5000]}
	bumped["lib/libhello.so"] = file{link: "libhello.so.1.2.4"}
	bumped["bin/hello"] = file{data: rebuilt["bin/hello"].data[:500] + "patched" + rebuilt["bin/hello"].data[507:], exec: true}
	bumped["lib/big"] = file{data: big[:5<<20] + "inserted" + big[5<<20:]}
	bumped["share/new"] = file{data: randomBytes(3, 50<<10)}
	delete(bumped, "nix-support/propagated")

	baseNAR := makeNAR(t, base)
	for _, tc := range []struct {
		name  string
		files map[string]file
		rws   []Rewrite
		max   int // the delta's size at most
	}{
		{"mass rebuild", rebuilt, rws, 500},
		{"mass rebuild, no rewrites", rebuilt, nil, 40 << 10},
		{"version bump", bumped, rws, 50<<10 + 20<<10},
		{"nothing changed", base, nil, 300},
	} {
		t.Run(tc.name, func(t *testing.T) {
			newNAR := makeNAR(t, tc.files)
			delta := encode(t, baseNAR, newNAR, tc.rws, EncodeOptions{})
			if len(delta) > tc.max {
				t.Errorf("delta of %d bytes for a NAR of %d; want at most %d", len(delta), len(newNAR), tc.max)
			}
			got, err := rebuild(t, delta, baseNAR)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, newNAR) {
				t.Fatalf("rebuilt NAR differs: %d bytes, want %d", len(got), len(newNAR))
			}
			t.Logf("NAR %d bytes, delta %d", len(newNAR), len(delta))
		})
	}
}

// TestAlign checks that a file that differs from its counterpart only
// where a dependency's store path changed length, as a version bump of
// the dependency makes its dependents' files, is told in copies and
// literals: no patch, whose dictionary costs zstd more than the file.
func TestAlign(t *testing.T) {
	oldPath, newPath := "/nix/store/"+oldDep+"-dep-1.9/lib", "/nix/store/"+newDep+"-dep-1.10/lib"
	small := "#!/bin/sh\nexec " + oldPath + "/run \"$@\"\n"
	var big strings.Builder
	for i := range 12 {
		// Within a segment and across the segments' edges.
		big.WriteString(randomBytes(uint64(10+i), 300<<10))
		big.WriteString(oldPath)
	}
	base := map[string]file{"bin/run": {data: small, exec: true}, "lib/big": {data: big.String()}}
	bumped := map[string]file{}
	for p, f := range base {
		f.data = strings.ReplaceAll(f.data, oldPath, newPath)
		bumped[p] = f
	}
	baseNAR, newNAR := makeNAR(t, base), makeNAR(t, bumped)
	rws := []Rewrite{{oldDep, newDep}}
	delta := encode(t, baseNAR, newNAR, rws, EncodeOptions{})
	if n := countOps(t, delta)[opPatch]; n != 0 {
		t.Errorf("%d patches, want none", n)
	}
	if len(delta) > 1024 {
		t.Errorf("delta of %d bytes, want at most 1024", len(delta))
	}
	got, err := rebuild(t, delta, baseNAR)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, newNAR) {
		t.Fatalf("rebuilt NAR differs")
	}
}

// TestAlignEdits round-trips files edited at random places by short
// insertions, deletions and replacements, which alignment tells, and
// by longer ones, which it leaves to patches.
func TestAlignEdits(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for i := range 24 {
		orig := []byte(randomBytes(uint64(100+i), 64<<10+r.IntN(3<<19)))
		edited := bytes.Clone(orig)
		maxEdit := 40
		if i%4 == 3 {
			maxEdit = 4 << 10
		}
		for range 1 + r.IntN(30) {
			at := r.IntN(len(edited))
			del := min(r.IntN(maxEdit), len(edited)-at)
			ins := []byte(randomBytes(r.Uint64(), r.IntN(maxEdit)))
			edited = append(edited[:at:at], append(ins, edited[at+del:]...)...)
		}
		baseNAR := makeNAR(t, map[string]file{"f": {data: string(orig)}})
		newNAR := makeNAR(t, map[string]file{"f": {data: string(edited)}})
		delta := encode(t, baseNAR, newNAR, nil, EncodeOptions{})
		got, err := rebuild(t, delta, baseNAR)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if !bytes.Equal(got, newNAR) {
			t.Fatalf("case %d: rebuilt NAR differs", i)
		}
	}
}

// countOps counts a delta's operations by kind.
func countOps(t *testing.T, delta []byte) map[byte]int {
	t.Helper()
	r, err := NewReader(bytes.NewReader(delta))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	n := map[byte]int{}
	uv := func() uint64 {
		v, err := binary.ReadUvarint(r.body)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for {
		op, err := r.body.ReadByte()
		if err != nil {
			t.Fatal(err)
		}
		n[op]++
		switch op {
		case opEnd:
			return n
		case opCopy:
			uv()
			uv()
		case opLit:
			r.body.Discard(int(uv()))
		case opPatch:
			uv()
			uv()
			uv()
			r.body.Discard(int(uv()))
		}
	}
}

func TestRebuildRefuses(t *testing.T) {
	base := map[string]file{"a": {data: randomBytes(1, 100<<10)}, "b": {data: "/nix/store/" + oldDep + "-x"}}
	newFiles := map[string]file{"a": {data: base["a"].data[:50000] + "x" + base["a"].data[50000:]}, "b": {data: "/nix/store/" + newDep + "-x"}}
	baseNAR, newNAR := makeNAR(t, base), makeNAR(t, newFiles)
	rws := []Rewrite{{oldDep, newDep}}
	delta := encode(t, baseNAR, newNAR, rws, EncodeOptions{})

	otherBase := makeNAR(t, map[string]file{"a": {data: "other"}})
	if _, err := rebuild(t, delta, otherBase); !errors.Is(err, ErrBaseMismatch) {
		t.Errorf("another base: %v, want ErrBaseMismatch", err)
	}
	// A base damaged after it was checked (as by a disk) fails the
	// NarHash of the result.
	r, err := NewReader(bytes.NewReader(delta))
	if err != nil {
		t.Fatal(err)
	}
	b := newBase(t, baseNAR, rws)
	b.f.WriteAt([]byte("X"), int64(len(baseNAR)/2))
	if err := r.Rebuild(io.Discard, b); !errors.Is(err, ErrCorrupt) {
		t.Errorf("damaged base: %v, want ErrCorrupt", err)
	}
	r.Close()

	for i := range delta {
		if i%7 != 0 {
			continue
		}
		bad := slices.Clone(delta)
		bad[i] ^= 0x20
		got, err := rebuild(t, bad, baseNAR)
		if err == nil && !bytes.Equal(got, newNAR) {
			t.Fatalf("byte %d flipped: rebuilt a different NAR without an error", i)
		}
	}
	if _, err := rebuild(t, delta[:len(delta)-3], baseNAR); !errors.Is(err, ErrCorrupt) {
		t.Errorf("cut short: %v, want ErrCorrupt", err)
	}
	v2 := slices.Clone(delta)
	v2[len(Magic)] = 2
	if _, err := rebuild(t, v2, baseNAR); !errors.Is(err, ErrVersion) {
		t.Errorf("version 2: %v, want ErrVersion", err)
	}
	if _, err := rebuild(t, append(slices.Clone(delta), 0), baseNAR); !errors.Is(err, ErrCorrupt) {
		t.Errorf("a byte after the end: %v, want ErrCorrupt", err)
	}
}

func TestEncodeChecksNAR(t *testing.T) {
	baseNAR := makeNAR(t, map[string]file{"a": {data: "one"}})
	newNAR := makeNAR(t, map[string]file{"a": {data: "two"}})
	err := Encode(io.Discard, bytes.NewReader(newNAR), narHash(baseNAR), uint64(len(newNAR)), newBase(t, baseNAR, nil), EncodeOptions{})
	if err == nil || !strings.Contains(err.Error(), "hash") {
		t.Errorf("Encode of a NAR with another hash = %v, want an error naming the hash", err)
	}
}

// TestRewriteChunks checks that rewriting does not depend on how the
// input is cut, and that matches never overlap.
func TestRewriteChunks(t *testing.T) {
	rws := []Rewrite{{oldDep, newDep}, {oldSelf, newSelf}}
	in := []byte("x" + oldDep + oldSelf + "/" + oldDep[:10] + "zz" + oldDep + "0" + oldSelf[1:] + oldSelf + "e" + oldDep)
	want := []byte("x" + newDep + newSelf + "/" + oldDep[:10] + "zz" + newDep + "0" + oldSelf[1:] + newSelf + "e" + newDep)
	for cut := 1; cut <= len(in); cut++ {
		var out bytes.Buffer
		w := newRewriter(&out, rws)
		for i := 0; i < len(in); i += cut {
			if _, err := w.Write(in[i:min(i+cut, len(in))]); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("writes of %d bytes: %q, want %q", cut, out.Bytes(), want)
		}
	}
}

func TestShape(t *testing.T) {
	for in, want := range map[string]string{
		"/lib/libfoo.so.1.2.3":     "/lib/libfoo.so.#.#.#",
		"/share/doc/foo-12/README": "/share/doc/foo-#/README",
		"/bin/x":                   "/bin/x",
	} {
		if got := shape(in); got != want {
			t.Errorf("shape(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestUnusedRewritesLeftOut: a delta lists only the rewrites that matched
// in its base: a base set that offers every build of a package it knows
// (a site's inventory holds many) costs no header bytes for those the
// base never refers to, and the delta rebuilds as before.
func TestUnusedRewritesLeftOut(t *testing.T) {
	self := "/nix/store/" + oldSelf + "-hello-1.0"
	base := map[string]file{"bin/hello": {data: randomBytes(4, 2000) + self, exec: true}}
	rebuilt := map[string]file{"bin/hello": {data: strings.ReplaceAll(base["bin/hello"].data, oldSelf, newSelf), exec: true}}
	baseNAR, newNAR := makeNAR(t, base), makeNAR(t, rebuilt)
	used := []Rewrite{{oldSelf, newSelf}}
	var all []Rewrite
	const nix32 = "0123456789abcdfghijklmnpqrsvwxyz"
	for i := range 50 {
		// Hash parts of other builds the base does not refer to.
		old := strings.Repeat("a", 30) + string(nix32[i/32]) + string(nix32[i%32])
		all = append(all, Rewrite{Old: old, New: newDep})
	}
	all = append(all, used...)
	lean := encode(t, baseNAR, newNAR, used, EncodeOptions{})
	delta := encode(t, baseNAR, newNAR, all, EncodeOptions{})
	r, err := NewReader(bytes.NewReader(delta))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Header().Rewrites; !slices.Equal(got, used) {
		t.Errorf("header rewrites %v, want only the one used, %v", got, used)
	}
	r.Close()
	if len(delta) != len(lean) {
		t.Errorf("delta of %d bytes with 50 unused rewrites offered, %d without", len(delta), len(lean))
	}
	got, err := rebuild(t, delta, baseNAR)
	if err != nil || !bytes.Equal(got, newNAR) {
		t.Fatalf("rebuild: %v, equal %v", err, bytes.Equal(got, newNAR))
	}
}
