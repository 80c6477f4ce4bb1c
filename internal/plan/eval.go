package plan

import (
	"context"
	"fmt"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// resolveTargets evaluates the targets: one nix-instantiate per file and
// argument set, one nix path-info --derivation per flake installable (nix
// prints them as a set, so they cannot be matched up from one call), and
// metadata and archive once per flake.
func (p *Planner) resolveTargets(ctx context.Context, dir storepath.Dir, targets []TargetSpec) ([]ResolvedTarget, map[string]*flakeInfo, error) {
	nix := p.nix()
	perTarget := make([][]ResolvedTarget, len(targets))
	// File and expression targets, batched by source and arguments.
	type fileKey struct{ file, expr, args string }
	batches := map[fileKey][]int{}
	var keys []fileKey
	flakes := map[string]*flakeInfo{}
	var flakeRefs []string
	var flakeTargets []int
	for i, t := range targets {
		switch t.Kind {
		case TargetPath:
			rt := ResolvedTarget{Spec: t}
			if t.Path.IsDerivation() {
				rt.DrvPath = t.Path
			} else {
				rt.Path = t.Path
			}
			perTarget[i] = []ResolvedTarget{rt}
		case TargetFile:
			if t.Attr == "" {
				var err error
				if perTarget[i], err = instantiate(ctx, nix, t, nil); err != nil {
					return nil, nil, err
				}
				continue
			}
			k := fileKey{t.File, t.Expr, strings.Join(t.NixArgs, "\x00")}
			if _, ok := batches[k]; !ok {
				keys = append(keys, k)
			}
			batches[k] = append(batches[k], i)
		case TargetFlake:
			if _, ok := flakes[t.Flake]; !ok {
				flakes[t.Flake] = &flakeInfo{}
				flakeRefs = append(flakeRefs, t.Flake)
			}
			flakeTargets = append(flakeTargets, i)
		default:
			return nil, nil, fmt.Errorf("plan target %q: %w: unknown kind %d", t.Text, ErrBadTarget, t.Kind)
		}
	}
	for _, k := range keys {
		if err := instantiateBatch(ctx, nix, targets, batches[k], perTarget); err != nil {
			return nil, nil, err
		}
	}
	if err := resolveFlakes(ctx, nix, targets, flakeTargets, flakeRefs, flakes, perTarget); err != nil {
		return nil, nil, err
	}
	var out []ResolvedTarget
	for i, rts := range perTarget {
		if len(rts) == 0 {
			return nil, nil, fmt.Errorf("plan target %s: evaluates to no derivation", targets[i])
		}
		out = append(out, rts...)
	}
	return out, flakes, nil
}

// instantiate evaluates t's file or expression, or only attrs of it,
// into perTarget.
func instantiate(ctx context.Context, nix *nixcli.Runner, t TargetSpec, attrs []string) ([]ResolvedTarget, error) {
	drvs, err := instantiateSource(ctx, nix, t, attrs)
	if err != nil {
		return nil, fmt.Errorf("plan target %s: %w", t, err)
	}
	var rts []ResolvedTarget
	for _, d := range drvs {
		rts = append(rts, ResolvedTarget{Spec: t, DrvPath: d})
	}
	return rts, nil
}

// instantiateBatch evaluates the targets idx, attributes of one file with
// the same arguments, in one nix-instantiate, into perTarget.
func instantiateBatch(ctx context.Context, nix *nixcli.Runner, targets []TargetSpec, idx []int, perTarget [][]ResolvedTarget) error {
	attrs := make([]string, len(idx))
	for j, i := range idx {
		attrs[j] = targets[i].Attr
	}
	first := targets[idx[0]]
	drvs, err := instantiateSource(ctx, nix, first, attrs)
	if err != nil {
		return fmt.Errorf("plan target %s: %w", first.source(), err)
	}
	if len(drvs) == len(idx) {
		for j, i := range idx {
			perTarget[i] = []ResolvedTarget{{Spec: targets[i], DrvPath: drvs[j]}}
		}
		return nil
	}
	// Some attribute gave several derivations (or none): instantiate
	// one by one to tell them apart.
	for _, i := range idx {
		if perTarget[i], err = instantiate(ctx, nix, targets[i], []string{targets[i].Attr}); err != nil {
			return err
		}
	}
	return nil
}

// instantiateSource runs nix-instantiate on t's file or expression.
func instantiateSource(ctx context.Context, nix *nixcli.Runner, t TargetSpec, attrs []string) ([]storepath.Path, error) {
	if t.File == "" {
		return nix.Instantiate(ctx, t.Expr, attrs, append([]string{"--expr"}, t.NixArgs...)...)
	}
	return nix.Instantiate(ctx, t.File, attrs, t.NixArgs...)
}
