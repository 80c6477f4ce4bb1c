package nixcli

import (
	"context"
	"slices"

	"golang.org/x/sync/errgroup"

	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// ArgChunk bounds the store paths passed to one nix invocation, well
// below the kernel's limit on a command line.
const ArgChunk = 2000

// Chunked calls fn on consecutive chunks of at most ArgChunk paths, up
// to parallel calls at once (at least 1), and concatenates the results in
// order. It is how a query about thousands of paths (PathInfo,
// InvalidPaths, Requisites) fits on nix command lines. The first error
// cancels the calls still running and is returned.
func Chunked[T any](ctx context.Context, paths []storepath.Path, parallel int, fn func(context.Context, ...storepath.Path) ([]T, error)) ([]T, error) {
	n := (len(paths) + ArgChunk - 1) / ArgChunk
	res := make([][]T, n)
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(max(parallel, 1))
	for i := range n {
		g.Go(func() (err error) {
			res[i], err = fn(ctx, paths[i*ArgChunk:min(len(paths), (i+1)*ArgChunk)]...)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return slices.Concat(res...), nil
}
