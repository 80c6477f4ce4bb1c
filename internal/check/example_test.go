package check_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/nix-airgap/nix-airgap/internal/check"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Checking a derivation's outputs against a bundle directory, as pack
// --check does with the bundle it just wrote, and inside an airgap against
// the cache served there.
func ExampleChecker_Check() {
	ctx := context.Background()
	dir := storepath.Dir("/nix/store")
	drv, err := dir.Parse("/nix/store/7rjj86a15146cq1d3qy068lml7n8ykzm-hello-2.12.drv")
	if err != nil {
		fmt.Println(err)
		return
	}
	src, err := check.OpenSource(ctx, "/srv/bundles/hello", dir, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	c := &check.Checker{StoreDir: dir, Sources: []check.Source{src}, Local: &nixcli.Runner{}}
	res, err := c.Check(ctx, []check.Target{{Name: "hello", DrvPath: drv}})
	if err != nil {
		fmt.Println(err)
		return
	}
	res.WriteText(os.Stdout)
	if errors.Is(res.Err(), check.ErrBlocked) {
		for _, rc := range res.RootCauses {
			fmt.Println("missing:", rc.Path, rc.FixedOutput.URLs)
		}
	}
}
