package bundle_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/nardelta"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

func mustPath(t *testing.T, base string) storepath.Path {
	t.Helper()
	p, err := storepath.DefaultDir.Base(base)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSimilar checks which base path a delta is made against, and the
// hash parts it rewrites.
func TestSimilar(t *testing.T) {
	h := func(c byte) string { return strings.Repeat(string(c), 32) }
	m := &bundle.Manifest{StoreDir: storepath.DefaultDir, Mode: role.ModeRuntime}
	for _, b := range []string{h('0') + "-hello-2.11", h('1') + "-hello-2.11-man", h('2') + "-glibc-2.37", h('3') + "-openssl-3.0.13",
		h('4') + "-openssl-3.0.13-dev", h('5') + "-hello-1.0", h('6') + "-source"} {
		m.Paths = append(m.Paths, bundle.PathEntry{Path: mustPath(t, b), NarHash: storepath.Hash{Algo: storepath.SHA256, Digest: make([]byte, 32)},
			NarSize: 8, URL: "nar/x.nar", FileHash: storepath.Hash{Algo: storepath.SHA256, Digest: make([]byte, 32)}, Compression: "none", Roles: role.Runtime})
	}
	data, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), bundle.ManifestName)
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	bases, err := bundle.OpenBases(context.Background(), []string{file})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ p, want string }{
		{h('a') + "-hello-2.12", h('0') + "-hello-2.11"},
		{h('a') + "-hello-2.12-man", h('1') + "-hello-2.11-man"},
		{h('a') + "-glibc-2.37", h('2') + "-glibc-2.37"},
		{h('a') + "-openssl-3.0.14-dev", h('4') + "-openssl-3.0.13-dev"},
		{h('a') + "-openssl-3.1.0", h('3') + "-openssl-3.0.13"},
		{h('a') + "-source", h('6') + "-source"},
		{h('a') + "-curl-8.0", ""},
		{h('0') + "-hello-2.11", ""}, // in the bases: not packed at all
	} {
		got, ok := bases.Similar(mustPath(t, tc.p))
		if want := tc.want != ""; ok != want || ok && got.Path.Base() != tc.want {
			t.Errorf("Similar(%s) = %s, %v; want %q", tc.p, got.Path.Base(), ok, tc.want)
		}
	}
	rws := bases.Rewrites(mustPath(t, h('0')+"-hello-2.11"), mustPath(t, h('a')+"-hello-2.12"),
		[]storepath.Path{mustPath(t, h('b')+"-glibc-2.37"), mustPath(t, h('c')+"-openssl-3.1.0"), mustPath(t, h('6')+"-source")})
	want := []nardelta.Rewrite{{Old: h('0'), New: h('a')}, {Old: h('2'), New: h('b')}, {Old: h('3'), New: h('c')}}
	if diff := cmp.Diff(want, rws); diff != "" {
		t.Errorf("Rewrites (-want +got):\n%s", diff)
	}
}

// deltaFixture is a cache holding a base path, and a bundle that carries
// a rebuild of it as a binary delta.
type deltaFixture struct {
	cacheDir, delta string
	keys            *signing.Keyring
	newPath, base   storepath.Path
	newNAR          []byte
}

func newDeltaFixture(t *testing.T, tarForm bool) *deltaFixture {
	t.Helper()
	f, baseNAR := newDeltaCache(t, nil)
	var w *bundle.Writer
	var err error
	sk := fuzzSeedKey
	if tarForm {
		f.delta = filepath.Join(t.TempDir(), "delta.tar")
		out, err := os.Create(f.delta)
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		w, err = bundle.NewTarWriter(out, storepath.DefaultDir, bundle.WriterOptions{Key: &sk, TempDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
	} else {
		f.delta = filepath.Join(t.TempDir(), "delta")
		if w, err = bundle.NewDirWriter(f.delta, storepath.DefaultDir, bundle.WriterOptions{Key: &sk}); err != nil {
			t.Fatal(err)
		}
	}
	res := f.addDelta(t, w, baseNAR, bundle.PathMeta{Roles: role.Runtime})
	if !res.Delta || res.DeltaSize*100 > res.FileSize {
		t.Fatalf("AddNARDelta = %+v; want a delta under 1%% of the compressed NAR", res)
	}
	if err := w.Close(context.Background(), deltaHeader); err != nil {
		t.Fatal(err)
	}
	return f
}

var deltaHeader = bundle.ManifestHeader{Tool: "test", Created: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), Mode: role.ModeRuntime}

// newDeltaCache makes a cache holding a base path, and the NAR of its
// next version, which adds fresh to it, and returns the base's NAR.
func newDeltaCache(t *testing.T, fresh []byte) (*deltaFixture, []byte) {
	t.Helper()
	ctx := context.Background()
	sk := fuzzSeedKey
	f := &deltaFixture{keys: signing.NewKeyring(sk.Public())}
	f.base = mustPath(t, strings.Repeat("0", 32)+"-hello-1.0")
	f.newPath = mustPath(t, strings.Repeat("1", 32)+"-hello-1.1")
	rng := rand.New(rand.NewPCG(1, 2))
	blob := make([]byte, 512<<10)
	for i := range blob {
		blob[i] = byte(rng.Uint32())
	}
	mk := func(self storepath.Path, extra []byte) []byte {
		var buf bytes.Buffer
		w := nar.NewWriter(&buf)
		content := append(append([]byte(self.String()+"\n"), extra...), blob...)
		w.WriteHeader(&nar.Header{Path: "/", Type: nar.TypeDirectory})
		w.WriteHeader(&nar.Header{Path: "/lib", Type: nar.TypeRegular, Size: int64(len(content))})
		w.Write(content)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	baseNAR := mk(f.base, nil)
	f.newNAR = mk(f.newPath, append([]byte("version 1.1\n"), fresh...))

	baseDir := filepath.Join(t.TempDir(), "base")
	bw, err := bundle.NewDirWriter(baseDir, storepath.DefaultDir, bundle.WriterOptions{Key: &sk})
	if err != nil {
		t.Fatal(err)
	}
	if err := bw.AddNAR(ctx, f.base, bytes.NewReader(baseNAR), bundle.PathMeta{Roles: role.Runtime}); err != nil {
		t.Fatal(err)
	}
	if err := bw.Close(ctx, deltaHeader); err != nil {
		t.Fatal(err)
	}
	f.cacheDir = filepath.Join(t.TempDir(), "cache")
	if _, err := bundle.Import(ctx, baseDir, f.cacheDir, bundle.ImportOptions{Keys: f.keys}); err != nil {
		t.Fatal(err)
	}
	return f, baseNAR
}

// addDelta adds the new path to w as a delta against the base.
func (f *deltaFixture) addDelta(t *testing.T, w *bundle.Writer, baseNAR []byte, meta bundle.PathMeta) bundle.DeltaResult {
	t.Helper()
	spool, err := os.CreateTemp(t.TempDir(), "base")
	if err != nil {
		t.Fatal(err)
	}
	defer spool.Close()
	base, err := nardelta.NewBase(spool, bytes.NewReader(baseNAR), []nardelta.Rewrite{{Old: f.base.Hash, New: f.newPath.Hash}})
	if err != nil {
		t.Fatal(err)
	}
	hw := nar.NewHashWriter(io.Discard)
	hw.Write(f.newNAR)
	meta.NarHash, meta.NarSize = hw.Sum(), uint64(len(f.newNAR))
	res, err := w.AddNARDelta(context.Background(), f.newPath, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(f.newNAR)), nil }, meta,
		bundle.DeltaBase{Path: f.base, Base: base})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestImportBinaryDelta imports a delta, as a directory and as a tar
// stream, and checks that the cache holds an ordinary NAR that
// decompresses to the new NAR, under a narinfo Nix would accept.
func TestImportBinaryDelta(t *testing.T) {
	for _, tarForm := range []bool{false, true} {
		f := newDeltaFixture(t, tarForm)
		rep, err := bundle.Import(context.Background(), f.delta, f.cacheDir, bundle.ImportOptions{Keys: f.keys})
		if err != nil {
			t.Fatalf("tar %v: %v", tarForm, err)
		}
		if rep.Verify.Rebuilt != 1 || rep.Added != 1 {
			t.Errorf("tar %v: rebuilt %d, added %d; want 1 and 1", tarForm, rep.Verify.Rebuilt, rep.Added)
		}
		d, err := cache.OpenDir(f.cacheDir)
		if err != nil {
			t.Fatal(err)
		}
		ni, err := d.NarInfo(context.Background(), f.newPath.Hash)
		if err != nil {
			t.Fatal(err)
		}
		if !ni.Verify(f.keys) || ni.Compression != "zstd" || strings.HasSuffix(ni.URL, bundle.DeltaExt) {
			t.Errorf("tar %v: narinfo %+v; want a signed zstd NAR", tarForm, ni)
		}
		r, err := d.Open(context.Background(), ni.URL)
		if err != nil {
			t.Fatal(err)
		}
		if err := cache.CheckNAR(r, ni); err != nil {
			t.Errorf("tar %v: %v", tarForm, err)
		}
		r.Close()
		d.Close()
		if _, err := bundle.Verify(context.Background(), f.cacheDir, bundle.VerifyOptions{Keys: f.keys}); err != nil {
			t.Errorf("tar %v: the cache does not verify: %v", tarForm, err)
		}
	}
}

// TestImportBinaryDeltaRefused damages the delta file: the import is
// refused as corrupt, and the cache is left as it was.
func TestImportBinaryDeltaRefused(t *testing.T) {
	f := newDeltaFixture(t, false)
	files, _ := filepath.Glob(filepath.Join(f.delta, "nar", "*"+bundle.DeltaExt))
	if len(files) != 1 {
		t.Fatalf("delta files %v, want one", files)
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-2] ^= 0xff
	if err := os.WriteFile(files[0], data, 0o644); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadDir(filepath.Join(f.cacheDir, "nar"))
	_, err = bundle.Import(context.Background(), f.delta, f.cacheDir, bundle.ImportOptions{Keys: f.keys})
	if !errors.Is(err, bundle.ErrCorrupt) {
		t.Fatalf("import of a damaged delta = %v, want ErrCorrupt", err)
	}
	after, _ := os.ReadDir(filepath.Join(f.cacheDir, "nar"))
	if len(after) != len(before) {
		t.Errorf("the refused import changed nar/: %d files, were %d", len(after), len(before))
	}
	if _, err := os.Stat(filepath.Join(f.cacheDir, cache.NarInfoFile(f.newPath.Hash))); err == nil {
		t.Error("the refused import published a narinfo")
	}
}

// TestImportBinaryDeltaDamagedBase damages the base's NAR file in the
// cache: the import is refused as corrupt (the cache's damage, not a
// missing piece), naming both paths, and the cache is left as it was.
func TestImportBinaryDeltaDamagedBase(t *testing.T) {
	f := newDeltaFixture(t, false)
	d, err := cache.OpenDir(f.cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	ni, err := d.NarInfo(context.Background(), f.base.Hash)
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(f.cacheDir, ni.URL)
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	before := nixtest.TreeHash(t, f.cacheDir)
	_, err = bundle.Import(context.Background(), f.delta, f.cacheDir, bundle.ImportOptions{Keys: f.keys})
	if !errors.Is(err, bundle.ErrCorrupt) || errors.Is(err, bundle.ErrMissing) ||
		!strings.Contains(err.Error(), f.base.String()) || !strings.Contains(err.Error(), f.newPath.String()) || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("import against a damaged base = %v, want corrupt only, naming %s and %s", err, f.base, f.newPath)
	}
	if nixtest.TreeHash(t, f.cacheDir) != before {
		t.Error("the refused import changed the cache")
	}
}

// TestDeltaTargetInCache removes a delta's base from the cache after the
// import that rebuilt its target, as gc does: importing the bundle again,
// verifying it deeply against the cache, and import --repair need no base
// while the cache holds the target whole (and, for the repair, intact);
// a repair that must rebuild the target is refused, naming both paths,
// and leaves the cache as it was.
func TestDeltaTargetInCache(t *testing.T) {
	ctx := context.Background()
	f := newDeltaFixture(t, false)
	if _, err := bundle.Import(ctx, f.delta, f.cacheDir, bundle.ImportOptions{Keys: f.keys}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{cache.NarInfoFile(f.base.Hash)} {
		if err := os.Remove(filepath.Join(f.cacheDir, name)); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := bundle.Import(ctx, f.delta, f.cacheDir, bundle.ImportOptions{Keys: f.keys})
	if err != nil || rep.Verify.Rebuilt != 0 || rep.Verify.InCache != 1 || rep.Skipped != 1 {
		t.Fatalf("import again without the base = %+v, %v; want nothing rebuilt, 1 delta whose NAR the cache has, 1 path skipped", rep, err)
	}
	d, err := cache.OpenDir(f.cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	vrep, err := bundle.Verify(ctx, f.delta, bundle.VerifyOptions{Keys: f.keys, Deep: true, Against: []cache.Source{d}})
	if err != nil || vrep.InCache != 1 || vrep.Rebuilt != 0 {
		t.Errorf("verify --deep --against the cache = %+v, %v; want 1 delta whose NAR the cache has", vrep, err)
	}
	rep, err = bundle.Import(ctx, f.delta, f.cacheDir, bundle.ImportOptions{Keys: f.keys, Repair: true})
	if err != nil || rep.RepairChecked != 1 || len(rep.Repaired) != 0 {
		t.Fatalf("import --repair without the base = %+v, %v; want 1 path checked, sound", rep, err)
	}

	// Damage the target: now the delta must be rebuilt, and cannot be.
	ni, err := d.NarInfo(ctx, f.newPath.Hash)
	if err != nil {
		t.Fatal(err)
	}
	flipByte(t, filepath.Join(f.cacheDir, ni.URL), func(n int) int { return n / 2 })
	before := nixtest.TreeHash(t, f.cacheDir)
	_, err = bundle.Import(ctx, f.delta, f.cacheDir, bundle.ImportOptions{Keys: f.keys, Repair: true})
	if !errors.Is(err, bundle.ErrMissing) || !strings.Contains(err.Error(), f.base.String()) || !strings.Contains(err.Error(), f.newPath.String()) {
		t.Errorf("import --repair of a damaged target without its base = %v, want missing, naming %s and %s", err, f.base, f.newPath)
	}
	if nixtest.TreeHash(t, f.cacheDir) != before {
		t.Error("the refused repair changed the cache")
	}
}

// TestOtherStoreSaidFirst: a bundle for a store other than the cache's
// is refused for that before anything else, whatever its kind: a full
// bundle, a delta whose references the cache lacks and a binary delta
// whose base it lacks (each would be missing pieces otherwise), a tar, a
// stream, a volume set. The cache is left as it was, and verify against
// such a cache says the same.
func TestOtherStoreSaidFirst(t *testing.T) {
	ctx := context.Background()
	sk := fuzzSeedKey
	binary := newDeltaFixture(t, false)
	binaryTar := newDeltaFixture(t, true)
	refs := filepath.Join(t.TempDir(), "refs")
	w, err := bundle.NewDirWriter(refs, storepath.DefaultDir, bundle.WriterOptions{Key: &sk})
	if err != nil {
		t.Fatal(err)
	}
	p := mustPath(t, strings.Repeat("2", 32)+"-app-1.0")
	if err := w.AddNAR(ctx, p, fileNAR(t, []byte("app\n")), bundle.PathMeta{Roles: role.Runtime, References: []storepath.Path{binary.base}}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(ctx, deltaHeader); err != nil {
		t.Fatal(err)
	}
	full := filepath.Join(t.TempDir(), "full.tar")
	if err := os.WriteFile(full, tinyTar(t, 3, "zstd"), 0o644); err != nil {
		t.Fatal(err)
	}
	stream, err := os.ReadFile(binaryTar.delta)
	if err != nil {
		t.Fatal(err)
	}
	vols := volumeSet(t, sk, 3, 40<<10, "")

	const otherStore = "/var/tmp/demo/store"
	other := filepath.Join(t.TempDir(), "other")
	d, err := cache.CreateDir(other, otherStore, bundle.Priority)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	against, err := cache.OpenDir(other)
	if err != nil {
		t.Fatal(err)
	}
	defer against.Close()
	before := nixtest.TreeHash(t, other)
	keys := signing.NewKeyring(sk.Public())
	for _, tc := range []struct {
		name string
		srcs []string
	}{
		{"full bundle", []string{full}},
		{"delta with references outside", []string{refs}},
		{"binary delta", []string{binary.delta}},
		{"binary delta tar", []string{binaryTar.delta}},
		{"binary delta stream", []string{"-"}},
		{"volume set", vols},
	} {
		src := bundle.VolumesName(tc.srcs)
		wantSaid := func(op, what string) string {
			refused := ""
			if op == "import" {
				refused = "refused, the cache is unchanged: "
			}
			return fmt.Sprintf("%s %s: %swrong store dir: %s %s is for store %s, the bundle for store /nix/store", op, src, refused, what, other, otherStore)
		}
		var err error
		if len(tc.srcs) > 1 {
			_, err = bundle.ImportVolumes(ctx, tc.srcs, other, bundle.ImportOptions{Keys: keys})
		} else {
			_, err = bundle.Import(ctx, src, other, bundle.ImportOptions{Keys: keys, Stdin: bytes.NewReader(stream)})
		}
		if want := wantSaid("import", "cache"); err == nil || err.Error() != want {
			t.Errorf("import of a %s into a cache for %s: %v; want %q", tc.name, otherStore, err, want)
		}
		if after := nixtest.TreeHash(t, other); after != before {
			t.Errorf("import of a %s into a cache for %s changed it", tc.name, otherStore)
		}
		vopts := bundle.VerifyOptions{Keys: keys, Deep: true, Against: []cache.Source{against}, Stdin: bytes.NewReader(stream)}
		if len(tc.srcs) > 1 {
			_, err = bundle.VerifyVolumes(ctx, tc.srcs, vopts)
		} else {
			_, err = bundle.Verify(ctx, src, vopts)
		}
		if want := wantSaid("verify", "--against cache"); err == nil || err.Error() != want {
			t.Errorf("verify of a %s against a cache for %s: %v; want %q", tc.name, otherStore, err, want)
		}
	}
}

// TestImportBinaryDeltaBaseNotImported: a site that skipped a week
// imports the next week's bundle, whose binary delta is against a path
// the skipped bundle brought. The import is refused as missing, naming
// both paths and the base bundle to import first.
func TestImportBinaryDeltaBaseNotImported(t *testing.T) {
	ctx := context.Background()
	f, baseNAR := newDeltaCache(t, nil)
	sk := fuzzSeedKey
	dir := filepath.Join(t.TempDir(), "delta")
	w, err := bundle.NewDirWriter(dir, storepath.DefaultDir, bundle.WriterOptions{Key: &sk})
	if err != nil {
		t.Fatal(err)
	}
	f.addDelta(t, w, baseNAR, bundle.PathMeta{Roles: role.Runtime})
	skipped := bundle.Base{ID: storepath.Hash{Algo: storepath.SHA256, Digest: bytes.Repeat([]byte{9}, 32)}, Created: time.Date(2026, 2, 22, 0, 0, 0, 0, time.UTC), Kind: bundle.BaseBundle, Provides: []storepath.Path{}}
	h := deltaHeader
	h.Bases = []bundle.Base{skipped}
	if err := w.Close(ctx, h); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "cache")
	_, err = bundle.Import(ctx, dir, empty, bundle.ImportOptions{Keys: f.keys})
	want := "it came with base " + skipped.ID.String() + " (packed 2026-02-22) or a bundle before it: import that first"
	if !errors.Is(err, bundle.ErrMissing) || !strings.Contains(err.Error(), want) ||
		!strings.Contains(err.Error(), f.base.String()) || !strings.Contains(err.Error(), f.newPath.String()) {
		t.Errorf("import without the delta's base = %v; want missing, naming %s, %s and %q", err, f.base, f.newPath, want)
	}
}

// TestVerifyDeltaBasesSaid: verify of a bundle of binary deltas, with no
// cache to check their bases against, says in a warning and a count that
// import needs the bases in the cache, naming one; against a cache, and
// on import, where the bases are checked, it does not.
func TestVerifyDeltaBasesSaid(t *testing.T) {
	ctx := t.Context()
	f := newDeltaFixture(t, false)
	d, err := cache.OpenDir(f.cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	said := func(rep *bundle.Report) bool {
		for _, w := range rep.Warnings {
			if strings.HasPrefix(w, f.base.Base()+": the base of a binary delta") && strings.Contains(w, "the cache it is imported into must have") {
				return true
			}
		}
		return false
	}
	rep, err := bundle.Verify(ctx, f.delta, bundle.VerifyOptions{Keys: f.keys})
	if err != nil || rep.DeltaBases != 1 || !said(rep) {
		t.Errorf("verify without --against: delta bases %d, warnings %q, %v; want 1, and a warning naming %s", rep.DeltaBases, rep.Warnings, err, f.base)
	}
	rep, err = bundle.Verify(ctx, f.delta, bundle.VerifyOptions{Keys: f.keys, Against: []cache.Source{d}})
	if err != nil || rep.DeltaBases != 0 || said(rep) {
		t.Errorf("verify --against the cache: delta bases %d, warnings %q, %v; want none", rep.DeltaBases, rep.Warnings, err)
	}
	irep, err := bundle.Import(ctx, f.delta, f.cacheDir, bundle.ImportOptions{Keys: f.keys})
	if err != nil || irep.Verify.DeltaBases != 0 || said(irep.Verify) {
		t.Errorf("import: %+v, %v; want no word of the delta bases it checked", irep, err)
	}
}
