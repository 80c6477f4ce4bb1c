package bundle_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// TestImportLeavesSBOM imports two bundles with SBOMs: neither goes into
// the cache, which the bundles' records describe. A cache an earlier
// import left one in verifies, with a warning saying what the file is,
// and keeps it.
func TestImportLeavesSBOM(t *testing.T) {
	ctx := context.Background()
	sk := fuzzSeedKey
	keys := signing.NewKeyring(sk.Public())
	cacheDir := filepath.Join(t.TempDir(), "cache")
	for i, name := range []string{"one", "two"} {
		dir := filepath.Join(t.TempDir(), name)
		w, err := bundle.NewDirWriter(dir, storepath.DefaultDir, bundle.WriterOptions{Key: &sk})
		if err != nil {
			t.Fatal(err)
		}
		p := mustPath(t, strings.Repeat(string(rune('a'+i)), 32)+"-"+name)
		if err := w.AddNAR(ctx, p, fileNAR(t, []byte(name)), bundle.PathMeta{Roles: role.Runtime}); err != nil {
			t.Fatal(err)
		}
		if err := w.AddFile(bundle.SBOMName, []byte(`{"bomFormat":"CycloneDX","metadata":"`+name+`"}`)); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(ctx, deltaHeader); err != nil {
			t.Fatal(err)
		}
		rep, err := bundle.Import(ctx, dir, cacheDir, bundle.ImportOptions{Keys: keys})
		if err != nil || rep.Added != 1 {
			t.Fatalf("import %s = %+v, %v; want 1 path added", name, rep, err)
		}
		if _, err := os.Stat(filepath.Join(cacheDir, bundle.SBOMName)); err == nil {
			t.Fatalf("import %s copied %s into the cache", name, bundle.SBOMName)
		}
	}
	rep, err := bundle.Verify(ctx, cacheDir, bundle.VerifyOptions{Keys: keys})
	if err != nil || len(rep.Warnings) != 0 {
		t.Fatalf("verify the cache = %+v, %v; want no warning", rep, err)
	}

	stray := filepath.Join(cacheDir, bundle.SBOMName)
	if err := os.WriteFile(stray, []byte(`{"bomFormat":"CycloneDX"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err = bundle.Verify(ctx, cacheDir, bundle.VerifyOptions{Keys: keys})
	if err != nil || !slices.ContainsFunc(rep.Warnings, func(w string) bool { return strings.HasPrefix(w, bundle.SBOMName+": ") }) {
		t.Errorf("verify a cache with a stray %s = %+v, %v; want a warning saying what it is", bundle.SBOMName, rep, err)
	}
	if _, err := os.Stat(stray); err != nil {
		t.Errorf("verify removed the stray SBOM: %v", err)
	}
}
