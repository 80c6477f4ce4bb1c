package pack

import (
	"context"
	"fmt"
	"slices"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/progress"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// planAndRealise plans targets and, unless NoBuild, realises whatever must
// be built and plans again, until nothing is left to build. What the
// bases hold (Known) is left out, so it is never built.
func (p *Packer) planAndRealise(ctx context.Context, targets []plan.TargetSpec, opts plan.Options, bases *bundle.Bases) (*plan.Plan, []storepath.Path, error) {
	prog, log := p.progress(), p.log()
	var built []storepath.Path
	// Realising normally completes every closure at once; the bound only
	// stops a store that keeps losing paths from looping forever.
	for round := 0; ; round++ {
		prog.Phase(PhasePlan, 0, 0)
		pl, err := p.Planner.Plan(ctx, targets, plan.Options{Mode: opts.Mode, Derivations: opts.Derivations})
		if err != nil {
			return nil, nil, err
		}
		if err := pl.CheckTargetPaths(); err != nil {
			return nil, nil, err // "plan target X: problem", as the planner's errors
		}
		known := bases.Known(pl.References)
		var missing []*plan.Item
		for _, it := range pl.ToBuild() {
			if !known.Has(it.Path) {
				missing = append(missing, it)
			}
		}
		if len(missing) == 0 {
			return pl, built, nil
		}
		if opts.NoBuild {
			return pl, nil, fmt.Errorf("pack: %w", &plan.MissingError{Items: missing})
		}
		if round == 2 {
			return nil, nil, fmt.Errorf("pack: %s still missing after realising them, such as %s", progress.Plural(len(missing), "path"), missing[0].Path)
		}
		want := realiseArgs(missing)
		log.Info("realising with Nix", "paths", len(missing), "derivations", len(want))
		prog.Phase(PhaseRealise, len(missing), 0)
		if err := p.realise(ctx, want); err != nil {
			return nil, nil, fmt.Errorf("pack: realise: %w", err)
		}
		for _, it := range missing {
			built = append(built, it.Path)
			prog.Step(it.Path.String(), "build", 0)
		}
	}
}

// realise realises paths with Nix, telling Progress (if it hears
// activities) what is being built and BuildLog every builder line. A
// failed build's error repeats its last lines only when BuildLog did not
// hear them.
func (p *Packer) realise(ctx context.Context, paths []storepath.Path) error {
	opts := nixcli.RealiseOptions{BuildLog: p.BuildLog}
	if p.BuildLog != nil {
		opts.LogLines = -1
	}
	if ap, ok := p.progress().(ActivityProgress); ok {
		opts.Activity = ap.Activity
	}
	if wp, ok := p.progress().(WorkProgress); ok {
		opts.Work = wp.Work
	}
	if bp, ok := p.progress().(BuildProgress); ok {
		opts.Builds = func(c nixcli.BuildCount) { bp.Builds(c.Done, c.Total, c.Failed, c.Finished) }
		opts.BuildPhase = bp.BuildPhase
		if p.BuildLog == nil {
			opts.BuildLog = bp.BuildLine
		}
	}
	if cp, ok := p.progress().(CopyProgress); ok {
		opts.Copies = func(c nixcli.CopyCount) { cp.Copies(progress.CopyCount(c)) }
	}
	_, err := p.nix().Realise(ctx, opts, paths...)
	return err
}

// realiseArgs is what to pass nix-store --realise for items: each one's
// derivation, or the path itself when no derivation is known.
func realiseArgs(items []*plan.Item) []storepath.Path {
	var out []storepath.Path
	for _, it := range items {
		if it.DrvPath != (storepath.Path{}) {
			out = append(out, it.DrvPath)
		} else {
			out = append(out, it.Path)
		}
	}
	slices.SortFunc(out, storepath.Compare)
	return slices.Compact(out)
}
