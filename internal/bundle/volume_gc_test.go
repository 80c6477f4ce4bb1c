package bundle_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/gc"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// TestGCHalfImportedVolumes: gc --keep-bundles 1 between two imports of
// one volume set keeps what the set published already and the base of
// its kept delta, which only an older bundle brought, and names the set;
// the last volume then completes the set alone. A set whose kept
// manifest cannot be read keeps everything, with a warning.
func TestGCHalfImportedVolumes(t *testing.T) {
	ctx := context.Background()
	const size = 40 << 10
	f, vols := deltaVolumes(t, size)
	lib := mustPath(t, strings.Repeat("2", 32)+"-libfoo-1.0")
	half := func(t *testing.T) string {
		t.Helper()
		cacheDir := copyDir(t, f.cacheDir)
		// A newer bundle: gc --keep-bundles 1 keeps it, not the base's.
		importOther(t, f, cacheDir)
		rep, err := bundle.ImportVolumes(ctx, vols[1:], cacheDir, bundle.ImportOptions{Keys: f.keys})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Volumes == nil || len(rep.Volumes.Missing) != 1 {
			t.Fatalf("volumes %+v; want 1 missing", rep.Volumes)
		}
		if !exists(filepath.Join(cacheDir, cache.NarInfoFile(lib.Hash))) {
			t.Fatalf("%s is not published after volumes 2..%d", lib, len(vols))
		}
		return cacheDir
	}
	gcRun := func(t *testing.T, cacheDir string) *gc.Report {
		t.Helper()
		rep, err := gc.Collect(ctx, cacheDir, gc.Options{Roots: gc.Roots{KeepBundles: 1}, Grace: -1})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}

	t.Run("kept", func(t *testing.T) {
		cacheDir := half(t)
		vrep, err := bundle.Verify(ctx, cacheDir, bundle.VerifyOptions{Keys: f.keys})
		if err != nil {
			t.Fatalf("verify the cache with the set half-imported: %v", err)
		}
		// verify says so: the paths still to come are not in.
		want := fmt.Sprintf("is half-imported (%d of %d volumes in)", len(vols)-1, len(vols))
		if !slices.ContainsFunc(vrep.Warnings, func(w string) bool { return strings.Contains(w, want) }) {
			t.Errorf("verify the cache with the set half-imported: warnings %q, want one saying %q", vrep.Warnings, want)
		}
		rep := gcRun(t, cacheDir)
		if len(rep.HalfImported) != 1 || rep.HalfImported[0].Volumes != len(vols) || len(rep.HalfImported[0].Imported) != len(vols)-1 {
			t.Errorf("report's half-imported sets %+v; want the set, %d of %d volumes", rep.HalfImported, len(vols)-1, len(vols))
		}
		for _, p := range []storepath.Path{lib, f.base} {
			if !exists(filepath.Join(cacheDir, cache.NarInfoFile(p.Hash))) {
				t.Errorf("gc removed %s, which the half-imported set needs (removed %v)", p, rep.RemovedPaths)
			}
		}
		// The last volume alone completes the set: nothing else is
		// imported again.
		irep, err := bundle.Import(ctx, vols[0], cacheDir, bundle.ImportOptions{Keys: f.keys})
		if err != nil {
			t.Fatalf("import the last volume after gc: %v", err)
		}
		if irep.Volumes == nil || len(irep.Volumes.Missing) != 0 || !irep.Recorded || irep.Added != 1 {
			t.Errorf("last import: volumes %+v, recorded %v, added %d; want the set complete, the delta's path added", irep.Volumes, irep.Recorded, irep.Added)
		}
		checkRebuilt(t, f, cacheDir)
		if left, _ := filepath.Glob(filepath.Join(cacheDir, "nix-airgap", "volumes", "*")); len(left) != 0 {
			t.Errorf("kept files left after the set completed: %q", left)
		}
		if rep := gcRun(t, cacheDir); len(rep.HalfImported) != 0 {
			t.Errorf("gc after the set completed names half-imported sets %+v", rep.HalfImported)
		}
	})
	t.Run("NAR file without its narinfo", func(t *testing.T) {
		// An import killed between a NAR file and its narinfo leaves
		// the file; the set's next import takes it up, so gc keeps it.
		cacheDir := half(t)
		ni := filepath.Join(cacheDir, cache.NarInfoFile(lib.Hash))
		data, err := os.ReadFile(ni)
		if err != nil {
			t.Fatal(err)
		}
		_, url, _ := strings.Cut(string(data), "\nURL: ")
		url, _, _ = strings.Cut(url, "\n")
		if url == "" || !exists(filepath.Join(cacheDir, url)) {
			t.Fatalf("no NAR file %q for %s", url, lib)
		}
		if err := os.Remove(ni); err != nil {
			t.Fatal(err)
		}
		if rep := gcRun(t, cacheDir); !exists(filepath.Join(cacheDir, url)) {
			t.Errorf("gc removed %s, a file the half-imported set names (removed %d NAR files)", url, rep.Removed.NarFiles)
		}
	})
	t.Run("no volumes.json", func(t *testing.T) {
		// An import killed after it kept the manifest, before it noted
		// its volumes: the set's size comes from the manifest, and the
		// report says why which volumes are in is unknown.
		cacheDir := half(t)
		vs, _ := filepath.Glob(filepath.Join(cacheDir, "nix-airgap", "volumes", "*", "volumes.json"))
		if len(vs) != 1 {
			t.Fatalf("kept volumes.json %q; want the set's", vs)
		}
		if err := os.Remove(vs[0]); err != nil {
			t.Fatal(err)
		}
		rep := gcRun(t, cacheDir)
		if len(rep.HalfImported) != 1 || rep.HalfImported[0].Volumes != len(vols) || !strings.Contains(rep.HalfImported[0].Unknown, "volumes.json") {
			t.Errorf("report's half-imported sets %+v; want the set, %d volumes, imported unknown for want of volumes.json", rep.HalfImported, len(vols))
		}
		for _, p := range []storepath.Path{lib, f.base} {
			if !exists(filepath.Join(cacheDir, cache.NarInfoFile(p.Hash))) {
				t.Errorf("gc removed %s, which the half-imported set needs", p)
			}
		}
		// Importing a volume again notes it.
		irep, err := bundle.Import(ctx, vols[1], cacheDir, bundle.ImportOptions{Keys: f.keys})
		if err != nil {
			t.Fatal(err)
		}
		if irep.Volumes == nil || len(irep.Volumes.Missing) != len(vols)-1 {
			t.Errorf("import of volume 2 again: volumes %+v", irep.Volumes)
		}
		if rep := gcRun(t, cacheDir); len(rep.HalfImported) != 1 || rep.HalfImported[0].Unknown != "" || len(rep.HalfImported[0].Imported) != 1 {
			t.Errorf("after volume 2 again, half-imported sets %+v; want volume 2 of %d", rep.HalfImported, len(vols))
		}
	})
	t.Run("unreadable manifest", func(t *testing.T) {
		cacheDir := half(t)
		ms, _ := filepath.Glob(filepath.Join(cacheDir, "nix-airgap", "volumes", "*", bundle.ManifestName))
		if len(ms) != 1 {
			t.Fatalf("kept manifests %q; want the set's", ms)
		}
		if err := os.WriteFile(ms[0], []byte("{"), 0o644); err != nil {
			t.Fatal(err)
		}
		before := nixtest.TreeHash(t, filepath.Join(cacheDir, "nar"))
		rep := gcRun(t, cacheDir)
		if rep.Removed.Paths != 0 || len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], "everything is kept") {
			t.Errorf("gc removed %d paths, warned %q; want none removed and a warning", rep.Removed.Paths, rep.Warnings)
		}
		if nixtest.TreeHash(t, filepath.Join(cacheDir, "nar")) != before {
			t.Error("gc changed the NAR files")
		}
	})
}

// importOther imports a bundle of one path no other needs, packed and
// imported after the fixture's base.
func importOther(t *testing.T, f *deltaFixture, cacheDir string) {
	t.Helper()
	ctx := context.Background()
	sk := fuzzSeedKey
	dir := filepath.Join(t.TempDir(), "other")
	w, err := bundle.NewDirWriter(dir, storepath.DefaultDir, bundle.WriterOptions{Key: &sk})
	if err != nil {
		t.Fatal(err)
	}
	buf := fileNAR(t, []byte("other"))
	p := mustPath(t, strings.Repeat("3", 32)+"-other-1.0")
	if err := w.AddNAR(ctx, p, buf, bundle.PathMeta{Roles: role.Runtime}); err != nil {
		t.Fatal(err)
	}
	h := deltaHeader
	h.Created = h.Created.Add(time.Hour)
	if err := w.Close(ctx, h); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // a later record modification time
	if _, err := bundle.Import(ctx, dir, cacheDir, bundle.ImportOptions{Keys: f.keys}); err != nil {
		t.Fatal(err)
	}
}

func exists(name string) bool {
	_, err := os.Stat(name)
	return err == nil
}
