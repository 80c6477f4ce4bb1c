package pack

import (
	"context"
	"fmt"
	"io"
	"os"

	"golang.org/x/sync/errgroup"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/nardelta"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Binary deltas (docs/bundle-format.md §10): with --since, a path whose
// bases hold a similar path (bundle.Bases.Similar) is also told as a
// delta against that path's NAR, and the delta travels instead of the NAR
// when it is smaller. The base's NAR is read from the local store when
// the path is there and its NAR hashes to what the base records (dumped,
// as pack dumps any path), else from a base bundle directory's NAR file;
// with neither (a base given as a tar, a manifest or an inventory whose
// paths this store lacks) the path travels whole, and the summary says
// how many did for want of a base NAR.

// DeltaStats is what binary deltas saved in a pack.
type DeltaStats struct {
	// Paths travel as deltas; Saved is how many bytes smaller their
	// deltas are than their compressed NARs (bundle.DeltaResult's
	// FileSize: for a NAR of over a MiB, told from the base's).
	Paths int    `json:"paths"`
	Saved uint64 `json:"savedBytes"`
	// Tried counts the paths a delta was made for; NoBase those with a
	// similar base path whose NAR pack could not read.
	Tried  int `json:"tried"`
	NoBase int `json:"noBase"`
}

// deltaBase spools the NAR of the base path a delta of p is made
// against, rewritten for p and its references, into a temp file; nil
// when there is none to be had. The caller removes the file.
func (c *copier) deltaBase(p storepath.Path, refs []storepath.Path) (*bundle.DeltaBase, *os.File) {
	if c.bases == nil || c.noDeltas {
		return nil, nil
	}
	be, ok := c.bases.Similar(p)
	if !ok {
		return nil, nil
	}
	rws := c.bases.Rewrites(be.Path, p, refs)
	// The store first, when it has the path; the NAR's hash tells
	// whether it is the base's build of it.
	opens := []func() (io.ReadCloser, string, error){
		func() (io.ReadCloser, string, error) {
			if _, err := os.Lstat(be.Path.String()); err != nil {
				return nil, "", err
			}
			return nar.NewDumpReader(be.Path.String()), "the store", nil
		},
		func() (io.ReadCloser, string, error) { return c.bases.OpenNAR(be.Path) },
	}
	for _, open := range opens {
		r, from, err := open()
		if err != nil {
			continue
		}
		f, base, err := c.spoolBase(r, rws)
		r.Close()
		if err != nil {
			c.log.Warn("no binary delta", "path", p, "err", err)
			return nil, nil
		}
		if base.NarHash().Equal(be.NarHash) && base.NarSize() == be.NarSize {
			db := &bundle.DeltaBase{Path: be.Path, Base: base}
			if be.Delta == nil {
				db.FileSize, db.Compression = be.FileSize, be.Compression
			}
			return db, f
		}
		c.log.Info("the base's NAR there is another build of it", "path", p, "base", be.Path, "from", from)
		f.Close()
		os.Remove(f.Name())
	}
	c.log.Info("no binary delta: the base's NAR is neither in the store nor in a base bundle directory", "path", p, "base", be.Path)
	c.countDelta(func(s *DeltaStats) { s.NoBase++ })
	return nil, nil
}

// spoolBase spools a base NAR, rewritten, into a temp file.
func (c *copier) spoolBase(r io.Reader, rws []nardelta.Rewrite) (*os.File, *nardelta.Base, error) {
	f, err := os.CreateTemp(c.tempDir, "nix-airgap-base-")
	if err != nil {
		return nil, nil, err
	}
	base, err := nardelta.NewBase(f, r, rws)
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, nil, err
	}
	return f, base, nil
}

func (c *copier) countDelta(fn func(*DeltaStats)) {
	c.mu.Lock()
	fn(&c.deltas)
	c.mu.Unlock()
}

// EstimateDeltas is what `plan --since` reports: for each path of pl
// pack --since leaves in (not Known), valid in the store, with a similar base path whose
// NAR is at hand, it makes the binary delta and compresses the NAR as
// pack would (comp, zstd if ""), counting their bytes and writing
// neither. Saved is then what pack --since would save, exactly (pack's
// own count tells a NAR's compressed size from its base's when its delta
// won before the NAR was compressed whole).
func (p *Packer) EstimateDeltas(ctx context.Context, pl *plan.Plan, bases *bundle.Bases, comp, tempDir string) (DeltaStats, error) {
	if comp == "" {
		comp = compression.Zstd
	}
	c := &copier{p: p, pl: pl, bases: bases, tempDir: tempDir, log: p.log()}
	known := bases.Known(pl.References)
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(p.jobs())
	for i := range pl.Items {
		it := &pl.Items[i]
		if it.Source.Kind != plan.FromStore || it.Info == nil || known.Has(it.Path) {
			continue
		}
		g.Go(func() error {
			base, f := c.deltaBase(it.Path, it.Info.References)
			if base == nil {
				return nil
			}
			defer func() { f.Close(); os.Remove(f.Name()) }()
			file, delta := nar.CountingWriter{W: io.Discard}, nar.CountingWriter{W: io.Discard}
			cw, err := compression.NewWriter(&file, comp, compression.WriterOptions{SizeHint: int64(it.Info.NarSize)})
			if err != nil {
				return err
			}
			pr, pw := io.Pipe()
			encoded := make(chan error, 1)
			go func() {
				err := nardelta.Encode(&delta, pr, it.Info.NarHash, it.Info.NarSize, base.Base, nardelta.EncodeOptions{})
				pr.CloseWithError(err)
				encoded <- err
			}()
			dump := nar.NewDumpReader(it.Path.String())
			_, err = io.Copy(io.MultiWriter(cw, pw), cache.ContextReader(ctx, dump))
			dump.Close()
			pw.CloseWithError(err)
			encErr := <-encoded
			if cerr := cw.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("plan %s: %w", it.Path, err)
			}
			c.countDelta(func(s *DeltaStats) {
				s.Tried++
				if encErr == nil && delta.N < file.N {
					s.Paths++
					s.Saved += uint64(file.N - delta.N)
				}
			})
			return nil
		})
	}
	err := g.Wait()
	return c.deltas, err
}
