package derivation_test

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/nix-airgap/nix-airgap/internal/derivation"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

func ExampleDerivation_FixedOutput() {
	d, err := derivation.ReadFile("testdata/drv/2l6x5drcpicvdkhvm6b6pjvp71q1d63j-flat.tar.gz.drv", storepath.DefaultDir)
	if err != nil {
		panic(err)
	}
	method, h, _ := d.FixedOutput()
	out, _ := d.PredictFixedOutputPath()
	mirror, _ := d.MirrorPath()
	fmt.Println(method == storepath.Flat, h.SRI())
	fmt.Println(out.Base())
	fmt.Println(d.FetchURLs(), mirror)
	// Output:
	// true sha256-aMXM2tBlXYFvRF1SKj2l8NK8AyTWeuFluZPijstZVQY=
	// 5p7bmf9ijx96plli15fakmfvbzf9qxsd-flat.tar.gz
	// [http://127.0.0.1:1/mirror/flat.tar.gz] sha256/68c5ccdad0655d816f445d522a3da5f0d2bc0324d67ae165b993e28ecb595506
}

// Predicting the .drv and output paths of a changed derivation: clear the
// outputs, predict them, fill them in, then name the .drv.
func ExampleDerivation_PredictOutputPaths() {
	d, err := derivation.ReadFile("testdata/drv/gk3hqc4d2d6rggnh0q2qdnyysi5nsifd-top.drv", storepath.DefaultDir)
	if err != nil {
		panic(err)
	}
	// A real store keeps each .drv at its store path, so
	// derivation.FileLoader{} would do; these are under testdata.
	loader := derivation.LoaderFunc(func(_ context.Context, p storepath.Path) (*derivation.Derivation, error) {
		return derivation.ReadFile(filepath.Join("testdata/drv", p.Base()), p.Dir)
	})
	hasher := derivation.NewHasher(loader)

	d.Env["extra"] = "changed"
	for name := range d.Outputs {
		d.Outputs[name] = derivation.Output{}
		d.Env[name] = ""
	}
	paths, err := d.PredictOutputPaths(context.Background(), hasher)
	if err != nil {
		panic(err)
	}
	for name, p := range paths {
		d.Outputs[name] = derivation.Output{Path: p}
		d.Env[name] = p.String()
	}
	drvPath, err := d.DrvPath()
	if err != nil {
		panic(err)
	}
	fmt.Println(paths["out"].Base())
	fmt.Println(drvPath.Base())
	// Output:
	// 3s1jib85apn2p1ji3h1a7462daqlci5b-top
	// lyc1k7gic5khx6d0ikl6qzd1km5pg09z-top.drv
}
