package bundle_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// fuzzSeedKey is fixed so that the seed tars are the same on every run.
var fuzzSeedKey = signing.SecretKey{Name: "fuzz-1", Key: ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))}

// tinyTar writes a signed tar bundle of n tiny store paths, a flat one
// among them, compressed with comp.
func tinyTar(tb testing.TB, n int, comp string) []byte {
	tb.Helper()
	var out bytes.Buffer
	sk := fuzzSeedKey
	w, err := bundle.NewTarWriter(&out, storepath.DefaultDir, bundle.WriterOptions{Key: &sk, Compression: comp, TempDir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	for i := range n {
		p, err := storepath.DefaultDir.Base(fmt.Sprintf("%032d-p%d", i, i))
		if err != nil {
			tb.Fatal(err)
		}
		buf := fileNAR(tb, []byte(fmt.Sprintf("content %d\n", i)))
		meta := bundle.PathMeta{Roles: role.Runtime, Flat: i == 0}
		if i == 0 {
			meta.Roles = role.Source
		}
		if err := w.AddNAR(context.Background(), p, buf, meta); err != nil {
			tb.Fatal(err)
		}
	}
	w.AddFile(bundle.RegistryName, []byte(`{"version":2,"flakes":[]}`+"\n"))
	if err := w.Close(context.Background(), bundle.ManifestHeader{Tool: "fuzz", Created: time.Unix(1700000000, 0).UTC(), Mode: role.ModeRuntime}); err != nil {
		tb.Fatal(err)
	}
	return out.Bytes()
}

// FuzzVerifyTar feeds tar streams to Verify and Import as "-" (stdin).
// Neither may panic; Import may write nowhere but its cache directory, and
// whatever it publishes must be complete.
func FuzzVerifyTar(f *testing.F) {
	f.Add(tinyTar(f, 2, "none"))
	whole := tinyTar(f, 1, "zstd")
	f.Add(whole)
	// Without the end-of-archive marker, and cut before the signature.
	f.Add(whole[:len(whole)-1024])
	f.Add(whole[:len(whole)-2048])
	f.Add([]byte{})
	_, pk, err := signing.Generate("other-1")
	if err != nil {
		f.Fatal(err)
	}
	kr := signing.NewKeyring(fuzzSeedKey.Public(), pk)
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx := context.Background()
		rep, verr := bundle.Verify(ctx, "-", bundle.VerifyOptions{Keys: kr, AllowUnsigned: true, Jobs: 1, Stdin: bytes.NewReader(data)})
		if verr == nil && (rep == nil || !rep.OK()) {
			t.Fatalf("Verify: nil error but report %+v", rep)
		}
		root := t.TempDir()
		cacheDir := filepath.Join(root, "cache")
		_, ierr := bundle.Import(ctx, "-", cacheDir, bundle.ImportOptions{Keys: kr, AllowUnsigned: true, Jobs: 1, Stdin: bytes.NewReader(data)})
		if verr != nil && ierr == nil {
			t.Fatalf("Verify refused (%v) what Import accepted", verr)
		}
		// Nothing outside the cache directory.
		ents, _ := os.ReadDir(root)
		for _, e := range ents {
			if e.Name() != "cache" {
				t.Fatalf("Import wrote %s outside the cache", e.Name())
			}
		}
		n := checkCache(t, cacheDir)
		if ierr != nil && n > 0 {
			t.Fatalf("refused Import (%v) published %d narinfos", ierr, n)
		}
		if ierr == nil {
			stale, _ := filepath.Glob(filepath.Join(cacheDir, ".staging-*"))
			if len(stale) > 0 {
				t.Fatalf("staging left: %q", stale)
			}
		}
		if err := filepath.WalkDir(cacheDir, func(p string, d fs.DirEntry, err error) error {
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			if d != nil && d.Type()&fs.ModeSymlink != 0 {
				return fmt.Errorf("symlink %s in the cache", p)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestFuzzSeedsVerify keeps FuzzVerifyTar's seeds valid bundles, so that
// the fuzzer starts from inputs that reach Import's publishing.
func TestFuzzSeedsVerify(t *testing.T) {
	kr := signing.NewKeyring(fuzzSeedKey.Public())
	for _, comp := range []string{"none", "zstd"} {
		data := tinyTar(t, 2, comp)
		if _, err := bundle.Verify(t.Context(), "-", bundle.VerifyOptions{Keys: kr, Stdin: bytes.NewReader(data)}); err != nil {
			t.Errorf("%s seed: %v", comp, err)
		}
		cacheDir := filepath.Join(t.TempDir(), "cache")
		if _, err := bundle.Import(t.Context(), "-", cacheDir, bundle.ImportOptions{Keys: kr, Stdin: bytes.NewReader(data)}); err != nil {
			t.Errorf("%s seed import: %v", comp, err)
		}
		if n := checkCache(t, cacheDir); n != 2 {
			t.Errorf("%s seed import: %d narinfos, want 2", comp, n)
		}
	}
}

// tinyVolumes writes a set of volumes of the least size, signed with
// fuzzSeedKey: a small path and one split over the volumes.
func tinyVolumes(tb testing.TB) [][]byte {
	tb.Helper()
	sk := fuzzSeedKey
	w, err := bundle.NewVolumeWriter(filepath.Join(tb.TempDir(), "set.tar"), bundle.MinVolumeSize, storepath.DefaultDir, bundle.WriterOptions{Key: &sk, Compression: "none"})
	if err != nil {
		tb.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	big := make([]byte, bundle.MinVolumeSize/2)
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	names := []string{"00000000000000000000000000000000-small", "11111111111111111111111111111111-big"}
	for i, content := range [][]byte{[]byte("small\n"), big} {
		p, err := storepath.DefaultDir.Base(names[i])
		if err != nil {
			tb.Fatal(err)
		}
		if err := w.AddNAR(context.Background(), p, fileNAR(tb, content), bundle.PathMeta{Roles: role.Runtime}); err != nil {
			tb.Fatal(err)
		}
	}
	if err := w.Close(context.Background(), bundle.ManifestHeader{Tool: "fuzz", Created: time.Unix(1700000000, 0).UTC(), Mode: role.ModeRuntime}); err != nil {
		tb.Fatal(err)
	}
	var vols [][]byte
	for _, v := range w.Volumes() {
		data, err := os.ReadFile(v)
		if err != nil {
			tb.Fatal(err)
		}
		vols = append(vols, data)
	}
	return vols
}

// FuzzVerifyVolumes gives verify and import two files named as volumes of
// one set: their tar headers, manifest and signature are read by
// scanning the files (seeking over data), not as a stream, unlike
// FuzzVerifyTar's. Neither may panic; Import may write nowhere but its
// cache directory, and whatever it publishes must be complete. The
// generated seeds are a whole set, one volume alone and each cut short;
// the committed ones are small tars of a volume's manifest and signature
// without the NARs.
func FuzzVerifyVolumes(f *testing.F) {
	vols := tinyVolumes(f)
	if len(vols) < 2 {
		f.Fatalf("%d volumes, want a path split over two", len(vols))
	}
	f.Add(vols[0], vols[1])
	f.Add(vols[1], vols[0])
	f.Add(vols[0], vols[0][:len(vols[0])/2])
	f.Add(vols[1][:len(vols[1])-1024], []byte{})
	kr := signing.NewKeyring(fuzzSeedKey.Public())
	f.Fuzz(func(t *testing.T, a, b []byte) {
		ctx := context.Background()
		root := t.TempDir()
		var names []string
		for i, data := range [][]byte{a, b} {
			name := filepath.Join(root, "in", []string{"set.001.tar", "set.002.tar"}[i])
			if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(name, data, 0o644); err != nil {
				t.Fatal(err)
			}
			names = append(names, name)
		}
		opts := bundle.VerifyOptions{Keys: kr, Jobs: 1, Deep: true}
		rep, verr := bundle.VerifyVolumes(ctx, names, opts)
		if verr == nil && (rep == nil || !rep.OK()) {
			t.Fatalf("VerifyVolumes: nil error but report %+v", rep)
		}
		if rep, err := bundle.Verify(ctx, names[0], opts); err == nil && (rep == nil || !rep.OK()) {
			t.Fatalf("Verify of one volume: nil error but report %+v", rep)
		}
		bundle.ReadTarManifest(names[1])
		cacheDir := filepath.Join(root, "cache")
		bundle.ImportVolumes(ctx, names, cacheDir, bundle.ImportOptions{Keys: kr, Jobs: 1})
		ents, _ := os.ReadDir(root)
		for _, e := range ents {
			if e.Name() != "cache" && e.Name() != "in" {
				t.Fatalf("ImportVolumes wrote %s outside the cache", e.Name())
			}
		}
		checkCache(t, cacheDir)
		for i, data := range [][]byte{a, b} {
			if got, err := os.ReadFile(names[i]); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("volume %s changed (%v)", names[i], err)
			}
		}
	})
}
