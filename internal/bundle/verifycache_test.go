package bundle_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// TestVerifyCacheNamesBadNarInfo imports a bundle, damages one narinfo and
// one NAR file of the cache, and checks that verify names each.
func TestVerifyCacheNamesBadNarInfo(t *testing.T) {
	sk, pk, _ := signing.Generate("test-1")
	bdir, _, paths := fakeDirBundle(t, &sk)
	keys := signing.NewKeyring(pk)
	cacheDir := filepath.Join(t.TempDir(), "cache")
	if _, err := bundle.Import(t.Context(), bdir, cacheDir, bundle.ImportOptions{Keys: keys}); err != nil {
		t.Fatal(err)
	}
	opts := bundle.VerifyOptions{Keys: keys}
	if _, err := bundle.Verify(t.Context(), cacheDir, opts); err != nil {
		t.Fatalf("Verify of the imported cache: %v", err)
	}
	var bad, good string
	for p := range paths {
		if p.Name == "c" {
			bad = p.Hash + ".narinfo"
		} else {
			good = p.Hash + ".narinfo"
		}
	}
	if err := os.WriteFile(filepath.Join(cacheDir, bad), []byte("StorePath: nonsense\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(cacheDir, good))
	if err != nil {
		t.Fatal(err)
	}
	ni := parseNarInfo(t, data)
	if err := os.WriteFile(filepath.Join(cacheDir, ni.URL), []byte("not zstd"), 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := bundle.Verify(t.Context(), cacheDir, opts)
	if !errors.Is(err, bundle.ErrCorrupt) {
		t.Fatalf("Verify of a damaged cache = %v, want ErrCorrupt", err)
	}
	files := map[string]bool{}
	for _, p := range rep.Problems {
		files[p.File] = true
	}
	if !files[bad] || !files[ni.URL] {
		t.Errorf("problems %+v, want %s and %s named", rep.Problems, bad, ni.URL)
	}
}

func parseNarInfo(t *testing.T, data []byte) *narinfo.NarInfo {
	t.Helper()
	ni, err := narinfo.Parse(bytes.NewReader(data), storepath.DefaultDir)
	if err != nil {
		t.Fatal(err)
	}
	return ni
}

// TestVerifyCacheNamesEverySigner imports bundles packed before and after
// a rotation of the packing key: verify, given both keys, names both, once.
func TestVerifyCacheNamesEverySigner(t *testing.T) {
	cacheDir := filepath.Join(t.TempDir(), "cache")
	sk1, pk1, _ := signing.Generate("pack-1")
	sk2, pk2, _ := signing.Generate("pack-2")
	for i, sk := range []signing.SecretKey{sk1, sk2, sk1} {
		dir, paths := fakePaths(t)
		bdir := filepath.Join(t.TempDir(), "b")
		bw, err := bundle.NewDirWriter(bdir, dir, bundle.WriterOptions{Key: &sk})
		if err != nil {
			t.Fatal(err)
		}
		// Bundles of their own, each with a record of its own.
		writeFakeWith(t, bw, paths, bundle.ManifestHeader{Tool: fmt.Sprintf("test %d", i), Mode: role.ModeSources})
		if _, err := bundle.Import(t.Context(), bdir, cacheDir, bundle.ImportOptions{Keys: signing.NewKeyring(sk.Public())}); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := bundle.Verify(t.Context(), cacheDir, bundle.VerifyOptions{Keys: signing.NewKeyring(pk1, pk2)})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Signer != "pack-1, pack-2" && rep.Signer != "pack-2, pack-1" {
		t.Errorf("Verify of a cache two keys signed into: signer %q, want both named once", rep.Signer)
	}
}
