package check

import (
	"slices"

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
		if it.Roles.Has(plan.RoleFlakeInput) {
			ts = append(ts, Target{Name: "flake input " + it.Path.Base(), Path: it.Path})
		}
	}
	return ts
}
