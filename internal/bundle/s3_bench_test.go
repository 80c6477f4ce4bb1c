package bundle_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storage/s3test"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
	"golang.org/x/sync/errgroup"
)

// BenchmarkImportS3 imports a bundle directory into a fresh bucket of
// SeaweedFS on loopback (s3), into a fresh directory cache (dir), and, as
// the floor, PUTs the bundle's files into a fresh bucket 16 at a time
// with the same client (put): 5,000 paths of 4 KiB (small) and 4 of
// 256 MiB (large), incompressible and stored uncompressed. It reports
// paths/s and MiB/s of NAR files. Run it with
//
//	go test ./internal/bundle -run '^$' -bench ImportS3 -benchtime 1x -count 3
//
// IMPORTBENCH_KEEP=DIR keeps the bundles in DIR (their keys as
// DIR/small.pub, DIR/large.pub), to import them with the command and
// measure its peak RSS.
func BenchmarkImportS3(b *testing.B) {
	srv := s3test.Start(b)
	for _, shape := range []struct {
		name    string
		n, size int
	}{{"small", 5000, 4 << 10}, {"large", 4, 256 << 20}} {
		dir, kr := importBenchBundle(b, shape.name, shape.n, shape.size)
		files, bytes := bundleFiles(b, dir)
		for _, target := range []string{"put", "s3", "dir"} {
			b.Run(shape.name+"/"+target, func(b *testing.B) {
				var secs, publish float64
				for b.Loop() {
					b.StopTimer()
					loc := filepath.Join(b.TempDir(), "cache")
					if target != "dir" {
						loc = srv.Bucket(b)
					}
					b.StartTimer()
					start := time.Now()
					phases := &phaseClock{}
					if target == "put" {
						putAll(b, dir, files, loc)
					} else if _, err := bundle.Import(b.Context(), dir, loc, bundle.ImportOptions{Keys: kr, Progress: phases}); err != nil {
						b.Fatal(err)
					}
					secs += time.Since(start).Seconds()
					if !phases.publish.IsZero() {
						publish += time.Since(phases.publish).Seconds()
					}
				}
				if target != "put" {
					b.ReportMetric(publish/float64(b.N), "publish-s")
				}
				b.ReportMetric(float64(shape.n*b.N)/secs, "paths/s")
				b.ReportMetric(float64(bytes*int64(b.N))/secs/(1<<20), "MiB/s")
			})
		}
	}
}

// phaseClock notes when import's publishing began.
type phaseClock struct{ publish time.Time }

func (p *phaseClock) Phase(name string, _ int, _ int64) {
	if name == bundle.PhaseImport {
		p.publish = time.Now()
	}
}

func (p *phaseClock) Step(string, string, int64) {}

// importBenchBundle writes a signed bundle directory of n paths, each one
// file of size random bytes, stored uncompressed.
func importBenchBundle(b *testing.B, name string, n, size int) (string, *signing.Keyring) {
	sk, pk, _ := signing.Generate("bench-1")
	dir := filepath.Join(b.TempDir(), name)
	if keep := os.Getenv("IMPORTBENCH_KEEP"); keep != "" {
		dir = filepath.Join(keep, name)
		os.RemoveAll(dir)
		os.WriteFile(dir+".pub", []byte(pk.String()+"\n"), 0o644)
	}
	w, err := bundle.NewDirWriter(dir, "/nix/store", bundle.WriterOptions{Key: &sk, Compression: "none"})
	if err != nil {
		b.Fatal(err)
	}
	src := b.TempDir()
	rng := rand.NewChaCha8([32]byte{byte(size), byte(n)})
	for i := range n {
		f := filepath.Join(src, "f")
		data := make([]byte, min(size, 16<<20))
		out, err := os.Create(f)
		if err != nil {
			b.Fatal(err)
		}
		for left := size; left > 0; left -= len(data) {
			rng.Read(data)
			out.Write(data[:min(left, len(data))])
		}
		out.Close()
		p, err := storepath.Dir("/nix/store").Base(fmt.Sprintf("%032d-%s-%d", i, name, i))
		if err != nil {
			b.Fatal(err)
		}
		r := nar.NewDumpReader(f)
		err = w.AddNAR(b.Context(), p, r, bundle.PathMeta{Roles: role.Runtime})
		r.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(b.Context(), bundle.ManifestHeader{Tool: "bench", Mode: role.ModeRuntime}); err != nil {
		b.Fatal(err)
	}
	return dir, signing.NewKeyring(pk)
}

// bundleFiles lists the bundle's files and the size of its NAR files.
func bundleFiles(b *testing.B, dir string) ([]string, int64) {
	var files []string
	var nars int64
	err := filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if strings.HasPrefix(filepath.Base(rel), ".") {
			return nil // a lock, say: no part of the bundle
		}
		files = append(files, filepath.ToSlash(rel))
		if strings.HasPrefix(rel, "nar/") {
			info, err := e.Info()
			if err != nil {
				return err
			}
			nars += info.Size()
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return files, nars
}

// putAll uploads the files under dir to the bucket at url, 16 at a time.
func putAll(b *testing.B, dir string, files []string, url string) {
	dst, err := storage.Open(b.Context(), url)
	if err != nil {
		b.Fatal(err)
	}
	defer dst.Close()
	g, ctx := errgroup.WithContext(b.Context())
	g.SetLimit(16)
	var next atomic.Int64
	for range files {
		g.Go(func() error {
			name := files[next.Add(1)-1]
			return storage.PutFile(ctx, dst, filepath.Join(dir, filepath.FromSlash(name)), name, nil)
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
}
