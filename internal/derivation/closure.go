package derivation

import (
	"context"
	"fmt"
	"sync"

	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// ReadClosure reads the .drv files roots and, transitively, every input
// derivation they name, straight from the store's files, with up to jobs
// files read at once (jobs < 1 means 1). It stops at the first error.
func ReadClosure(ctx context.Context, storeDir storepath.Dir, roots []storepath.Path, jobs int) (map[storepath.Path]*Derivation, error) {
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		firstErr error
		drvs     = map[storepath.Path]*Derivation{}
	)
	sem := make(chan struct{}, max(jobs, 1))
	var visit func(storepath.Path)
	visit = func(p storepath.Path) {
		mu.Lock()
		if _, seen := drvs[p]; seen || firstErr != nil {
			mu.Unlock()
			return
		}
		drvs[p] = nil
		mu.Unlock()
		wg.Go(func() {
			sem <- struct{}{}
			var d *Derivation
			err := ctx.Err()
			if err == nil {
				d, err = ReadFile(p.String(), storeDir)
			}
			<-sem
			mu.Lock()
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("read derivation closure: %w", err)
				}
				mu.Unlock()
				return
			}
			drvs[p] = d
			mu.Unlock()
			for in := range d.InputDrvs {
				visit(in)
			}
		})
	}
	for _, p := range roots {
		visit(p)
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	return drvs, nil
}
