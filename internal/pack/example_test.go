package pack_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"

	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/pack"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/progress"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
)

// Pack a flake's package and its build closure into a signed bundle
// directory, copying what the local store lacks from an upstream cache.
func Example() {
	ctx := context.Background()
	nix := &nixcli.Runner{}
	dir, err := nix.StoreDir(ctx)
	if err != nil {
		log.Fatal(err)
	}
	upstream, err := plan.OpenUpstream(ctx, "https://cache.example.org", dir)
	if err != nil {
		log.Fatal(err)
	}
	upKey, err := signing.ParsePublicKey("cache.example.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=")
	if err != nil {
		log.Fatal(err)
	}
	key, err := signing.LoadSecretKey("/etc/nix-airgap/bundle.sec")
	if err != nil {
		log.Fatal(err)
	}
	targets, err := plan.ParseTargets(dir, plan.Args{Installables: []string{".#hello"}})
	if err != nil {
		log.Fatal(err)
	}
	rep := progress.New(os.Stderr, progress.Lines)
	defer rep.Close()
	p := &pack.Packer{
		Planner: &plan.Planner{
			Nix: nix, StoreDir: dir,
			Upstreams:   []plan.Upstream{upstream},
			TrustedKeys: signing.NewKeyring(upKey),
		},
		Logger:   slog.Default(),
		Progress: rep,
	}
	res, err := p.Pack(ctx, targets, pack.Options{
		Options: plan.Options{Mode: role.ModeBuild},
		Out:     "/media/usb/bundle",
		Key:     &key,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("bundle %s: %d paths\n", res.ID, len(res.Paths))
}
