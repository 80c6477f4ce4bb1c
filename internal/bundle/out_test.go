package bundle_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
)

// TestVolumeFiles lists the files named as volumes of NAME.tar: three
// digits or more, of that NAME only.
func TestVolumeFiles(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"set.001.tar", "set.0002.tar", "set.01.tar", "set.abc.tar", "123.tar", "setx.001.tar", "set.001.tar.tmp", "set.tar", "other.003.tar"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := bundle.VolumeFiles(filepath.Join(dir, "set.tar"))
	want := []string{filepath.Join(dir, "set.0002.tar"), filepath.Join(dir, "set.001.tar")}
	if err != nil || !cmp.Equal(got, want) {
		t.Errorf("VolumeFiles = %q, %v; want %q", got, err, want)
	}
	if got, err := bundle.VolumeFiles(filepath.Join(dir, "gone", "set.tar")); err != nil || got != nil {
		t.Errorf("VolumeFiles in a missing directory = %q, %v; want none", got, err)
	}
}
