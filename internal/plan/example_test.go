package plan_test

import (
	"context"
	"fmt"
	"os"

	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
)

func ExampleParseTarget() {
	for _, s := range []string{
		".#nixosConfigurations.web",
		"/nix/store/1c7fa3z2z7pxq2yl5v0glm1b2w8c1y1d-hello-2.12.drv!out",
	} {
		t, err := plan.ParseTarget("/nix/store", s)
		if err != nil {
			fmt.Println(err)
			continue
		}
		switch t.Kind {
		case plan.TargetFlake:
			fmt.Println("flake:", t.Installable())
		case plan.TargetPath:
			fmt.Println("store path:", t.Path.Name, t.Outputs)
		}
	}
	// Output:
	// flake: .#nixosConfigurations.web.config.system.build.toplevel
	// store path: hello-2.12.drv [out]
}

// A Planner with the local Nix and one upstream cache; pack then realises
// Plan.ToBuild and copies every item from its Source.
func ExamplePlanner_Plan() {
	ctx := context.Background()
	nix := &nixcli.Runner{}
	dir, err := nix.StoreDir(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	targets, err := plan.ParseTargets(dir, plan.Args{Installables: []string{".#hello"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	key, _ := signing.ParsePublicKey("cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=")
	upstream, err := plan.OpenUpstream(ctx, "https://cache.nixos.org", dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	p := &plan.Planner{Nix: nix, StoreDir: dir, TrustedKeys: signing.NewKeyring(key), Upstreams: []plan.Upstream{upstream}}
	pl, err := p.Plan(ctx, targets, plan.Options{Mode: role.ModeSources})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	for _, it := range pl.Items {
		fmt.Println(it.Path, it.Roles, it.Source.Kind)
	}
	_ = pl.Summary().WriteTable(os.Stdout)
}
