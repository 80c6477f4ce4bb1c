package check

import (
	"context"
	"fmt"
	"log/slog"
	"slices"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/role"

	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// TargetsFromPlan returns what to check for a plan: each resolved target
// (a derivation's chosen outputs, or a store path), and each flake input
// source the plan carries, as a plain path named "flake input". pack
// --check passes them to Check with the bundle just written as the only
// Source.
func TargetsFromPlan(pl *plan.Plan) []Target {
	var ts []Target
	for _, rt := range pl.Targets {
		t := Target{Name: rt.Spec.Text, DrvPath: rt.DrvPath, Path: rt.Path}
		if rt.DrvPath != (storepath.Path{}) {
			for name := range rt.Outputs {
				t.Outputs = append(t.Outputs, name)
			}
			slices.Sort(t.Outputs)
		}
		ts = append(ts, t)
	}
	for _, it := range pl.Items {
		if it.Roles.Has(role.FlakeInput) {
			ts = append(ts, Target{Name: "flake input " + it.Path.Base(), Path: it.Path, FlakeInput: true, Local: it.LocalFlake()})
		}
	}
	return ts
}

// CheckBundle checks the targets of the plan a bundle was packed from
// against that bundle alone (a directory, a tar, or every volume of a
// set, whose narinfos are whole in one volume or another), plus what a
// site that imported its bases holds (pack --since, read by
// bundle.OpenBases: what they carry, and from the plan what they hold
// without carrying it), as pack --check does
// before a bundle leaves: everything the targets need must be
// substitutable from them, or buildable from what is. local answers for
// the .drvs' input sources, which evaluation makes on either side.
func CheckBundle(ctx context.Context, pl *plan.Plan, written []string, bases *bundle.Bases, local LocalStore, log *slog.Logger) (*Result, error) {
	c := &Checker{StoreDir: pl.StoreDir, Local: local, Log: log}
	for _, loc := range written {
		src, err := OpenSource(ctx, loc, pl.StoreDir, nil)
		if err != nil {
			return nil, err
		}
		defer src.Close()
		c.Sources = append(c.Sources, src)
		// Paths that travel as binary deltas have no narinfo in the
		// bundle, but its manifest names them: import rebuilds them.
		own, err := bundle.OpenBases(ctx, []string{loc})
		if err != nil {
			return nil, err
		}
		c.Sources = append(c.Sources, Source{Name: loc + " (its binary deltas)", NarInfos: own})
	}
	if bases != nil && bases.Len() > 0 {
		c.Sources = append(c.Sources,
			Source{Name: "the --since bases", NarInfos: bases, Mirror: flatIndex{bases.Flat()}},
			Source{Name: "what a site that imported the --since bases holds", NarInfos: held(pl, bases)})
	}
	return c.Check(ctx, TargetsFromPlan(pl))
}

// heldPaths answers, from the plan, for the paths a site that imported
// the bases holds though no base carries them (the closure of what they
// carry, what their own bases provided): pack --since leaves those out
// too. They are by hash part.
type heldPaths map[string]*plan.Item

func held(pl *plan.Plan, bases *bundle.Bases) heldPaths {
	known := bases.Known(pl.References)
	h := heldPaths{}
	for i := range pl.Items {
		it := &pl.Items[i]
		if known.Has(it.Path) && !known.Carried(it.Path) && it.ReferencesKnown() {
			h[it.Path.Hash] = it
		}
	}
	return h
}

func (h heldPaths) NarInfo(_ context.Context, hashPart string) (*narinfo.NarInfo, error) {
	it, ok := h[hashPart]
	if !ok {
		return nil, fmt.Errorf("%s.narinfo held through the bases: %w", hashPart, cache.ErrNotFound)
	}
	return &narinfo.NarInfo{StorePath: it.Path, NarHash: it.NarHash, NarSize: it.NarSize, References: it.References, Deriver: it.Deriver}, nil
}
