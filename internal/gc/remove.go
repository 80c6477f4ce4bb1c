package gc

import (
	"context"
	"slices"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/storage"
)

// remove carries the plan out, in the order the package doc gives.
func (g *collector) remove() error {
	g.opts.Progress.Phase(PhaseRemove, g.rep.Removed.Paths, g.rep.Removed.Bytes)
	if err := g.removeNarInfosAndFiles(); err != nil {
		return err
	}
	if err := storage.Sync(g.ctx, g.b); err != nil {
		return err
	}
	if g.registry != nil {
		if err := g.c.WriteFile(g.ctx, bundle.RegistryName, g.registry); err != nil {
			return err
		}
	}
	// Each kind's removal is durable before the next kind's begins: a
	// channel's record before its tarball (an inventory never lists a
	// channel the cache lacks), a bundle's record before its signature (a
	// record is never left unsigned), whatever order the file system
	// would keep.
	for _, names := range [][]string{g.channelRecords, g.channelFiles, g.recordFiles, g.sigFiles} {
		for _, name := range names {
			if err := g.b.Remove(g.ctx, name); err != nil {
				return err
			}
		}
		if err := storage.Sync(g.ctx, g.b); err != nil {
			return err
		}
	}
	return nil
}

// syncEvery is how often, at most, the removal of narinfos is synced
// while it goes on: each sync lets the NAR files of the narinfos removed
// before it go a grace period later.
const syncEvery = 250 * time.Millisecond

// removeNarInfosAndFiles removes the narinfos level by level and, at the
// same time, the NAR files and logs: each file once the narinfos that
// name it have been gone, durably, for the grace period. The grace then
// overlaps the removal of later narinfos instead of following all of
// it, and the two directories' removals run side by side.
func (g *collector) removeNarInfosAndFiles() error {
	prog := g.opts.Progress
	// File i may go once level after[i] is synced: the last level whose
	// narinfos name it, or, for logs and files no narinfo removed names,
	// the last level.
	last := map[string]int{}
	for k, level := range g.narinfos {
		for _, h := range level {
			last[g.graph[h].url] = k
		}
	}
	levels := max(len(g.narinfos), 1)
	after := make([]int, len(g.files))
	for i, f := range g.files {
		k, ok := last[f.Name]
		if !ok {
			k = levels - 1
		}
		after[i] = k
	}
	order := make([]int, len(g.files))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return after[a] - after[b] })
	// synced[k] is closed once level k's removal is durable, at
	// syncedAt[k].
	synced := make([]chan struct{}, levels)
	syncedAt := make([]time.Time, levels)
	for k := range synced {
		synced[k] = make(chan struct{})
	}
	eg, ctx := errgroup.WithContext(g.ctx)
	eg.Go(func() error {
		done, lastSync := 0, time.Now()
		for k := range levels {
			if k < len(g.narinfos) {
				level := g.narinfos[k]
				// Progress in bytes only: a line per path of
				// 100,000 would drown what matters.
				err := g.eachCtx(ctx, len(level), func(ctx context.Context, i int) error {
					if err := g.b.Remove(ctx, cache.NarInfoFile(level[i])); err != nil {
						return err
					}
					prog.Step("", "", g.graph[level[i]].size)
					return nil
				})
				if err != nil {
					return err
				}
			}
			if k < levels-1 && time.Since(lastSync) < syncEvery {
				continue
			}
			if err := storage.Sync(ctx, g.b); err != nil {
				return err
			}
			lastSync = time.Now()
			for ; done <= k; done++ {
				syncedAt[done] = lastSync
				close(synced[done])
			}
		}
		return nil
	})
	eg.Go(func() error {
		return g.eachCtx(ctx, len(order), func(ctx context.Context, i int) error {
			f, k := g.files[order[i]], after[order[i]]
			select {
			case <-synced[k]:
			case <-ctx.Done():
				return ctx.Err()
			}
			if wait := time.Until(syncedAt[k].Add(g.opts.Grace)); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return ctx.Err()
				}
			}
			if err := g.b.Remove(ctx, f.Name); err != nil {
				return err
			}
			prog.Step("", "", f.Size)
			return nil
		})
	})
	return eg.Wait()
}

// sweep removes, or counts with dryRun, what writers killed in the middle
// of a Put left in the cache before gc started, if the backend can tell
// (storage.Sweeper). Removing needs the exclusive lock.
func (g *collector) sweep(start time.Time, dryRun bool) error {
	s, ok := g.b.(storage.Sweeper)
	if !ok {
		return nil
	}
	left, err := s.SweepLeftovers(g.ctx, start, dryRun)
	r := &g.rep.Removed
	r.TempFiles, r.TempBytes = left.Files, left.Bytes
	r.Bytes += left.Bytes
	if err != nil || dryRun {
		return err
	}
	return storage.Sync(g.ctx, g.b)
}
