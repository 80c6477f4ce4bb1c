package check

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"slices"

	"golang.org/x/sync/errgroup"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// localParallel bounds concurrent queries of the local store.
const localParallel = 4

// invalid returns the paths of ps the local store lacks.
func (r *run) invalid(ctx context.Context, ps []storepath.Path) (map[storepath.Path]bool, error) {
	out := map[storepath.Path]bool{}
	if len(ps) == 0 {
		return out, nil
	}
	bad, err := nixcli.Chunked(ctx, ps, localParallel, r.c.Local.InvalidPaths)
	if err != nil {
		return nil, fmt.Errorf("check: local store: %w", err)
	}
	for _, q := range bad {
		out[q] = true
	}
	return out, nil
}

// markLocal asks the local store about ps and marks the valid ones.
func (r *run) markLocal(ctx context.Context, ps []storepath.Path) error {
	if r.c.Local == nil || len(ps) == 0 {
		return nil
	}
	bad, err := r.invalid(ctx, ps)
	if err != nil {
		return err
	}
	for _, p := range ps {
		if !bad[p] {
			r.nodes[p].local = true
		}
	}
	return nil
}

// findAll works out where every node is: locally, in a source (following
// narinfo references in rounds), or behind a hashed mirror.
func (r *run) findAll(ctx context.Context) error {
	log := r.c.log()
	var srcs, others []storepath.Path
	for p, n := range r.nodes {
		if n.kind == KindInputSource {
			srcs = append(srcs, p)
		} else {
			others = append(others, p)
		}
	}
	if r.c.Local == nil {
		for _, p := range srcs {
			r.nodes[p].local = true
		}
	} else if err := r.markLocal(ctx, srcs); err != nil {
		return err
	}
	if r.c.UseLocal {
		if err := r.markLocal(ctx, others); err != nil {
			return err
		}
	}
	var frontier []storepath.Path
	for p, n := range r.nodes {
		if !n.local {
			frontier = append(frontier, p)
		}
	}
	for round := 1; len(frontier) > 0; round++ {
		if err := r.lookup(ctx, frontier); err != nil {
			return err
		}
		var next []storepath.Path
		for _, p := range frontier {
			n := r.nodes[p]
			if n.ni == nil {
				continue
			}
			for _, ref := range n.ni.References {
				if _, ok := r.nodes[ref]; !ok {
					r.add(ref, KindReference)
					next = append(next, ref)
				}
			}
		}
		if r.c.UseLocal {
			if err := r.markLocal(ctx, next); err != nil {
				return err
			}
			next = slices.DeleteFunc(next, func(p storepath.Path) bool { return r.nodes[p].local })
		}
		log.Debug("looked up paths", "round", round, "paths", len(frontier), "new references", len(next))
		frontier = next
	}
	return r.mirrors(ctx)
}

// parallel runs fn on every item of ps with Jobs at a time, stopping at
// the first error.
func (r *run) parallel(ctx context.Context, ps []storepath.Path, fn func(context.Context, storepath.Path) error) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(r.c.jobs())
	for _, p := range ps {
		g.Go(func() error {
			if err := ctx.Err(); err != nil {
				return err
			}
			return fn(ctx, p)
		})
	}
	return g.Wait()
}

// lookup asks the sources, in order, for each of ps. Nodes are
// pre-allocated, so each goroutine writes only its own node.
func (r *run) lookup(ctx context.Context, ps []storepath.Path) error {
	if len(r.c.Sources) == 0 {
		return nil
	}
	nodes := make(map[storepath.Path]*node, len(ps))
	for _, p := range ps {
		nodes[p] = r.nodes[p]
	}
	return r.parallel(ctx, ps, func(ctx context.Context, p storepath.Path) error {
		n := nodes[p]
		for i, s := range r.c.Sources {
			ni, err := s.NarInfos.NarInfo(ctx, p.Hash)
			if errors.Is(err, cache.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return fmt.Errorf("check: source %s: %s: %w", s.Name, p, err)
			}
			if ni.StorePath != p {
				return fmt.Errorf("check: source %s: narinfo for %s describes %s: %w", s.Name, p, ni.StorePath, ErrBadSource)
			}
			n.ni, n.src = ni, i
			return nil
		}
		return nil
	})
}

// mirrors asks the sources' hashed mirrors for the flat files of
// builtin:fetchurl derivations whose output no source has.
func (r *run) mirrors(ctx context.Context) error {
	asks := map[storepath.Path]string{}
	for p, n := range r.nodes {
		if n.local || n.ni != nil || n.fixed == nil || n.fixed.Builder != "builtin:fetchurl" {
			continue
		}
		if mp := r.drvs[n.drv].mirror; mp != "" {
			asks[p] = mp
		}
	}
	var ps []storepath.Path
	for _, s := range r.c.Sources {
		if s.Mirror != nil {
			ps = slices.Collect(maps.Keys(asks))
			break
		}
	}
	return r.parallel(ctx, ps, func(ctx context.Context, p storepath.Path) error {
		for i, s := range r.c.Sources {
			if s.Mirror == nil {
				continue
			}
			ok, err := s.Mirror.HasFlat(ctx, asks[p])
			if err != nil {
				return fmt.Errorf("check: source %s: %w", s.Name, err)
			}
			if ok {
				r.nodes[p].mirror = i
				return nil
			}
		}
		return nil
	})
}
