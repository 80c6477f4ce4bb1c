package pack_test

import (
	"path/filepath"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/pack"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
)

// TestVolumesNothingNew: a week that changed nothing, packed --since
// last week's bundle with --volume-size as every week, is one volume
// that carries the manifest, and verifies alone (it made no volume, and
// pack panicked, once).
func TestVolumesNothingNew(t *testing.T) {
	f := newFixture(t)
	opts := plan.Options{Mode: role.ModeRuntime}
	base := filepath.Join(t.TempDir(), "week1")
	f.pack(t, f.targets(t), pack.Options{Options: opts, Out: base})
	res := f.pack(t, f.targets(t), pack.Options{Options: opts, Out: filepath.Join(t.TempDir(), "week2.tar"), Since: []string{base}, VolumeSize: 32 << 10})
	if len(res.Manifest.Paths) != 0 || len(res.Volumes) != 1 {
		t.Fatalf("packed %d paths in volumes %q; want none, in one volume", len(res.Manifest.Paths), res.Volumes)
	}
	if _, err := bundle.Verify(t.Context(), res.Volumes[0], bundle.VerifyOptions{Keys: signing.NewKeyring(f.key.Public())}); err != nil {
		t.Errorf("verify the one volume: %v", err)
	}
}
