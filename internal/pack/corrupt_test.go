package pack_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/pack"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/role"
)

// TestCorruptStorePath packs a store path whose files changed after Nix
// registered them: pack must refuse it rather than ship bytes that do not
// match the store's NarHash, and publish nothing for it.
func TestCorruptStorePath(t *testing.T) {
	f := newFixture(t)
	libbase := f.outs["libbase"]
	lib := filepath.Join(libbase, "lib", "libbase.sh")
	if err := os.Chmod(filepath.Dir(lib), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lib, []byte("# tampered\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := f.n.StoreDir.Parse(libbase)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "bundle")
	_, err = f.packer.Pack(t.Context(), []plan.TargetSpec{{Kind: plan.TargetPath, Path: p}},
		pack.Options{Options: plan.Options{Mode: role.ModeRuntime}, Out: out, Key: &f.key})
	if !errors.Is(err, pack.ErrStoreCorrupt) {
		t.Fatalf("Pack of a tampered store path: %v, want ErrStoreCorrupt", err)
	}
	if _, err := os.Stat(filepath.Join(out, p.Hash+".narinfo")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a narinfo for the tampered path was published (stat: %v)", err)
	}
}
