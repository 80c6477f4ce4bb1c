package inventory_test

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/inventory"
	"github.com/nix-airgap/nix-airgap/internal/signing"
)

// FuzzOpen opens what show and diff may be given: a manifest.json or
// cache inventory file, or a bundle tar (asTar), with sig as its
// signature and the fuzz key trusted. Open may not panic, and what it
// opens is shown and compared without panicking either. The committed
// seeds are newWorld's manifests, the inventory writeInventory makes of
// them, and tars holding them.
func FuzzOpen(f *testing.F) {
	sk := fuzzKey
	keys := signing.NewKeyring(sk.Public())
	f.Fuzz(func(t *testing.T, data, sig []byte, asTar bool) {
		dir := t.TempDir()
		name := filepath.Join(dir, bundle.ManifestName)
		if asTar {
			name = filepath.Join(dir, "b.tar")
			data = tarOf(t, data, sig)
		} else if err := os.WriteFile(name+".sig", sig, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, data, 0o644); err != nil {
			t.Fatal(err)
		}
		inv, err := inventory.Open(name, keys)
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if err := inv.WriteText(&buf); err != nil {
			t.Fatalf("WriteText of an opened inventory: %v", err)
		}
		d := inventory.Compare(inv, inv)
		if err := d.WriteText(&buf); err != nil {
			t.Fatalf("WriteText of a diff with itself: %v", err)
		}
		inventory.Compare(inventory.Merge("merged", inv, inv), inv)
	})
}

// fuzzKey signs the seeds; fixed so that they stay valid.
var fuzzKey = signing.SecretKey{Name: "fuzz-1", Key: ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))}

// tarOf is a bundle tar of a manifest and its signature, as pack writes
// them last.
func tarOf(t *testing.T, data, sig []byte) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range []struct {
		name string
		body []byte
	}{{bundle.ManifestName, data}, {bundle.ManifestName + ".sig", sig}} {
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(e.body)
	}
	tw.Close()
	return buf.Bytes()
}
