package check_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/check"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
)

// Check a package (hello of nixtest.HelloNix) against a cache that lacks
// its source: the download that an offline build would need is the root
// cause. Nix evaluates the package in a store of its own (the example
// needs nix-instantiate on PATH); pack --check does the same against the
// bundle it wrote, and inside an airgap check runs against the served
// cache.
func ExampleChecker_Check() {
	ctx := context.Background()
	ex, err := nixtest.NewExample("check-example-", nixtest.HelloNix)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(ex.Root)
	nix := ex.Nix
	drvs, err := nix.Instantiate(ctx, ex.File, []string{"hello"})
	if err != nil {
		fmt.Println(err)
		return
	}
	dir := drvs[0].Dir
	if _, err := cache.CreateDir(filepath.Join(ex.Root, "cache"), dir, 0); err != nil {
		fmt.Println(err)
		return
	}
	src, err := check.OpenSource(ctx, filepath.Join(ex.Root, "cache"), dir, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer src.Close()
	c := &check.Checker{StoreDir: dir, Sources: []check.Source{src}, Local: nix}
	res, err := c.Check(ctx, []check.Target{{Name: "hello", DrvPath: drvs[0]}})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, t := range res.Targets {
		fmt.Println(t.Name, t.Class)
	}
	if errors.Is(res.Err(), check.ErrBlocked) {
		for _, rc := range res.RootCauses {
			fmt.Println("missing:", rc.Path.Name, rc.FixedOutput.URLs)
		}
	}
	// Output:
	// hello blocked
	// missing: hello-2.12.tar.gz [https://example.org/hello-2.12.tar.gz]
}
