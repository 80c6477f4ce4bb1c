package pack_test

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/check"
	"github.com/nix-airgap/nix-airgap/internal/gc"
	"github.com/nix-airgap/nix-airgap/internal/pack"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// TestBinaryDeltas is issue 16's done-when on the test world: a site
// imported a base; a deep change (a new libbase, as a version bump)
// rebuilds every runtime path above it with new store paths written into
// its files, and a mass rebuild (a new cc) changes nothing but those
// store paths. pack --since the base ships binary deltas, smaller than
// the plain delta; import rebuilds each NAR from the base in the cache,
// as a directory and as a tar stream; verify --deep --against the cache
// rebuilds them too. A delta whose base the cache lost, or holds
// damaged, is refused naming both paths, the cache unchanged. Stock Nix,
// offline, substitutes both updated systems from serve with nothing
// built.
func TestBinaryDeltas(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	tmp := t.TempDir()
	keys := signing.NewKeyring(f.key.Public())
	opts := plan.Options{Mode: role.ModeRuntime}

	base, site := f.importedBase(t, tmp, opts)

	update := f.w.Args("", "x")
	newTop := f.w.OutPaths(t, update...)["toplevel"]
	plain := f.pack(t, f.targets(t, update...), pack.Options{Options: opts, Out: filepath.Join(tmp, "plain"), Since: []string{base}, NoBinaryDeltas: true})
	if plain.Deltas.Tried != 0 {
		t.Errorf("--binary-deltas=false made %d deltas", plain.Deltas.Tried)
	}
	deltaDir := filepath.Join(tmp, "delta")
	res := f.pack(t, f.targets(t, update...), pack.Options{Options: opts, Out: deltaDir, Since: []string{base}})
	deltaTar := filepath.Join(tmp, "delta.tar")
	f.pack(t, f.targets(t, update...), pack.Options{Options: opts, Out: deltaTar, Since: []string{base}})
	if len(res.Paths) != len(plain.Paths) {
		t.Fatalf("the delta has %d paths, the plain delta %d", len(res.Paths), len(plain.Paths))
	}
	var deltas []*bundle.PathEntry
	for i := range res.Manifest.Paths {
		if e := &res.Manifest.Paths[i]; e.Delta != nil {
			deltas = append(deltas, e)
		}
	}
	t.Logf("deltas %+v; NAR and delta files %d bytes, plain %d", res.Deltas, res.FileBytes, plain.FileBytes)
	if res.Deltas.Paths == 0 || len(deltas) != res.Deltas.Paths || res.Deltas.Saved == 0 {
		t.Fatalf("deltas %+v, %d in the manifest; want some, all in the manifest, bytes saved", res.Deltas, len(deltas))
	}
	// plan --since makes the same deltas, writing nothing.
	bases, err := bundle.OpenBases(ctx, []string{base})
	if err != nil {
		t.Fatal(err)
	}
	est, err := f.packer.EstimateDeltas(ctx, res.Plan, bases, "", "")
	if err != nil || est.Paths != res.Deltas.Paths || est.Saved != res.Deltas.Saved {
		t.Errorf("EstimateDeltas = %+v, %v; want what pack saved, %+v", est, err, res.Deltas)
	}
	if res.FileBytes >= plain.FileBytes {
		t.Errorf("the bundle with deltas has %d bytes of NAR and delta files, the plain delta %d", res.FileBytes, plain.FileBytes)
	}
	for _, e := range deltas {
		if _, err := os.Stat(filepath.Join(deltaDir, cache.NarInfoFile(e.Path.Hash))); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s travels as a delta but has a narinfo in the bundle (%v)", e.Path, err)
		}
	}

	// verify --deep --against the site rebuilds every delta.
	vopts := bundle.VerifyOptions{Keys: keys, Deep: true, Against: []cache.Source{openDir(t, site)}}
	for _, src := range []string{deltaDir, deltaTar} {
		rep, err := bundle.Verify(ctx, src, vopts)
		if err != nil {
			t.Errorf("verify --deep --against %s: %v", src, err)
		} else if rep.Rebuilt != len(deltas) {
			t.Errorf("verify --deep --against %s: rebuilt %d, want %d", src, rep.Rebuilt, len(deltas))
		}
	}

	// A base gone from the cache, or damaged there, refuses the delta,
	// naming both paths, and leaves the cache as it was.
	victim := deltas[0]
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, cacheDir string)
		want   string
		kind   error // missing for a base gone, corrupt for one damaged
	}{
		{"base collected", func(t *testing.T, cacheDir string) {
			// nix-airgap gc, keeping every path whose closure lacks the base.
			rep, err := gc.Collect(ctx, cacheDir, gc.Options{Roots: gc.Roots{Paths: pathsWithout(t, base, victim.Delta.Base)}, Grace: -1})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(cacheDir, cache.NarInfoFile(victim.Delta.Base.Hash))); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("gc %+v left the base %s (%v)", rep, victim.Delta.Base, err)
			}
		}, "not in the cache", bundle.ErrMissing},
		{"base damaged", func(t *testing.T, cacheDir string) {
			flipNARByte(t, cacheDir, victim.Delta.Base.Hash)
		}, "damaged", bundle.ErrCorrupt},
	} {
		for _, src := range []string{deltaDir, deltaTar} {
			t.Run(tc.name+"/"+filepath.Base(src), func(t *testing.T) {
				cacheDir := copyTree(t, site)
				tc.damage(t, cacheDir)
				before := treeSum(t, cacheDir)
				_, err := bundle.Import(ctx, src, cacheDir, bundle.ImportOptions{Keys: keys})
				var ve *bundle.VerifyError
				if !errors.As(err, &ve) || !errors.Is(err, tc.kind) {
					t.Fatalf("import = %v, want a VerifyError: %v", err, tc.kind)
				}
				if !strings.Contains(err.Error(), victim.Path.String()) || !strings.Contains(err.Error(), victim.Delta.Base.String()) || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("import = %v; want it to name %s and its base %s, %q", err, victim.Path, victim.Delta.Base, tc.want)
				}
				if after := treeSum(t, cacheDir); after != before {
					t.Errorf("the refused import changed the cache:\n%s\nwas\n%s", after, before)
				}
			})
		}
	}

	// Imported, as a stream and as a directory: ordinary NARs in the
	// cache, which verifies as a whole.
	last := ""
	for _, src := range []string{deltaTar, deltaDir} {
		cacheDir := copyTree(t, site)
		rep, err := bundle.Import(ctx, src, cacheDir, bundle.ImportOptions{Keys: keys})
		if err != nil {
			t.Fatalf("import %s: %v", src, err)
		}
		if rep.Verify.Rebuilt != len(deltas) || rep.Added != len(res.Paths) {
			t.Errorf("import %s: rebuilt %d, added %d; want %d and %d", src, rep.Verify.Rebuilt, rep.Added, len(deltas), len(res.Paths))
		}
		if _, err := bundle.Verify(ctx, cacheDir, bundle.VerifyOptions{Keys: keys}); err != nil {
			t.Errorf("verify the cache after importing %s: %v", src, err)
		}
		last = cacheDir
	}
	// As a volume set, imported last volume first, each in a run of its
	// own: the same deltas, rebuilt once whole; this cache is the one
	// stock Nix substitutes from below.
	const volSize = 16 << 10
	volRes := f.pack(t, f.targets(t, update...), pack.Options{Options: opts, Out: filepath.Join(tmp, "vdelta.tar"), Since: []string{base}, VolumeSize: volSize})
	volPlain := f.pack(t, f.targets(t, update...), pack.Options{Options: opts, Out: filepath.Join(tmp, "vplain.tar"), Since: []string{base}, VolumeSize: volSize, NoBinaryDeltas: true})
	t.Logf("volume set: %d volumes, %d bytes, NAR and delta files %d bytes; with --binary-deltas=false %d volumes, %d bytes, NAR files %d bytes",
		len(volRes.Volumes), volRes.BundleBytes, volRes.FileBytes, len(volPlain.Volumes), volPlain.BundleBytes, volPlain.FileBytes)
	if volRes.Deltas.Paths != len(deltas) || volRes.FileBytes >= volPlain.FileBytes {
		t.Errorf("volume set: deltas %+v, NAR and delta files %d bytes, without deltas %d; want %d deltas, fewer bytes", volRes.Deltas, volRes.FileBytes, volPlain.FileBytes, len(deltas))
	}
	// pack --check of the set: its deltas' paths are named by its
	// manifest, their bases by the --since bundle.
	if checked, err := check.CheckBundle(ctx, volRes.Plan, volRes.Volumes, bases, f.packer.Planner.Nix, nil); err != nil || checked.Err() != nil {
		t.Errorf("check the volume set: %v, %v", err, checked.Err())
	}
	volCache, rebuilt := copyTree(t, site), 0
	for _, v := range slices.Backward(volRes.Volumes) {
		rep, err := bundle.Import(ctx, v, volCache, bundle.ImportOptions{Keys: keys})
		if err != nil {
			t.Fatalf("import %s: %v", filepath.Base(v), err)
		}
		rebuilt += rep.Verify.Rebuilt
	}
	if rebuilt < len(deltas) {
		t.Errorf("volume set: rebuilt %d, want %d or more", rebuilt, len(deltas))
	}
	if _, err := bundle.Verify(ctx, volCache, bundle.VerifyOptions{Keys: keys, Deep: true}); err != nil {
		t.Errorf("verify the cache after importing the volume set: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(volCache, "nix-airgap", "volumes", "*")); len(left) != 0 {
		t.Errorf("kept files left after the volume set completed: %q", left)
	}
	last = volCache
	// A NAR rebuilt from a delta, damaged in the cache: verify names
	// its path, and import --repair of the delta bundle rebuilds it again.
	t.Run("repair", func(t *testing.T) {
		cacheDir := copyTree(t, last)
		flipNARByte(t, cacheDir, victim.Path.Hash)
		rep, err := bundle.Verify(ctx, cacheDir, bundle.VerifyOptions{Keys: keys})
		if !errors.Is(err, bundle.ErrCorrupt) || rep == nil || len(rep.Damaged) != 1 || rep.Damaged[0] != victim.Path.String() {
			t.Fatalf("verify the damaged cache: %v, damaged %v; want %s", err, rep.Damaged, victim.Path)
		}
		irep, err := bundle.Import(ctx, deltaDir, cacheDir, bundle.ImportOptions{Keys: keys, Repair: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(irep.Repaired) != 1 || irep.Repaired[0] != victim.Path.String() {
			t.Errorf("import --repair mended %v, want %s", irep.Repaired, victim.Path)
		}
		if _, err := bundle.Verify(ctx, cacheDir, bundle.VerifyOptions{Keys: keys}); err != nil {
			t.Errorf("verify after import --repair: %v", err)
		}
	})
	d := openDir(t, last)
	for _, e := range deltas {
		ni, err := d.NarInfo(ctx, e.Path.Hash)
		if err != nil || ni.Compression != e.Compression || !strings.HasPrefix(ni.URL, "nar/") || strings.HasSuffix(ni.URL, bundle.DeltaExt) {
			t.Errorf("%s in the cache: %+v, %v; want an ordinary %s NAR", e.Path, ni, err, e.Compression)
		}
	}

	// A mass rebuild (a new cc): every runtime path has new store paths
	// written into its files and nothing else changed; those whose delta
	// is smaller than their compressed NAR (the world's files are tiny)
	// travel as deltas. Imported into the same cache, over the update
	// above.
	rebuild := f.w.RebuildArgs("r")
	rebuildTop := f.w.OutPaths(t, rebuild...)["toplevel"]
	rbPlain := f.pack(t, f.targets(t, rebuild...), pack.Options{Options: opts, Out: filepath.Join(tmp, "rebuild-plain"), Since: []string{base}, NoBinaryDeltas: true})
	rbDir := filepath.Join(tmp, "rebuild")
	rb := f.pack(t, f.targets(t, rebuild...), pack.Options{Options: opts, Out: rbDir, Since: []string{base}})
	t.Logf("mass rebuild: deltas %+v; NAR and delta files %d bytes, plain %d", rb.Deltas, rb.FileBytes, rbPlain.FileBytes)
	if n := len(f.w.RuntimeAttrs()); len(rb.Paths) != n || rb.Deltas.Tried != n || rb.Deltas.Paths == 0 {
		t.Errorf("mass rebuild: %d paths, deltas %+v; want all %d runtime paths tried, some as deltas", len(rb.Paths), rb.Deltas, n)
	}
	if rb.Deltas.Saved == 0 || rb.FileBytes >= rbPlain.FileBytes {
		t.Errorf("mass rebuild: %d bytes saved, NAR and delta files %d bytes, plain %d; want them smaller", rb.Deltas.Saved, rb.FileBytes, rbPlain.FileBytes)
	}
	rep, err := bundle.Import(ctx, rbDir, last, bundle.ImportOptions{Keys: keys})
	if err != nil || rep.Verify.Rebuilt != rb.Deltas.Paths {
		t.Fatalf("import the mass rebuild: %v, %+v; want %d rebuilt", err, rep, rb.Deltas.Paths)
	}

	// From an upstream cache: the deltas are made from the NARs pack
	// copies, and the cache keeps the upstream's signatures.
	t.Run("upstream", func(t *testing.T) {
		upKey, upPub, err := signing.Generate("upstream-test-1")
		if err != nil {
			t.Fatal(err)
		}
		keyFile := filepath.Join(t.TempDir(), "up.sec")
		if err := os.WriteFile(keyFile, []byte(upKey.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		up := filepath.Join(t.TempDir(), "up")
		f.n.Run(t, "nix", "copy", "--to", "file://"+up+"?secret-key="+keyFile, newTop)
		f.n.Run(t, "nix-store", append([]string{"--delete"}, resultPaths(res)...)...)
		srv := httptest.NewServer(http.FileServer(http.Dir(up)))
		t.Cleanup(srv.Close)
		h, err := cache.OpenHTTP(ctx, srv.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		p := *f.packer
		pl := *p.Planner
		pl.TrustedKeys = signing.NewKeyring(upPub)
		pl.Upstreams = []plan.Upstream{{URL: srv.URL, Cache: h}}
		p.Planner = &pl
		out := filepath.Join(t.TempDir(), "delta")
		ures, err := p.Pack(ctx, f.targets(t, update...), pack.Options{Options: plan.Options{Mode: role.ModeRuntime, NoBuild: true}, Out: out, Since: []string{base}, Key: &f.key})
		if err != nil {
			t.Fatal(err)
		}
		if ures.Deltas.Paths == 0 || resultSources(ures)[newTop] != srv.URL {
			t.Fatalf("deltas %+v, sources %v; want deltas of upstream NARs", ures.Deltas, resultSources(ures))
		}
		cacheDir := copyTree(t, site)
		if _, err := bundle.Import(ctx, out, cacheDir, bundle.ImportOptions{Keys: signing.NewKeyring(f.key.Public(), upPub)}); err != nil {
			t.Fatal(err)
		}
		d := openDir(t, cacheDir)
		for _, e := range ures.Manifest.Paths {
			if e.Delta == nil {
				continue
			}
			ni, err := d.NarInfo(ctx, e.Path.Hash)
			if err != nil || !ni.Verify(signing.NewKeyring(upPub)) || !ni.Verify(keys) {
				t.Errorf("%s in the cache: %+v, %v; want the upstream's signature and the bundle key's", e.Path, ni, err)
			}
		}
	})

	// Stock Nix, offline, substitutes the updated system from serve.
	client, url := f.offline(t, last)
	f.substitutes(t, client, url, "the updated system", newTop, f.w.Greeting("", "x"), update...)
	f.substitutes(t, client, url, "the mass-rebuilt system", rebuildTop, f.w.Greeting("", ""), rebuild...)
}

// pathsWithout lists the paths of the bundle at dir whose closures lack
// p.
func pathsWithout(t *testing.T, dir string, p storepath.Path) []storepath.Path {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, bundle.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	m, err := bundle.ParseManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	refs := map[storepath.Path][]storepath.Path{}
	for _, e := range m.Paths {
		refs[e.Path] = e.References
	}
	var reaches func(q storepath.Path, seen map[storepath.Path]bool) bool
	reaches = func(q storepath.Path, seen map[storepath.Path]bool) bool {
		if q == p {
			return true
		}
		if seen[q] {
			return false
		}
		seen[q] = true
		return slices.ContainsFunc(refs[q], func(r storepath.Path) bool { return r != q && reaches(r, seen) })
	}
	keep := []storepath.Path{}
	for _, e := range m.Paths {
		if !reaches(e.Path, map[storepath.Path]bool{}) {
			keep = append(keep, e.Path)
		}
	}
	return keep
}

// flipNARByte damages the NAR file of the path with hash part h in a
// cache, keeping its size.
func flipNARByte(t *testing.T, cacheDir, h string) {
	t.Helper()
	d := openDir(t, cacheDir)
	ni, err := d.NarInfo(t.Context(), h)
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(cacheDir, filepath.FromSlash(ni.URL))
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x55
	if err := os.WriteFile(name, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// treeSum lists every file under dir with its sha256, except the lock
// file, whose content says who holds it.
func treeSum(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if de.IsDir() || rel == ".lock" {
			fmt.Fprintf(&b, "%s/\n", rel)
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %x\n", rel, sha256.Sum256(data))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}
