package pack

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/nardelta"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Binary deltas (docs/bundle-format.md §10): with --since, a path whose
// bases hold a similar path (bundle.Bases.Similar) is also told as a
// delta against that path's NAR, and the delta travels instead of the NAR
// when it is smaller. The base's NAR is read from the local store when
// the path is valid there with the NarHash the base records (dumped, as
// pack dumps any path), else from a base bundle directory's NAR file;
// with neither (a base given as a tar, a manifest or an inventory whose
// paths this store lacks) the path travels whole, and the summary says
// how many did for want of a base NAR.

// DeltaStats is what binary deltas saved in a pack.
type DeltaStats struct {
	// Paths travel as deltas; Saved is how many bytes smaller their
	// deltas are than their compressed NARs.
	Paths int
	Saved uint64
	// Tried counts the paths a delta was made for; NoBase those with a
	// similar base path whose NAR pack could not read.
	Tried, NoBase int
}

// deltaBase spools the NAR of the base path a delta of p is made
// against, rewritten for p and its references, into a temp file; nil
// when there is none to be had. The caller removes the file.
func (c *copier) deltaBase(ctx context.Context, p storepath.Path, refs []storepath.Path) (*bundle.DeltaBase, *os.File) {
	if c.bases == nil || c.noDeltas {
		return nil, nil
	}
	be, ok := c.bases.Similar(p)
	if !ok {
		return nil, nil
	}
	rws := c.bases.Rewrites(be.Path, p, refs)
	open := func() (io.ReadCloser, string, error) {
		if infos, err := c.p.nix().PathInfo(ctx, be.Path); err == nil && len(infos) == 1 && infos[0].NarHash.Equal(be.NarHash) {
			return nar.NewDumpReader(be.Path.String()), "store", nil
		}
		return c.bases.OpenNAR(be.Path)
	}
	r, from, err := open()
	if err != nil {
		c.log.Info("no binary delta: the base's NAR is neither in the store nor in a base bundle directory", "path", p, "base", be.Path)
		c.countDelta(func(s *DeltaStats) { s.NoBase++ })
		return nil, nil
	}
	defer r.Close()
	f, err := os.CreateTemp(c.tempDir, "nix-airgap-base-")
	if err != nil {
		c.log.Warn("no binary delta", "path", p, "err", err)
		return nil, nil
	}
	base, err := nardelta.NewBase(f, r, rws)
	if err == nil && (!base.NarHash().Equal(be.NarHash) || base.NarSize() != be.NarSize) {
		err = fmt.Errorf("its NAR from the %s hashes to %s, the base records %s", from, base.NarHash(), be.NarHash)
	}
	if err != nil {
		c.log.Warn("no binary delta: the base's NAR is not the one the base records", "path", p, "base", be.Path, "err", err)
		c.countDelta(func(s *DeltaStats) { s.NoBase++ })
		f.Close()
		os.Remove(f.Name())
		return nil, nil
	}
	return &bundle.DeltaBase{Path: be.Path, Base: base}, f
}

func (c *copier) countDelta(fn func(*DeltaStats)) {
	c.mu.Lock()
	fn(&c.deltas)
	c.mu.Unlock()
}
