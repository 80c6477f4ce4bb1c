package plan

import (
	"context"
	"fmt"

	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// splitValid splits paths into those valid in the local store and the
// rest, asking Nix only about those known does not have yet.
func (p *Planner) splitValid(ctx context.Context, known validity, paths []storepath.Path) (valid, invalid []storepath.Path, err error) {
	var ask []storepath.Path
	for _, q := range paths {
		if _, ok := known[q]; !ok {
			ask = append(ask, q)
		}
	}
	if len(ask) > 0 {
		bad, err := nixcli.Chunked(ctx, ask, nixParallel, p.nix().InvalidPaths)
		if err != nil {
			return nil, nil, fmt.Errorf("plan: %w", err)
		}
		for _, q := range ask {
			known[q] = true
		}
		for _, q := range bad {
			known[q] = false
		}
	}
	for _, q := range paths {
		if known[q] {
			valid = append(valid, q)
		} else {
			invalid = append(invalid, q)
		}
	}
	return valid, invalid, nil
}

// validity is what one Plan learnt of paths' validity in the local
// store, so that each path costs Nix one question: the targets' outputs
// are asked about before their closure is resolved.
type validity map[storepath.Path]bool

// requisites returns the closure of valid paths. Closures overlap
// heavily, so chunks run one after another, each leaving out the paths
// earlier ones already covered.
func (p *Planner) requisites(ctx context.Context, paths []storepath.Path) ([]storepath.Path, error) {
	in := map[storepath.Path]bool{}
	var out []storepath.Path
	for len(paths) > 0 {
		var chunk []storepath.Path
		for len(paths) > 0 && len(chunk) < nixcli.ArgChunk {
			if !in[paths[0]] {
				chunk = append(chunk, paths[0])
			}
			paths = paths[1:]
		}
		if len(chunk) == 0 {
			break
		}
		closure, err := p.nix().Requisites(ctx, chunk...)
		if err != nil {
			return nil, fmt.Errorf("plan: %w", err)
		}
		for _, q := range closure {
			if !in[q] {
				in[q] = true
				out = append(out, q)
			}
		}
	}
	return out, nil
}

func (p *Planner) pathInfo(ctx context.Context, paths []storepath.Path) ([]nixcli.PathInfo, error) {
	if len(paths) == 0 {
		return nil, nil
	}
	infos, err := nixcli.Chunked(ctx, paths, nixParallel, p.nix().PathInfo)
	if err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	return infos, nil
}
