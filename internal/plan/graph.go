package plan

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/derivation"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// readGraph reads the targets' .drv files and, if deep, their closures,
// rooted also at the derivers of output paths named as targets (which it
// returns, by output path), and returns too the output paths named as
// targets that are not in the store (see derivers).
func (p *Planner) readGraph(ctx context.Context, dir storepath.Dir, known validity, resolved []ResolvedTarget, deep bool) (*drvGraph, map[storepath.Path]storepath.Path, []storepath.Path, error) {
	g := &drvGraph{dir: dir, jobs: p.jobs(), drvs: map[storepath.Path]*drvNode{}}
	var roots []storepath.Path
	for _, rt := range resolved {
		if rt.DrvPath != (storepath.Path{}) {
			roots = append(roots, rt.DrvPath)
		}
	}
	derivers := map[storepath.Path]storepath.Path{}
	var absent []storepath.Path
	if deep {
		var err error
		if derivers, absent, err = p.derivers(ctx, known, resolved); err != nil {
			return nil, nil, nil, err
		}
		roots = append(roots, slices.Collect(maps.Values(derivers))...)
	}
	if err := g.load(ctx, roots, deep); err != nil {
		return nil, nil, nil, fmt.Errorf("plan: %w", err)
	}
	return g, derivers, absent, nil
}

// derivers finds the .drv of each output path named as a target, when
// the path is valid and its .drv is still in the store, so that its
// build closure can be walked. It returns too the paths not in the store
// at all, whose build closures are not walked either: the planner warns
// of those an upstream cache has, as the others fail the plan.
func (p *Planner) derivers(ctx context.Context, known validity, rts []ResolvedTarget) (map[storepath.Path]storepath.Path, []storepath.Path, error) {
	var paths []storepath.Path
	for _, rt := range rts {
		if rt.Path != (storepath.Path{}) {
			paths = append(paths, rt.Path)
		}
	}
	out := map[storepath.Path]storepath.Path{}
	if len(paths) == 0 {
		return out, nil, nil
	}
	valid, _, err := p.splitValid(ctx, known, paths)
	if err != nil {
		return nil, nil, err
	}
	infos, err := p.pathInfo(ctx, valid)
	if err != nil {
		return nil, nil, err
	}
	var drvs []storepath.Path
	for _, in := range infos {
		if in.Deriver != (storepath.Path{}) {
			drvs = append(drvs, in.Deriver)
		}
	}
	validDrvs, _, err := p.splitValid(ctx, known, drvs)
	if err != nil {
		return nil, nil, err
	}
	ok := map[storepath.Path]bool{}
	for _, d := range validDrvs {
		ok[d] = true
	}
	var noDeriver, absent []storepath.Path
	for _, in := range infos {
		switch {
		case ok[in.Deriver]:
			out[in.Path] = in.Deriver
		case in.Deriver == storepath.Path{}:
			noDeriver = append(noDeriver, in.Path)
		default:
			p.log().Warn("no derivation in the store for a target path: its build closure is not included", "path", in.Path, "deriver", in.Deriver)
		}
	}
	for _, q := range paths {
		if _, ok := out[q]; !ok && !slices.ContainsFunc(infos, func(in nixcli.PathInfo) bool { return in.Path == q }) {
			absent = append(absent, q)
		}
	}
	// A --paths-from list of nix-store --add paths has thousands: one
	// warning each would bury everything else.
	p.warnTargets(noDeriver, "target path has no deriver recorded (nix-store --add, or copied without one): its build closure is not included",
		"%d target paths have no deriver recorded (nix-store --add, or copied without one): their build closures are not included")
	return out, absent, nil
}

// warnAbsent warns of the target paths not in the store (derivers) that
// an upstream cache has: their build closures are not included. Of those
// nothing provides, the plan's error says (CheckTargetPaths).
func (p *Planner) warnAbsent(pl *Plan, absent []storepath.Path) {
	var upstream []storepath.Path
	for _, q := range absent {
		if it := pl.Item(q); it != nil && it.Source.Kind == FromUpstream {
			upstream = append(upstream, q)
		}
	}
	p.warnTargets(upstream, "target path not in the store: its build closure is not included",
		"%d target paths are not in the store: their build closures are not included")
}

// warnTargets warns once of the target paths a problem applies to,
// however many: one says one, many (a format of their count) names the
// first few.
func (p *Planner) warnTargets(paths []storepath.Path, one, many string) {
	const named = 3
	switch {
	case len(paths) == 0:
		return
	case len(paths) == 1:
		p.log().Warn(one, "path", paths[0])
		return
	}
	var names []string
	for _, q := range paths[:min(named, len(paths))] {
		names = append(names, q.String())
	}
	if len(paths) > named {
		names = append(names, fmt.Sprintf("and %d more", len(paths)-named))
	}
	p.log().Warn(fmt.Sprintf(many, len(paths)), "paths", strings.Join(names, ", "))
}

// drvGraph is a .drv closure read straight from the store's files, of
// which it keeps only what the plan needs.
type drvGraph struct {
	dir  storepath.Dir
	jobs int
	drvs map[storepath.Path]*drvNode
}

// drvNode is what a plan needs of a .drv. A build closure has thousands,
// and their environments (build scripts) are most of their size.
type drvNode struct {
	// outputs are the output paths: as recorded, or computed from the
	// hash for a fixed-output derivation.
	outputs map[string]storepath.Path
	inputs  []storepath.Path // input derivations
	fixed   bool             // fixed-output
	fetch   *derivation.Fetch
}

// newDrvNode keeps of drv, read from the store path d, what a plan needs.
func newDrvNode(d storepath.Path, drv *derivation.Derivation) (*drvNode, error) {
	outs, err := drv.OutputPaths()
	if err != nil {
		return nil, fmt.Errorf("derivation %s: %w", d, err)
	}
	n := &drvNode{outputs: outs, fixed: drv.IsFixedOutput()}
	n.inputs = slices.Collect(maps.Keys(drv.InputDrvs))
	if f, ok := drv.Fetch(); ok {
		n.fetch = &f
	}
	return n, nil
}

// load reads roots and, if deep, every input derivation.
func (g *drvGraph) load(ctx context.Context, roots []storepath.Path, deep bool) error {
	if deep {
		drvs, err := derivation.ReadClosure(ctx, g.dir, roots, g.jobs, newDrvNode)
		g.drvs = drvs
		return err
	}
	for _, r := range roots {
		drv, err := derivation.ReadFile(r.String(), g.dir)
		if err != nil {
			return err
		}
		if g.drvs[r], err = newDrvNode(r, drv); err != nil {
			return err
		}
	}
	return nil
}

// outputs maps every loaded .drv to its output paths.
func (g *drvGraph) outputs() map[storepath.Path]map[string]storepath.Path {
	out := make(map[storepath.Path]map[string]storepath.Path, len(g.drvs))
	for d, n := range g.drvs {
		out[d] = n.outputs
	}
	return out
}

// outDrv maps each output path to its derivation.
func (g *drvGraph) outDrv(outputs map[storepath.Path]map[string]storepath.Path) map[storepath.Path]storepath.Path {
	m := map[storepath.Path]storepath.Path{}
	for d, outs := range outputs {
		for _, o := range outs {
			m[o] = d
		}
	}
	return m
}

// closure returns the loaded .drvs reachable from roots, and roots.
func (g *drvGraph) closure(roots []storepath.Path) []storepath.Path {
	return reachable(roots, func(d storepath.Path) ([]storepath.Path, bool) {
		if n := g.drvs[d]; n != nil {
			return n.inputs, true
		}
		return nil, true
	})
}

// reachable walks depth first from roots and returns each path once,
// unless edges says it is not part of the graph (ok false), and goes on
// to the paths edges names.
func reachable(roots []storepath.Path, edges func(storepath.Path) (next []storepath.Path, ok bool)) []storepath.Path {
	seen := map[storepath.Path]bool{}
	stack := slices.Clone(roots)
	var out []storepath.Path
	for len(stack) > 0 {
		q := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[q] {
			continue
		}
		seen[q] = true
		next, ok := edges(q)
		if !ok {
			continue
		}
		out = append(out, q)
		stack = append(stack, next...)
	}
	return out
}
