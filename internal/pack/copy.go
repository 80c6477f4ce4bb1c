package pack

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/derivation"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// copier writes a plan's items into a bundle writer, in parallel.
type copier struct {
	p        *Packer
	w        *bundle.Writer
	pl       *plan.Plan
	inBase   func(storepath.Path) bool
	builtSet map[storepath.Path]bool
	// bases are what --since named, for binary deltas unless noDeltas;
	// base NARs are spooled in tempDir.
	bases    *bundle.Bases
	noDeltas bool
	tempDir  string
	prog     Progress
	log      *slog.Logger
	// oneCore are the local items compressed on one core (oneCoreItems).
	oneCore map[*plan.Item]bool

	mu         sync.Mutex
	extraBuilt []storepath.Path // realised after an upstream copy failed
	buildMu    sync.Mutex       // one fallback nix-store --realise at a time
	deltas     DeltaStats
}

// Source names in PathResult.Source and Progress.Step.
const (
	SourceStore  = "store"
	SourceBuild  = "build"
	SourceReused = "reused"
)

// copyAll copies items: local paths Jobs at a time, upstream files
// Downloads at a time. The first error cancels the rest.
func (c *copier) copyAll(ctx context.Context, items []*plan.Item) ([]PathResult, error) {
	var total int64
	for _, it := range items {
		if it.Source.Kind == plan.FromUpstream {
			total += int64(it.FileSize)
		} else {
			total += int64(it.NarSize)
		}
	}
	c.prog.Phase(PhaseCopy, len(items), total)

	var li, ri []int
	for i, it := range items {
		if it.Source.Kind == plan.FromUpstream {
			ri = append(ri, i)
		} else {
			li = append(li, i)
		}
	}
	// Largest first, so that no big NAR is left compressing alone at
	// the end while the other cores idle.
	slices.SortStableFunc(li, func(a, b int) int { return cmp.Compare(items[b].NarSize, items[a].NarSize) })
	c.oneCore = c.oneCoreItems(items, li)

	// Two pools: dumping is CPU-bound, downloads wait on the network.
	results := make([]PathResult, len(items))
	g, ctx := errgroup.WithContext(ctx)
	pool := func(idx []int, limit int) {
		g.Go(func() error {
			p, ctx := errgroup.WithContext(ctx)
			p.SetLimit(limit)
			for _, i := range idx {
				p.Go(func() error {
					if err := ctx.Err(); err != nil {
						return err
					}
					r, err := c.copyOne(ctx, items[i])
					if err != nil {
						return err
					}
					// The bundle's entry has what pack needs of the
					// narinfo from here, and a channel's narinfos
					// would be held to the end.
					items[i].NarInfo = nil
					results[i] = r
					c.prog.Step(items[i].Path.String(), stepSource(r), 0)
					return nil
				})
			}
			return p.Wait()
		})
	}
	pool(li, c.p.jobs())
	pool(ri, c.p.downloads())
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return results, nil
}

// oneCoreItems returns the local items to compress on one core, as one
// zstd frame: those the other jobs, copying the smaller items after it in
// li (sorted, largest first), take at least as long as it takes. Frames
// compressed on every core cost a chunk buffer in and one out for each
// core, with more page faults than there is compressing to gain, and
// are needed only for a NAR that would else be left compressing alone at
// the end.
func (c *copier) oneCoreItems(items []*plan.Item, li []int) map[*plan.Item]bool {
	jobs := c.p.jobs()
	one := map[*plan.Item]bool{}
	var after uint64 // NarSize of li[k+1:]
	for k := len(li) - 1; k >= 0; k-- {
		it := items[li[k]]
		if jobs > 1 && it.NarSize*uint64(jobs-1) <= after {
			one[it] = true
		}
		after += it.NarSize
	}
	return one
}

func stepSource(r PathResult) string {
	if r.Reused {
		return SourceReused
	}
	return r.Source
}

// itemCA is the content address the plan has for it.
func itemCA(it *plan.Item) string {
	switch {
	case it.Info != nil:
		return it.Info.CA
	case it.NarInfo != nil:
		return it.NarInfo.CA
	}
	return ""
}

// isFlat reports whether a content address is a flat fixed output's:
// "fixed:ALGO:HASH" without "r:".
func isFlat(ca string) bool {
	return strings.HasPrefix(ca, "fixed:") && !strings.HasPrefix(ca, "fixed:r:")
}

// upstreamOrigin is the origin of a path copied from the cache at url:
// with the names of the trusted keys that signed ni.
func (p *Packer) upstreamOrigin(url string, ni *narinfo.NarInfo) *bundle.Origin {
	o := &bundle.Origin{From: bundle.FromUpstream, URL: url}
	if ni == nil || p.Planner.TrustedKeys == nil {
		return o
	}
	fp := []byte(ni.Fingerprint())
	for _, s := range ni.Sigs {
		if _, ok := p.Planner.TrustedKeys.Verify(fp, []signing.Signature{s}); ok {
			o.Keys = append(o.Keys, s.KeyName)
		}
	}
	return o
}

// bundleFetch converts a plan's fetch to the manifest's.
func bundleFetch(f *derivation.Fetch) *bundle.Fetch {
	if f == nil {
		return nil
	}
	return &bundle.Fetch{URLs: f.URLs, Method: f.Method, Hash: f.Hash}
}

// trusted reports whether the planner would accept ni from an upstream.
func (p *Packer) trusted(ni *narinfo.NarInfo) bool {
	if ni.IsContentAddressed() {
		return true
	}
	return p.Planner.TrustedKeys != nil && ni.Verify(p.Planner.TrustedKeys)
}

// copyOne writes one item, reusing an earlier bundle's file if it can,
// else from its planned source, falling back as the package doc says.
func (c *copier) copyOne(ctx context.Context, it *plan.Item) (PathResult, error) {
	meta := bundle.PathMeta{Roles: it.Roles, Flat: isFlat(itemCA(it)), Fetch: bundleFetch(it.Fetch)}
	if c.oneCore[it] {
		meta.Concurrency = 1
	}
	r := PathResult{Path: it.Path, Roles: it.Roles, NarSize: it.NarSize, Source: SourceStore}
	meta.Origin = &bundle.Origin{From: bundle.FromStore}
	var planned *bundle.Origin
	if it.Source.Kind == plan.FromUpstream {
		r.Source = it.Source.URL
		planned = c.p.upstreamOrigin(it.Source.URL, it.NarInfo)
		meta.Origin = planned
	}
	if c.builtSet[it.Path] {
		r.Source = SourceBuild
		meta.Origin = &bundle.Origin{From: bundle.FromBuild}
	}
	ok, err := c.w.Reuse(ctx, it.Path, meta)
	if err != nil {
		return r, fmt.Errorf("pack %s: %w", it.Path, err)
	}
	if ok {
		r.Reused = true
		return r, nil
	}

	if it.Source.Kind == plan.FromUpstream {
		// A killed pack may have fetched it without publishing it.
		if it.NarInfo != nil {
			ok, err := c.w.Adopt(ctx, it.NarInfo, meta)
			if err != nil {
				return r, fmt.Errorf("pack %s: %w", it.Path, err)
			}
			if ok {
				r.Reused = true
				return r, nil
			}
		}
		if url, err := c.fromUpstreams(ctx, it, meta, planned); err == nil {
			r.Source = url
			return r, nil
		} else if ctx.Err() != nil {
			return r, err
		}
		// Every upstream failed: the store, else a build.
		valid, err := c.p.nix().IsValid(ctx, it.Path)
		if err != nil {
			return r, fmt.Errorf("pack %s: %w", it.Path, err)
		}
		r.Source = SourceStore
		meta.Origin = &bundle.Origin{From: bundle.FromStore}
		if !valid {
			if err := c.build(ctx, it); err != nil {
				return r, err
			}
			r.Source = SourceBuild
			meta.Origin = &bundle.Origin{From: bundle.FromBuild}
		}
		info, err := c.fromStore(ctx, it.Path, nil, meta)
		if err != nil {
			return r, err
		}
		r.NarSize = info.NarSize
		return r, nil
	}
	info, err := c.fromStore(ctx, it.Path, it.Info, meta)
	if err != nil {
		return r, err
	}
	r.NarSize = info.NarSize
	return r, nil
}

// fromUpstreams copies it from its planned upstream, then from each later
// one with a trusted narinfo for it, and returns the URL of the one that
// worked. planned is the origin of its planned narinfo, whose signatures
// copyOne checked already.
func (c *copier) fromUpstreams(ctx context.Context, it *plan.Item, meta bundle.PathMeta, planned *bundle.Origin) (string, error) {
	var lastErr error
	ups := c.p.Planner.Upstreams
	for i := it.Source.Upstream; i < len(ups); i++ {
		url, src := ups[i].URL, ups[i].Cache
		ni, origin := it.NarInfo, planned
		if i != it.Source.Upstream || ni == nil {
			var err error
			ni, err = src.NarInfo(ctx, it.Path.Hash)
			switch {
			case ctx.Err() != nil:
				return "", ctx.Err()
			case errors.Is(err, cache.ErrNotFound):
				continue
			case err != nil:
				c.log.Warn("upstream unreachable, trying the next source", "upstream", url, "path", it.Path, "err", err)
				lastErr = err
				continue
			case ni.StorePath != it.Path || !c.p.trusted(ni):
				continue
			}
			origin = c.p.upstreamOrigin(url, ni)
		}
		meta.Origin = origin
		if err := c.fromUpstream(ctx, src, ni, meta); err != nil {
			if ctx.Err() != nil {
				return "", ctx.Err()
			}
			c.log.Warn("upstream copy failed, trying the next source", "upstream", url, "path", it.Path, "err", err)
			lastErr = err
			continue
		}
		return url, nil
	}
	if lastErr == nil {
		lastErr = fmt.Errorf("no upstream has %s", it.Path)
	}
	return "", lastErr
}

func (c *copier) fromUpstream(ctx context.Context, src cache.Source, ni *narinfo.NarInfo, meta bundle.PathMeta) error {
	f, err := src.Open(ctx, ni.URL)
	if err != nil {
		return err
	}
	defer f.Close()
	file := bundle.ProgressReader{R: f, Prog: c.prog}
	base, bf := c.deltaBase(ni.StorePath, ni.References)
	if base == nil {
		return c.w.AddCompressed(ctx, ni, file, meta)
	}
	defer func() { bf.Close(); os.Remove(bf.Name()) }()
	res, err := c.w.AddCompressedDelta(ctx, ni, file, meta, *base)
	c.countResult(res)
	return err
}

// countResult counts a path a delta was made for.
func (c *copier) countResult(res bundle.DeltaResult) {
	c.countDelta(func(s *DeltaStats) {
		s.Tried++
		if res.Delta {
			s.Paths++
			s.Saved += res.FileSize - res.DeltaSize
		}
	})
}

// fromStore dumps the store path p into the bundle, checking it against
// info (nil means asking Nix).
func (c *copier) fromStore(ctx context.Context, p storepath.Path, info *nixcli.PathInfo, meta bundle.PathMeta) (*nixcli.PathInfo, error) {
	if info == nil {
		infos, err := c.p.nix().PathInfo(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("pack %s: %w", p, err)
		}
		if len(infos) != 1 || infos[0].Path != p {
			return nil, fmt.Errorf("pack %s: not valid in the store", p)
		}
		info = &infos[0]
		meta.Flat = isFlat(info.CA)
	}
	meta.References, meta.Deriver, meta.CA = info.References, info.Deriver, info.CA
	for _, s := range info.Signatures {
		// Signatures the store holds (from the caches it substituted
		// from) stay valid: they cover the NAR, not the file.
		if sig, err := signing.ParseSignature(s); err == nil {
			meta.Sigs = append(meta.Sigs, sig)
		}
	}
	if err := c.checkClosure(p, info.References); err != nil {
		return nil, err
	}
	meta.NarHash, meta.NarSize = info.NarHash, info.NarSize
	var err error
	if base, f := c.deltaBase(p, info.References); base != nil {
		// The delta reads the NAR first, and shows the progress; the
		// compressor reads it again, mostly only in part.
		opened := 0
		open := func() (io.ReadCloser, error) {
			dump := nar.NewDumpReader(p.String())
			if opened++; opened > 1 {
				return dump, nil
			}
			return &stepDump{bundle.ProgressReader{R: dump, Prog: c.prog}, dump}, nil
		}
		var res bundle.DeltaResult
		res, err = c.w.AddNARDelta(ctx, p, open, meta, *base)
		f.Close()
		os.Remove(f.Name())
		c.countResult(res)
	} else {
		dump := nar.NewDumpReader(p.String())
		err = c.w.AddNAR(ctx, p, &stepDump{bundle.ProgressReader{R: dump, Prog: c.prog}, dump}, meta)
		dump.Close()
	}
	if errors.Is(err, cache.ErrCorrupt) {
		err = fmt.Errorf("pack %s: %w: %w", p, ErrStoreCorrupt, err)
	}
	if err != nil {
		return nil, err
	}
	return info, nil
}

// checkClosure makes sure a path's references are in the bundle or its
// bases, which can fail only for a path rebuilt after an upstream copy
// failed whose references differ from the upstream's.
func (c *copier) checkClosure(p storepath.Path, refs []storepath.Path) error {
	for _, r := range refs {
		if r != p && c.pl.Item(r) == nil && !c.inBase(r) {
			return fmt.Errorf("pack %s: references %s, which the plan lacks", p, r)
		}
	}
	return nil
}

// build realises it with Nix after every upstream failed.
func (c *copier) build(ctx context.Context, it *plan.Item) error {
	c.buildMu.Lock()
	defer c.buildMu.Unlock()
	want := realiseArgs([]*plan.Item{it})
	// A path planned from upstream has no DrvPath: the narinfo's deriver
	// builds it, if this store has that .drv.
	if it.DrvPath == (storepath.Path{}) && it.NarInfo != nil && it.NarInfo.Deriver != (storepath.Path{}) {
		if ok, err := c.p.nix().IsValid(ctx, it.NarInfo.Deriver); err == nil && ok {
			want = []storepath.Path{it.NarInfo.Deriver}
		}
	}
	c.log.Info("realising with Nix", "path", it.Path, "via", want[0])
	if err := c.p.realise(ctx, want); err != nil {
		return fmt.Errorf("pack %s: realise: %w", it.Path, err)
	}
	c.mu.Lock()
	c.extraBuilt = append(c.extraBuilt, it.Path)
	slices.SortFunc(c.extraBuilt, storepath.Compare)
	c.mu.Unlock()
	return nil
}

// stepDump is a bundle.ProgressReader over a NAR dump, which writes itself out
// without a copy through a buffer.
type stepDump struct {
	bundle.ProgressReader
	d *nar.DumpReader
}

func (s *stepDump) WriteTo(w io.Writer) (int64, error) {
	return s.d.WriteTo(stepWriter{w, s.Prog})
}

func (s *stepDump) Close() error { return s.d.Close() }

type stepWriter struct {
	w    io.Writer
	prog Progress
}

func (s stepWriter) Write(b []byte) (int, error) {
	n, err := s.w.Write(b)
	if n > 0 {
		s.prog.Step("", "", int64(n))
	}
	return n, err
}
