package pack_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/pack"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
)

// Pack a package into a signed bundle directory, building it with Nix
// first, in a store of its own (the example needs nix on PATH). With
// Planner.Upstreams, what an upstream cache has would be copied from it
// instead, and a Progress shows each step.
func Example() {
	ctx := context.Background()
	ex, err := nixtest.NewExample("pack-example-", `{
  greeting = derivation {
    name = "greeting";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo hello > $out" ];
  };
}`)
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
	targets, err := plan.ParseTargets(dir, plan.Args{File: ex.File, Attrs: []string{"greeting"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	key, _, err := signing.Generate("bundle-1")
	if err != nil {
		fmt.Println(err)
		return
	}
	p := &pack.Packer{Planner: &plan.Planner{Nix: nix, StoreDir: dir}}
	res, err := p.Pack(ctx, targets, pack.Options{
		Options: plan.Options{Mode: role.ModeRuntime},
		Out:     filepath.Join(ex.Root, "bundle"),
		Key:     &key,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("signed:", res.Signed)
	for _, r := range res.Paths {
		fmt.Println(r.Path.Name, r.Roles, r.Source, r.NarSize, "bytes of NAR")
	}
	// Output:
	// signed: true
	// greeting runtime build 120 bytes of NAR
}
