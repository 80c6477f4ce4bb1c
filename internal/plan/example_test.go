package plan_test

import (
	"context"
	"fmt"
	"os"

	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/role"
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

// Plan a package and its source from a Nix file (nixtest.HelloNix), in a
// Nix store of its own (the example needs nix-instantiate on PATH).
// Neither is in the store or on an upstream, so both must be built; pack
// would realise them first. An Upstream from OpenUpstream, such as
// https://cache.nixos.org with its key in TrustedKeys, would be asked for
// them before that.
func ExamplePlanner_Plan() {
	ctx := context.Background()
	ex, err := nixtest.NewExample("plan-example-", nixtest.HelloNix)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(ex.Root)
	nix := ex.Nix
	dir, err := nix.StoreDir(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	targets, err := plan.ParseTargets(dir, plan.Args{File: ex.File, Attrs: []string{"hello"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	p := &plan.Planner{Nix: nix, StoreDir: dir}
	pl, err := p.Plan(ctx, targets, plan.Options{Mode: role.ModeSources})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, it := range pl.Items {
		fmt.Println(it.Path.Name, it.Roles, it.Source.Kind)
	}
	// Unordered output:
	// hello-2.12 runtime build
	// hello-2.12.tar.gz source build
}
