package bundle_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// TestVerifyDeep gives a path a NAR file that is valid zstd but not its
// NAR, with a manifest and narinfo that the key signed for that file: only
// a deep verify, which decompresses, can tell.
func TestVerifyDeep(t *testing.T) {
	sk, pk, _ := signing.Generate("test-1")
	bdir, dir, _ := fakeDirBundle(t, &sk)

	data, err := os.ReadFile(filepath.Join(bdir, bundle.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	m, err := bundle.ParseManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	var e *bundle.PathEntry
	for i := range m.Paths {
		if strings.HasSuffix(m.Paths[i].Path.Name, "c") {
			e = &m.Paths[i]
		}
	}
	if err := os.Remove(filepath.Join(bdir, e.URL)); err != nil {
		t.Fatal(err)
	}
	enc, _ := zstd.NewWriter(nil)
	file := enc.EncodeAll([]byte("not the NAR of c"), nil)
	sum := sha256.Sum256(file)
	e.FileHash, _ = storepath.NewHash(storepath.SHA256, sum[:])
	e.FileSize = uint64(len(file))
	e.URL = "nar/" + e.FileHash.Nix32() + ".nar.zst"
	if err := os.WriteFile(filepath.Join(bdir, e.URL), file, 0o644); err != nil {
		t.Fatal(err)
	}
	niFile := filepath.Join(bdir, e.Path.Hash+".narinfo")
	text, err := os.ReadFile(niFile)
	if err != nil {
		t.Fatal(err)
	}
	ni, err := narinfo.Parse(bytes.NewReader(text), dir)
	if err != nil {
		t.Fatal(err)
	}
	ni.URL, ni.FileHash, ni.FileSize = e.URL, e.FileHash, e.FileSize
	if text, err = ni.MarshalText(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(niFile, text, 0o644); err != nil {
		t.Fatal(err)
	}
	if data, err = m.Marshal(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bdir, bundle.ManifestName), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bdir, bundle.SigName), bundle.Sign(data, sk), 0o644); err != nil {
		t.Fatal(err)
	}

	opts := bundle.VerifyOptions{Keys: signing.NewKeyring(pk)}
	if _, err := bundle.Verify(t.Context(), bdir, opts); err != nil {
		t.Fatalf("Verify without Deep = %v, want nil: every file matches what the key signed", err)
	}
	opts.Deep = true
	rep, err := bundle.Verify(t.Context(), bdir, opts)
	if !errors.Is(err, bundle.ErrCorrupt) {
		t.Fatalf("Verify with Deep = %v, want ErrCorrupt", err)
	}
	if len(rep.Problems) != 1 || rep.Problems[0].File != e.URL || !strings.Contains(rep.Problems[0].Problem, "NAR") {
		t.Errorf("problems = %+v, want one naming %s and its NAR", rep.Problems, e.URL)
	}
}
