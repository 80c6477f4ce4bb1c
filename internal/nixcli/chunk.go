package nixcli

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// ArgChunk bounds the store paths passed to one nix invocation, well
// below the kernel's limit on a command line.
const ArgChunk = 2000

// Chunked calls fn on consecutive chunks of at most ArgChunk paths, up
// to parallel calls at once (at least 1), and concatenates the results in
// order. It is how a query about thousands of paths (PathInfo,
// InvalidPaths, Requisites) fits on nix command lines.
func Chunked[T any](ctx context.Context, paths []storepath.Path, parallel int, fn func(context.Context, ...storepath.Path) ([]T, error)) ([]T, error) {
	n := (len(paths) + ArgChunk - 1) / ArgChunk
	res := make([][]T, n)
	errs := make([]error, n)
	sem := make(chan struct{}, max(parallel, 1))
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			res[i], errs[i] = fn(ctx, paths[i*ArgChunk:min(len(paths), (i+1)*ArgChunk)]...)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return slices.Concat(res...), nil
}
