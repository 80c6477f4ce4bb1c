package plan

import (
	"context"
	"slices"
	"sync/atomic"

	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// resolver decides where each path comes from.
type resolver struct {
	p         *Planner
	dir       storepath.Dir
	items     map[storepath.Path]*Item
	outDrv    map[storepath.Path]storepath.Path
	known     validity
	untrusted atomic.Int64
}

// planned returns the items that have a role, with what each fixed-output
// one fetches, sorted by path.
func (r *resolver) planned(g *drvGraph) []Item {
	items := make([]Item, 0, len(r.items))
	for _, it := range r.items {
		if it.Roles == 0 {
			continue
		}
		if n := g.drvs[r.outDrv[it.Path]]; n != nil {
			it.Fetch = n.fetch
		}
		items = append(items, *it)
	}
	slices.SortFunc(items, func(a, b Item) int { return storepath.Compare(a.Path, b.Path) })
	return items
}

// resolve finds a source and references for seeds and everything they
// reference, in rounds: the local store first (whose closures are
// complete), then the upstreams for what it lacks, whose narinfos name
// further references for the next round.
func (r *resolver) resolve(ctx context.Context, seeds []storepath.Path) error {
	log := r.p.log()
	frontier := r.unknown(seeds)
	for round := 1; len(frontier) > 0; round++ {
		valid, invalid, closure, err := r.p.validClosure(ctx, r.known, frontier, round == 1)
		if err != nil {
			return err
		}
		if len(valid) > 0 {
			infos, err := r.p.pathInfo(ctx, r.unknown(closure))
			if err != nil {
				return err
			}
			for i := range infos {
				in := &infos[i]
				r.items[in.Path] = &Item{
					Path: in.Path, Source: Source{Kind: FromStore},
					NarHash: in.NarHash, NarSize: in.NarSize,
					FileSize:   uint64(float64(in.NarSize) * estimatedZstdRatio),
					References: in.References, Deriver: in.Deriver, Info: in,
				}
			}
		}
		found, err := r.lookup(ctx, invalid)
		if err != nil {
			return err
		}
		var next []storepath.Path
		for _, q := range invalid {
			it := found[q]
			if it == nil {
				d := r.outDrv[q]
				it = &Item{Path: q, Source: Source{Kind: FromBuild}, Deriver: d, DrvPath: d}
			} else {
				next = append(next, it.References...)
			}
			r.items[q] = it
		}
		log.Debug("resolved paths", "round", round, "store", len(valid), "upstream", len(found), "build", len(invalid)-len(found))
		frontier = r.unknown(next)
	}
	return nil
}

// unknown returns the paths of ps not yet resolved, without duplicates.
func (r *resolver) unknown(ps []storepath.Path) []storepath.Path {
	seen := map[storepath.Path]bool{}
	var out []storepath.Path
	for _, q := range ps {
		if _, ok := r.items[q]; !ok && !seen[q] {
			seen[q] = true
			out = append(out, q)
		}
	}
	return out
}

// closure returns the resolved paths reachable from seeds through known
// references.
func (r *resolver) closure(seeds []storepath.Path) []storepath.Path {
	return reachable(seeds, func(q storepath.Path) ([]storepath.Path, bool) {
		if it := r.items[q]; it != nil {
			return it.References, true
		}
		return nil, false
	})
}
