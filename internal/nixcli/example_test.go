package nixcli_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
)

// A Runner with an isolated environment runs the nix programs on PATH
// against a store of its own (the example needs them), here on the Nix
// file nixtest.HelloNix. An evaluation error comes back as an *ExitError
// holding Nix's message.
func Example() {
	ctx := context.Background()
	ex, err := nixtest.NewExample("nixcli-example-", nixtest.HelloNix)
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(ex.Root)
	r := ex.Nix

	_, err = r.Instantiate(ctx, ex.File, []string{"goodbye"})
	var exit *nixcli.ExitError
	fmt.Println("goodbye fails in Nix:", errors.As(err, &exit) && strings.Contains(exit.NixMessage(), "goodbye"))

	drvs, err := r.Instantiate(ctx, ex.File, []string{"hello"})
	if err != nil {
		log.Fatal(err)
	}
	derivations, err := r.ShowDerivationClosure(ctx, drvs...)
	if err != nil {
		log.Fatal(err)
	}
	for _, d := range derivations {
		if d.IsFixedOutput() {
			fmt.Println("source:", d.Outputs["out"].Path.Name, d.Env["url"])
		}
	}
	// Output:
	// goodbye fails in Nix: true
	// source: hello-2.12.tar.gz https://example.org/hello-2.12.tar.gz
}

func ExampleParseVersion() {
	v, err := nixcli.ParseVersion("nix (Determinate Nix 3.6.2) 2.26.3")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(v.Impl, v.Major, v.Minor, v.AtLeast(2, 20))
	// Output: Determinate Nix 3.6.2 2 26 true
}
