package plan

import (
	"context"
	"errors"
	"fmt"
	"slices"

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

// validClosure splits paths as splitValid does and returns the closure of
// the valid ones. With guess, and none of paths known to be invalid, it
// first asks for the closure of all of them at once, which Nix refuses if
// one is not valid: for the usual plan, of targets all in the store, that
// is one nix invocation fewer before pack can copy anything. A refusal
// costs one short invocation, and the paths are then split as usual. The
// resolver guesses only in its first round, on the paths the targets
// name: later rounds hold references of upstream paths, which the store
// mostly lacks.
func (p *Planner) validClosure(ctx context.Context, known validity, paths []storepath.Path, guess bool) (valid, invalid, closure []storepath.Path, err error) {
	if guess && len(paths) > 0 && !slices.ContainsFunc(paths, func(q storepath.Path) bool { v, ok := known[q]; return ok && !v }) {
		closure, err := p.requisites(ctx, paths)
		var exit *nixcli.ExitError
		switch {
		case err == nil:
			for _, q := range paths {
				known[q] = true
			}
			return paths, nil, closure, nil
		case !errors.As(err, &exit) || ctx.Err() != nil:
			return nil, nil, nil, err
		}
	}
	if valid, invalid, err = p.splitValid(ctx, known, paths); err != nil || len(valid) == 0 {
		return valid, invalid, nil, err
	}
	closure, err = p.requisites(ctx, valid)
	return valid, invalid, closure, err
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
