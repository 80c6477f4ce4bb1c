package plan

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"

	"github.com/nix-airgap/nix-airgap/internal/derivation"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Planner works out plans. Only Nix is required.
type Planner struct {
	// Nix runs the nix programs; nil means a zero nixcli.Runner.
	Nix *nixcli.Runner
	// StoreDir is the local store dir; "" means asking Nix.
	StoreDir storepath.Dir
	// Upstreams are asked in order for paths the local store lacks; the
	// first with a trusted narinfo wins.
	Upstreams []Upstream
	// TrustedKeys are the keys an upstream narinfo must be signed by
	// (Nix's trusted-public-keys); content-addressed narinfos need no
	// signature. nil trusts only content-addressed ones.
	TrustedKeys *signing.Keyring
	// Jobs bounds concurrent upstream lookups and .drv reads; 0 means 16.
	Jobs int
	// Log gets progress and warnings; nil discards them.
	Log *slog.Logger
}

// Options choose what a plan covers.
type Options struct {
	// Mode is how much of the closures the plan covers; the zero Mode is
	// role.ModeBuild.
	Mode role.Mode
	// Derivations adds the targets' .drv closure.
	Derivations bool
	// NoBuild makes paths that would have to be realised an error: Plan
	// then returns the plan together with a *MissingError.
	NoBuild bool
}

// estimatedZstdRatio is the compressed/uncompressed size ratio assumed for
// NARs dumped from the local store, which pack compresses with zstd. It
// is an estimate from typical store contents, not a measurement.
const estimatedZstdRatio = 0.40

// nixParallel bounds concurrent nix invocations for chunked queries.
const nixParallel = 4

func (p *Planner) log() *slog.Logger {
	if p.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Log
}

func (p *Planner) nix() *nixcli.Runner {
	if p.Nix == nil {
		p.Nix = &nixcli.Runner{}
	}
	return p.Nix
}

func (p *Planner) jobs() int {
	if p.Jobs <= 0 {
		return 16
	}
	return p.Jobs
}

// group is the targets a summary reports together, and what they need.
type group struct {
	name    string
	drvs    []storepath.Path // roots of the build closure
	outputs []storepath.Path // the targets' own outputs and paths
	flakes  []string         // flake references
	roles   map[storepath.Path]role.Set
}

// Plan resolves targets and works out every path they need under opts,
// and where each comes from. Evaluation and other Nix failures are
// returned as the *nixcli.ExitError that carries Nix's message.
func (p *Planner) Plan(ctx context.Context, targets []TargetSpec, opts Options) (*Plan, error) {
	if len(targets) == 0 {
		return nil, fmt.Errorf("plan: %w: none given", ErrBadTarget)
	}
	dir := p.StoreDir
	if dir == "" {
		var err error
		if dir, err = p.nix().StoreDir(ctx); err != nil {
			return nil, fmt.Errorf("plan: %w", err)
		}
	}
	log := p.log()
	pl := &Plan{StoreDir: dir, Mode: opts.Mode, Derivations: opts.Derivations}
	for _, u := range p.Upstreams {
		pl.Upstreams = append(pl.Upstreams, u.URL)
	}

	resolved, flakes, err := p.resolveTargets(ctx, dir, targets)
	if err != nil {
		return nil, err
	}
	log.Info("resolved targets", "targets", len(targets), "derivations", countDrvs(resolved))

	// The .drv closure: only the targets themselves in runtime mode.
	walkClosure := opts.Mode != role.ModeRuntime || opts.Derivations
	known := validity{}
	g, derivers, absent, err := p.readGraph(ctx, dir, known, resolved, walkClosure)
	if err != nil {
		return nil, err
	}
	log.Info("read derivations", "count", len(g.drvs))
	outputs := g.outputs()
	if err := setOutputs(resolved, outputs); err != nil {
		return nil, err
	}
	pl.Targets = resolved

	groups := groupTargets(resolved, derivers)
	groupSeeds := make([][]seedSet, len(groups))
	var all []storepath.Path
	for i, gr := range groups {
		groupSeeds[i] = gr.seeds(g, outputs, flakes, opts, walkClosure)
		for _, s := range groupSeeds[i] {
			all = append(all, s.paths...)
		}
	}
	r := &resolver{p: p, dir: dir, items: map[storepath.Path]*Item{}, outDrv: g.outDrv(outputs), known: known}
	if err := r.resolve(ctx, all); err != nil {
		return nil, err
	}
	// Roles: each seed's role spreads over its closure.
	for i, gr := range groups {
		gr.roles = map[storepath.Path]role.Set{}
		for _, s := range groupSeeds[i] {
			for _, q := range r.closure(s.paths) {
				gr.roles[q] |= s.roles
			}
		}
		for q, rs := range gr.roles {
			r.items[q].Roles |= rs
		}
	}
	pl.groups = groups
	pl.Items = r.planned(g)
	p.warnAbsent(pl, absent)
	// A flake source is a recursive sha256 "source" path of its NAR.
	refs := flakeRefs(dir, flakes)
	for i := range pl.Items {
		if it := &pl.Items[i]; it.Fetch == nil && refs[it.Path] != "" && !it.NarHash.IsZero() {
			it.Fetch = &derivation.Fetch{URLs: []string{refs[it.Path]}, Method: storepath.Recursive, Hash: it.NarHash}
		}
	}

	if pl.FlakeRegistry, err = registry(dir, flakes); err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	if r.untrusted.Load() > 0 {
		log.Warn("ignored upstream narinfos not signed by a trusted key", "count", r.untrusted.Load())
	}
	if missing := pl.ToBuild(); opts.NoBuild && len(missing) > 0 {
		return pl, &MissingError{Items: missing}
	}
	return pl, nil
}

// setOutputs fills in the output paths of each target that names a .drv:
// those it asks for, or all.
func setOutputs(resolved []ResolvedTarget, outputs map[storepath.Path]map[string]storepath.Path) error {
	for i := range resolved {
		rt := &resolved[i]
		if rt.DrvPath == (storepath.Path{}) {
			continue
		}
		want := rt.Spec.Outputs
		if want == nil {
			want = slices.Sorted(maps.Keys(outputs[rt.DrvPath]))
		}
		rt.Outputs = map[string]storepath.Path{}
		for _, name := range want {
			out, ok := outputs[rt.DrvPath][name]
			if !ok {
				return fmt.Errorf("plan target %s: %s has no output %q", rt.Spec, rt.DrvPath, name)
			}
			rt.Outputs[name] = out
		}
	}
	return nil
}

// groupTargets gathers the resolved targets by group, in order.
func groupTargets(resolved []ResolvedTarget, derivers map[storepath.Path]storepath.Path) []*group {
	var groups []*group
	byName := map[string]*group{}
	for _, rt := range resolved {
		gr := byName[rt.Spec.Group]
		if gr == nil {
			gr = &group{name: rt.Spec.Group}
			byName[gr.name] = gr
			groups = append(groups, gr)
		}
		gr.outputs = append(gr.outputs, rt.Paths()...)
		if rt.DrvPath != (storepath.Path{}) {
			gr.drvs = append(gr.drvs, rt.DrvPath)
		}
		if d, ok := derivers[rt.Path]; ok {
			gr.drvs = append(gr.drvs, d)
		}
		if rt.Spec.Kind == TargetFlake && !slices.Contains(gr.flakes, rt.Spec.Flake) {
			gr.flakes = append(gr.flakes, rt.Spec.Flake)
		}
	}
	return groups
}

// seedSet is paths whose closures have a role.
type seedSet struct {
	roles role.Set
	paths []storepath.Path
}

// seeds are the paths whose closures gr needs under opts, by role.
func (gr *group) seeds(g *drvGraph, outputs map[storepath.Path]map[string]storepath.Path, flakes map[string]*flakeInfo, opts Options, walkClosure bool) []seedSet {
	seeds := []seedSet{{role.Runtime, gr.outputs}}
	if walkClosure {
		closure := g.closure(gr.drvs)
		var src, bld []storepath.Path
		for _, d := range closure {
			fod := g.drvs[d].fixed
			for _, out := range outputs[d] {
				if fod {
					src = append(src, out)
				} else {
					bld = append(bld, out)
				}
			}
		}
		if opts.Mode != role.ModeRuntime {
			seeds = append(seeds, seedSet{role.Source, src})
		}
		if opts.Mode == role.ModeBuild {
			seeds = append(seeds, seedSet{role.Build, bld})
		}
		if opts.Derivations {
			seeds = append(seeds, seedSet{role.Derivation, closure})
		}
	}
	var fl []storepath.Path
	for _, ref := range gr.flakes {
		fl = append(fl, flakes[ref].sources...)
	}
	return append(seeds, seedSet{role.FlakeInput, fl})
}

func countDrvs(rts []ResolvedTarget) int {
	n := 0
	for _, rt := range rts {
		if rt.DrvPath != (storepath.Path{}) {
			n++
		}
	}
	return n
}
