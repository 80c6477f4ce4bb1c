package bundle_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storage/s3test"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// pieces hears, for each phase, the bytes of each Step that counts some.
type pieces struct {
	mu    sync.Mutex
	phase string
	total map[string]int64
	steps map[string][]int64
}

func (p *pieces) Phase(name string, _ int, bytes int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.total == nil {
		p.total, p.steps = map[string]int64{}, map[string][]int64{}
	}
	p.phase, p.total[name], p.steps[name] = name, bytes, nil
}

func (p *pieces) Step(_, _ string, n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n > 0 {
		p.steps[p.phase] = append(p.steps[p.phase], n)
	}
}

// within reports whether phase counted a file of size bytes in pieces,
// each smaller than half of it, as it streamed (a rename counts a file
// whole), and how many bytes it counted in all.
func (p *pieces) within(phase string, size int64) (bool, int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var sum, small int64
	for _, n := range p.steps[phase] {
		sum += n
		if n < size/2 {
			small += n
		}
	}
	return small >= size, sum
}

// bigTar is a bundle of one path, a file of size random bytes, its NAR
// file not compressed.
func bigTar(t *testing.T, size int) string {
	var out bytes.Buffer
	sk := fuzzSeedKey
	w, err := bundle.NewTarWriter(&out, storepath.DefaultDir, bundle.WriterOptions{Key: &sk, Compression: "none", TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{7}).Read(data)
	p, err := storepath.DefaultDir.Base("00000000000000000000000000000000-big")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddNAR(context.Background(), p, fileNAR(t, data), bundle.PathMeta{Roles: role.Runtime}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(context.Background(), bundle.ManifestHeader{Tool: "test", Created: time.Unix(1700000000, 0).UTC(), Mode: role.ModeRuntime}); err != nil {
		t.Fatal(err)
	}
	tarFile := filepath.Join(t.TempDir(), "b.tar")
	if err := os.WriteFile(tarFile, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return tarFile
}

// TestProgressWithinFile: a NAR file several copy buffers (1 MiB) large
// counts as it streams, not whole once it is in, in every phase that
// moves or reads it: import's into a directory (where the bytes flow as
// it is verified and staged; the import phase renames) and into a real
// SeaweedFS (the import phase uploads), verify of the cache, and
// import --repair of a damaged copy, which reads the cache's file and
// uploads the bundle's. Each phase counts the bytes it announced.
func TestProgressWithinFile(t *testing.T) {
	const size = 6 << 20
	tarFile := bigTar(t, size)
	keys := signing.NewKeyring(fuzzSeedKey.Public())
	for _, tc := range []struct {
		name  string
		cache func(t *testing.T) string
		moves string // the phase that streams the NAR file into the cache
	}{
		{"dir", func(t *testing.T) string { return filepath.Join(t.TempDir(), "cache") }, bundle.PhaseVerify},
		{"s3", func(t *testing.T) string { return s3test.Start(t).Bucket(t) }, bundle.PhaseImport},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := tc.cache(t)
			var imp pieces
			if _, err := bundle.Import(t.Context(), tarFile, url, bundle.ImportOptions{Keys: keys, Progress: &imp}); err != nil {
				t.Fatal(err)
			}
			for _, phase := range []string{bundle.PhaseVerify, bundle.PhaseImport} {
				ok, sum := imp.within(phase, size)
				if phase == tc.moves && !ok || sum != imp.total[phase] {
					t.Errorf("import's %s phase counted %d bytes of %d, in %d steps (in pieces: %v); want all, in pieces in the %s phase",
						phase, sum, imp.total[phase], len(imp.steps[phase]), ok, tc.moves)
				}
			}

			var ver pieces
			if _, err := bundle.Verify(t.Context(), url, bundle.VerifyOptions{Keys: keys, Progress: &ver}); err != nil {
				t.Fatal(err)
			}
			if ok, sum := ver.within(bundle.PhaseVerify, size); !ok || sum != ver.total[bundle.PhaseVerify] {
				t.Errorf("verify of the cache counted %d bytes of %d in %d steps; want all, in pieces", sum, ver.total[bundle.PhaseVerify], len(ver.steps[bundle.PhaseVerify]))
			}

			damageNAR(t, url)
			var rep pieces
			r, err := bundle.Import(t.Context(), tarFile, url, bundle.ImportOptions{Keys: keys, Progress: &rep, Repair: true})
			if err != nil {
				t.Fatal(err)
			}
			// The damaged file is read, then the good one moved in:
			// uploaded, or renamed.
			if ok, sum := rep.within(bundle.PhaseRepair, size); len(r.Repaired) != 1 || !ok || sum < 2*size {
				t.Errorf("import --repair repaired %v, its repair phase counted %d bytes in %d steps; want the one path, at least %d bytes, in pieces",
					r.Repaired, sum, len(rep.steps[bundle.PhaseRepair]), 2*size)
			}
		})
	}
}

// damageNAR flips a byte in the middle of the one NAR file of the cache
// at url, keeping its size.
func damageNAR(t *testing.T, url string) {
	t.Helper()
	b, err := storage.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for info, err := range b.List(t.Context(), cache.NarDir) {
		if err != nil {
			t.Fatal(err)
		}
		data, _, err := storage.ReadFile(t.Context(), b, info.Name, info.Size)
		if err != nil {
			t.Fatal(err)
		}
		data[len(data)/2] ^= 1
		if err := b.Put(t.Context(), info.Name, bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatal("no NAR file in the cache")
}

// TestProgressVolumes: verify of a volume set counts the bytes of its
// files as they are read, a file split across volumes too, all that it
// announced: it once announced them and counted none.
func TestProgressVolumes(t *testing.T) {
	const size = 4 << 20
	vols := volumeSet(t, fuzzSeedKey, 3, size, "")
	var p pieces
	if _, err := bundle.VerifyVolumes(t.Context(), vols, bundle.VerifyOptions{Keys: signing.NewKeyring(fuzzSeedKey.Public()), Progress: &p}); err != nil {
		t.Fatal(err)
	}
	if ok, sum := p.within(bundle.PhaseVerify, size); !ok || sum != p.total[bundle.PhaseVerify] {
		t.Errorf("verify of %d volumes counted %d bytes of %d in %d steps; want all, in pieces", len(vols), sum, p.total[bundle.PhaseVerify], len(p.steps[bundle.PhaseVerify]))
	}
}
