package derivation

import (
	"context"
	"fmt"

	"golang.org/x/sync/errgroup"

	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// ReadClosure reads the .drv files roots and, transitively, every input
// derivation they name, straight from the store's files, with up to jobs
// files read at once (jobs < 1 means 1). Of each it keeps only what keep
// returns, so that a caller walking thousands of derivations need not
// hold their build scripts; keep runs on many goroutines at once. It
// stops at the first error.
func ReadClosure[T any](ctx context.Context, storeDir storepath.Dir, roots []storepath.Path, jobs int, keep func(storepath.Path, *Derivation) (T, error)) (map[storepath.Path]T, error) {
	kept := map[storepath.Path]T{}
	seen := map[storepath.Path]bool{}
	var level []storepath.Path
	add := func(p storepath.Path) {
		if !seen[p] {
			seen[p] = true
			level = append(level, p)
		}
	}
	for _, p := range roots {
		add(p)
	}
	// Breadth first, a level at a time: the inputs of a level are known
	// only once it is read.
	for len(level) > 0 {
		vals := make([]T, len(level))
		inputs := make([][]storepath.Path, len(level))
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(max(jobs, 1))
		for i, p := range level {
			g.Go(func() error {
				if err := gctx.Err(); err != nil {
					return err
				}
				d, err := ReadFile(p.String(), storeDir)
				if err != nil {
					return err
				}
				for in := range d.InputDrvs {
					inputs[i] = append(inputs[i], in)
				}
				vals[i], err = keep(p, d)
				return err
			})
		}
		if err := g.Wait(); err != nil {
			return nil, fmt.Errorf("read derivation closure: %w", err)
		}
		read := level
		level = nil
		for i, p := range read {
			kept[p] = vals[i]
			for _, in := range inputs[i] {
				add(in)
			}
		}
	}
	return kept, nil
}
