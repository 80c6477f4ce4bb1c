package bundle_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/channel"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// loop replaces file with a symlink to itself: opening it fails with
// ELOOP, an error that is not "missing", even for root.
func loop(t *testing.T, file string) {
	t.Helper()
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Base(file), file); err != nil {
		t.Fatal(err)
	}
}

const eloop = "too many levels of symbolic links"

// importedFake is fakeDirBundle's bundle imported into a new cache.
type importedFake struct {
	sk       signing.SecretKey
	keys     *signing.Keyring
	bdir     string
	dir      storepath.Dir
	paths    map[storepath.Path]string
	cacheDir string
	rep      *bundle.ImportReport
}

func importFake(t *testing.T) *importedFake {
	t.Helper()
	sk, pk, _ := signing.Generate("readerr-test-1")
	f := &importedFake{sk: sk, keys: signing.NewKeyring(pk), cacheDir: filepath.Join(t.TempDir(), "cache")}
	f.bdir, f.dir, f.paths = fakeDirBundle(t, &f.sk)
	rep, err := bundle.Import(context.Background(), f.bdir, f.cacheDir, bundle.ImportOptions{Keys: f.keys})
	if err != nil || !rep.Recorded {
		t.Fatalf("import %s: %v", f.bdir, err)
	}
	f.rep = rep
	return f
}

// referring writes a bundle of a path that refers to ref, one of f's
// paths, and not ref.
func (f *importedFake) referring(t *testing.T) (refs string, ref storepath.Path) {
	t.Helper()
	for p := range f.paths {
		ref = p
		break
	}
	refs = filepath.Join(t.TempDir(), "refs")
	w, err := bundle.NewDirWriter(refs, f.dir, bundle.WriterOptions{Key: &f.sk})
	if err != nil {
		t.Fatal(err)
	}
	p := mustPath(t, strings.Repeat("3", 32)+"-app-1.0")
	if err := w.AddNAR(context.Background(), p, fileNAR(t, []byte("app\n")), bundle.PathMeta{Roles: role.Runtime, References: []storepath.Path{ref}}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(context.Background(), bundle.ManifestHeader{Tool: "test", Mode: role.ModeSources}); err != nil {
		t.Fatal(err)
	}
	return refs, ref
}

// TestImportRecordUnreadable: a bundle's record import cannot read is an
// error naming it, not a missing record written again over the fault and
// reported as newly recorded.
func TestImportRecordUnreadable(t *testing.T) {
	ctx := context.Background()
	f := importFake(t)
	rec := filepath.Join(f.cacheDir, bundle.RecordDir, bundle.RecordName(f.rep.ID))
	loop(t, rec)
	rep, err := bundle.Import(ctx, f.bdir, f.cacheDir, bundle.ImportOptions{Keys: f.keys})
	if err == nil || !strings.Contains(err.Error(), rec) || !strings.Contains(err.Error(), eloop) {
		t.Errorf("import with its record unreadable: %v (recorded %v), want an error naming %s", err, rep != nil && rep.Recorded, rec)
	}
	if fi, err := os.Lstat(rec); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the unreadable record was replaced: %v", err)
	}
}

// TestReferenceUnreadable: a reference whose narinfo in the cache cannot
// be read is reported so, naming the narinfo, and not as missing from
// the cache, by import and by verify --against.
func TestReferenceUnreadable(t *testing.T) {
	ctx := context.Background()
	f := importFake(t)
	keys, cacheDir := f.keys, f.cacheDir
	refs, ref := f.referring(t)
	ni := filepath.Join(cacheDir, cache.NarInfoFile(ref.Hash))
	loop(t, ni)

	check := func(what string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), ni) || !strings.Contains(err.Error(), eloop) || strings.Contains(err.Error(), "not in the bundle") {
			t.Errorf("%s with %s unreadable: %v, want an error naming it, no missing reference", what, ni, err)
		}
	}
	_, err := bundle.Import(ctx, refs, cacheDir, bundle.ImportOptions{Keys: keys})
	check("import", err)
	against, err := cache.OpenDir(cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	defer against.Close()
	_, err = bundle.Verify(ctx, refs, bundle.VerifyOptions{Keys: keys, Against: []cache.Source{against}})
	check("verify --against", err)
}

// TestDeltaBaseUnreadable: a delta's base whose narinfo the cache cannot
// read is said so, naming it, not "never imported, or garbage-collected".
func TestDeltaBaseUnreadable(t *testing.T) {
	f := newDeltaFixture(t, false)
	ni := filepath.Join(f.cacheDir, cache.NarInfoFile(f.base.Hash))
	loop(t, ni)
	_, err := bundle.Import(context.Background(), f.delta, f.cacheDir, bundle.ImportOptions{Keys: f.keys})
	if err == nil || !strings.Contains(err.Error(), ni) || !strings.Contains(err.Error(), eloop) || strings.Contains(err.Error(), "garbage-collected") {
		t.Errorf("import with the base's narinfo %s unreadable: %v, want an error naming it", ni, err)
	}
}

// TestFlatIndexManifestUnreadable: a bundle's manifest.json that cannot
// be read is a bad manifest, named, not an absent one whose flat files
// check and serve's hashed mirror would then say are missing.
func TestFlatIndexManifestUnreadable(t *testing.T) {
	ctx := context.Background()
	sk, _, _ := signing.Generate("readerr-test-1")
	bdir, dir, _ := fakeDirBundle(t, &sk)
	loop(t, filepath.Join(bdir, bundle.ManifestName))
	b, err := storage.Open(ctx, bdir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var bad []string
	err = bundle.FlatIndex{}.AddStored(ctx, b, dir, func(name string, err error) error {
		bad = append(bad, name+": "+err.Error())
		return nil
	})
	if err != nil || len(bad) != 1 || !strings.HasPrefix(bad[0], bundle.ManifestName+": ") || !strings.Contains(bad[0], eloop) {
		t.Errorf("AddStored with manifest.json unreadable: %v, bad %q; want it bad, with ELOOP", err, bad)
	}
}

// TestChannelRecordUnreadable: a channel record import cannot read is an
// error naming it, not an absent record: an older bundle's tarball would
// replace the newer one the cache has.
func TestChannelRecordUnreadable(t *testing.T) {
	ctx := context.Background()
	sk, pk, _ := signing.Generate("readerr-test-1")
	keys := signing.NewKeyring(pk)
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	withChannel := func(salt string, created time.Time) string {
		dir, paths := fakePaths(t)
		bdir := filepath.Join(t.TempDir(), salt)
		bw, err := bundle.NewDirWriter(bdir, dir, bundle.WriterOptions{Key: &sk})
		if err != nil {
			t.Fatal(err)
		}
		src := filepath.Join(t.TempDir(), "nixpkgs")
		os.MkdirAll(src, 0o755)
		os.WriteFile(filepath.Join(src, "default.nix"), []byte("{ ... }: { salt = \""+salt+"\"; }\n"), 0o644)
		var tarball bytes.Buffer
		if err := channel.FromDir(ctx, &tarball, src, "nixpkgs", compression.WriterOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := bw.AddChannel("nixpkgs", "<nixpkgs>", &tarball); err != nil {
			t.Fatal(err)
		}
		writeFakeWith(t, bw, paths, bundle.ManifestHeader{Tool: "test", Mode: role.ModeSources, Created: created})
		return bdir
	}
	newer, older := withChannel("newer", t0.Add(time.Hour)), withChannel("older", t0)
	cacheDir := filepath.Join(t.TempDir(), "cache")
	if _, err := bundle.Import(ctx, newer, cacheDir, bundle.ImportOptions{Keys: keys}); err != nil {
		t.Fatal(err)
	}
	tarball := filepath.Join(cacheDir, filepath.FromSlash(channel.File("nixpkgs")))
	before, err := os.ReadFile(tarball)
	if err != nil {
		t.Fatal(err)
	}
	rec := filepath.Join(cacheDir, "nix-airgap", "channels", "nixpkgs.json")
	loop(t, rec)
	_, err = bundle.Import(ctx, older, cacheDir, bundle.ImportOptions{Keys: keys})
	if err == nil || !strings.Contains(err.Error(), rec) || !strings.Contains(err.Error(), eloop) {
		t.Errorf("import of an older bundle with the channel record unreadable: %v, want an error naming %s", err, rec)
	}
	if after, _ := os.ReadFile(tarball); !bytes.Equal(before, after) {
		t.Error("the newer bundle's channel tarball was replaced by the older one's")
	}
}

// TestCacheInfoUnreadable: import into a cache whose nix-cache-info it
// cannot read is refused at once, naming the file, not after verifying
// the bundle with every reference into the cache reported missing.
func TestCacheInfoUnreadable(t *testing.T) {
	f := importFake(t)
	refs, _ := f.referring(t)
	info := filepath.Join(f.cacheDir, "nix-cache-info")
	loop(t, info)
	_, err := bundle.Import(context.Background(), refs, f.cacheDir, bundle.ImportOptions{Keys: f.keys})
	if err == nil || !strings.Contains(err.Error(), info) || !strings.Contains(err.Error(), eloop) || strings.Contains(err.Error(), "not in the bundle") {
		t.Errorf("import with %s unreadable: %v, want an error naming it, no missing reference", info, err)
	}
}

// TestCacheManifestUnseeable: a cache directory whose manifest.json
// cannot be looked at (ELOOP) is an error naming that file, for Identify
// and verify, not a plain binary cache or a bundle.
func TestCacheManifestUnseeable(t *testing.T) {
	f := importFake(t)
	manifest := filepath.Join(f.cacheDir, bundle.ManifestName)
	if err := os.WriteFile(manifest, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	loop(t, manifest)
	check := func(what string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), bundle.ManifestName+": "+eloop) {
			t.Errorf("%s of a cache with %s unseeable: %v, want an error naming it, with ELOOP", what, manifest, err)
		}
	}
	shape, err := bundle.Identify(f.cacheDir)
	check(fmt.Sprintf("Identify (shape %v)", shape), err)
	_, err = bundle.Verify(context.Background(), f.cacheDir, bundle.VerifyOptions{Keys: f.keys})
	check("verify", err)
}

// TestMissingReferenceRecordUnreadable: import of a bundle that refers to
// a path the cache no longer holds, into a cache whose bundle record
// cannot be read, says, in the missing path's problem, that the records
// could not be read, naming the record.
func TestMissingReferenceRecordUnreadable(t *testing.T) {
	f := importFake(t)
	refs, ref := f.referring(t)
	if err := os.Remove(filepath.Join(f.cacheDir, cache.NarInfoFile(ref.Hash))); err != nil {
		t.Fatal(err)
	}
	rec := bundle.RecordName(f.rep.ID)
	loop(t, filepath.Join(f.cacheDir, bundle.RecordDir, rec))
	_, err := bundle.Import(context.Background(), refs, f.cacheDir, bundle.ImportOptions{Keys: f.keys})
	if err == nil || !strings.Contains(err.Error(), "not in the bundle") || !strings.Contains(err.Error(), "records cannot be read") ||
		!strings.Contains(err.Error(), rec) || !strings.Contains(err.Error(), eloop) {
		t.Errorf("import with %s missing and the record %s unreadable: %v, want it missing and the record named, with ELOOP", ref, rec, err)
	}
}
