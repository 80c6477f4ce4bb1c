package bundle_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// TestVolumesRepair: import --repair of a volume set mends what the cache
// has damaged, a path rebuilt from a binary delta and one split across
// volumes among them, when every volume is given in the one run; given
// part of the set, it is refused as missing, naming the volumes not given,
// and the cache stays as it was. verify of the damaged cache names the set
// and its volume count.
func TestVolumesRepair(t *testing.T) {
	ctx := context.Background()
	f, vols := deltaVolumes(t, 40<<10)
	cacheDir := copyDir(t, f.cacheDir)
	if _, err := bundle.ImportVolumes(ctx, vols, cacheDir, bundle.ImportOptions{Keys: f.keys}); err != nil {
		t.Fatal(err)
	}
	lib := mustPath(t, "22222222222222222222222222222222-libfoo-1.0")
	damage := []storepath.Path{f.newPath, lib}
	d, err := cache.OpenDir(cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range damage {
		ni, err := d.NarInfo(ctx, p.Hash)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Join(cacheDir, ni.URL)
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		data[len(data)/2] ^= 0xff
		if err := os.WriteFile(name, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d.Close()

	rep, err := bundle.Verify(ctx, cacheDir, bundle.VerifyOptions{Keys: f.keys})
	if !errors.Is(err, bundle.ErrCorrupt) || rep == nil || rep.Repair == nil {
		t.Fatalf("verify of the damaged cache = %v, report %+v; want corrupt, with repair advice", err, rep)
	}
	if i := slices.IndexFunc(rep.Repair.Bundles, func(b bundle.RepairRef) bool { return b.Paths == 2 }); i < 0 || rep.Repair.Bundles[i].Volumes != len(vols) {
		t.Errorf("repair advice %+v; want the set, carrying 2 damaged paths, in %d volumes", rep.Repair.Bundles, len(vols))
	}
	// import refuses to run without a key: the advice must ask for one.
	if want := "nix-airgap import BUNDLE --cache " + cacheDir + " --public-key KEY --repair"; rep.Repair.Command != want {
		t.Errorf("repair command %q, want %q", rep.Repair.Command, want)
	}

	before := nixtest.TreeHash(t, cacheDir)
	_, err = bundle.ImportVolumes(ctx, vols[1:], cacheDir, bundle.ImportOptions{Keys: f.keys, Repair: true})
	if !errors.Is(err, bundle.ErrRepairVolumes) || !errors.Is(err, bundle.ErrMissing) {
		t.Errorf("repair with volume 1 missing = %v; want ErrRepairVolumes and ErrMissing", err)
	}
	if nixtest.TreeHash(t, cacheDir) != before {
		t.Error("the refused repair changed the cache")
	}

	irep, err := bundle.ImportVolumes(ctx, vols, cacheDir, bundle.ImportOptions{Keys: f.keys, Repair: true})
	if err != nil {
		t.Fatalf("repair with every volume: %v", err)
	}
	want := []string{f.newPath.String(), lib.String()}
	slices.Sort(want)
	if !slices.Equal(irep.Repaired, want) {
		t.Errorf("repaired %q, want %q", irep.Repaired, want)
	}
	checkRebuilt(t, f, cacheDir) // and the whole cache verifies, deep
}
