package bundle_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// benchBundle writes a bundle of n paths of size bytes each, half random
// and half repetitive, as a directory and a tar.
func benchBundle(b *testing.B, n, size int) (dir, tarFile string, kr *signing.Keyring, narBytes int64) {
	sk, pk, _ := signing.Generate("bench-1")
	kr = signing.NewKeyring(pk)
	src := b.TempDir()
	dir = filepath.Join(b.TempDir(), "bundle")
	tarFile = filepath.Join(b.TempDir(), "bundle.tar")
	dw, err := bundle.NewDirWriter(dir, "/nix/store", bundle.WriterOptions{Key: &sk})
	if err != nil {
		b.Fatal(err)
	}
	tf, _ := os.Create(tarFile)
	tw, err := bundle.NewTarWriter(tf, "/nix/store", bundle.WriterOptions{Key: &sk, TempDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range n {
		data := make([]byte, size)
		for j := 0; j < size/2; j += 8 {
			v := rng.Uint64()
			for k := 0; k < 8 && j+k < size/2; k++ {
				data[j+k] = byte(v >> (8 * k))
			}
		}
		copy(data[size/2:], bytes.Repeat([]byte("repetitive text "), size/32+1))
		f := filepath.Join(src, fmt.Sprint(i))
		os.WriteFile(f, data, 0o644)
		p, err := storepath.Dir("/nix/store").Base(fmt.Sprintf("%032d-f%d", i, i))
		if err != nil {
			b.Fatal(err)
		}
		for _, w := range []*bundle.Writer{dw, tw} {
			var buf bytes.Buffer
			nar.Dump(&buf, f)
			narBytes += int64(buf.Len()) / 2
			if err := w.AddNAR(context.Background(), p, &buf, bundle.PathMeta{Roles: role.Runtime}); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, w := range []*bundle.Writer{dw, tw} {
		if err := w.Close(context.Background(), bundle.ManifestHeader{Tool: "bench", Mode: role.ModeRuntime}); err != nil {
			b.Fatal(err)
		}
	}
	tf.Close()
	return dir, tarFile, kr, narBytes
}

// BenchmarkVerify reports throughput in uncompressed NAR bytes.
func BenchmarkVerify(b *testing.B) {
	dir, tarFile, kr, narBytes := benchBundle(b, 16, 16<<20)
	for _, src := range []struct{ name, path string }{{"dir", dir}, {"tar", tarFile}} {
		b.Run(src.name, func(b *testing.B) {
			b.SetBytes(narBytes)
			for b.Loop() {
				if _, err := bundle.Verify(b.Context(), src.path, bundle.VerifyOptions{Keys: kr}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
