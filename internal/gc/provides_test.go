package gc_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/gc"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// TestKeepDeltaProvidingNothing: gc --keep-bundles 1 keeps only what a
// sources delta needs when its manifest says its base provides it
// nothing ("provides": []); one whose manifest predates provides keeps
// everything imported before it, and the warning names it by its id.
func TestKeepDeltaProvidingNothing(t *testing.T) {
	ctx := t.Context()
	sk, pk, _ := signing.Generate("gc-provides-1")
	keys := signing.NewKeyring(pk)
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	base := modeBundle(t, sk, "base", t0, role.ModeSources, nil)
	data, err := os.ReadFile(filepath.Join(base, bundle.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		provides []storepath.Path
		removed  int
	}{
		{"says it provides nothing", []storepath.Path{}, 2},
		{"predates provides", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			delta := modeBundle(t, sk, "delta", t0.Add(time.Hour), role.ModeSources,
				[]bundle.Base{{ID: bundle.ID(data), Created: t0, Paths: 2, Provides: tc.provides}})
			deltaData, err := os.ReadFile(filepath.Join(delta, bundle.ManifestName))
			if err != nil {
				t.Fatal(err)
			}
			cacheDir := filepath.Join(t.TempDir(), "cache")
			for _, b := range []string{base, delta} {
				if _, err := bundle.Import(ctx, b, cacheDir, bundle.ImportOptions{Keys: keys}); err != nil {
					t.Fatal(err)
				}
			}
			rep, err := gc.Collect(ctx, cacheDir, gc.Options{Roots: gc.Roots{KeepBundles: 1}, Grace: -1, DryRun: true})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Removed.Paths != tc.removed {
				t.Errorf("gc would remove %d paths, want %d (the base's)", rep.Removed.Paths, tc.removed)
			}
			warned := strings.Contains(strings.Join(rep.Warnings, "\n"), "bundle "+bundle.ID(deltaData).String()+" is a delta whose manifest does not say")
			if warned != (tc.provides == nil) {
				t.Errorf("warnings %q; want one naming the delta %s only when its manifest predates provides", rep.Warnings, bundle.ID(deltaData))
			}
		})
	}
}
