package nixcli_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/nix-airgap/nix-airgap/internal/nixcli"
)

// A zero Runner runs nix from PATH with the caller's environment. An
// evaluation error comes back as an *ExitError holding Nix's message.
func Example() {
	ctx := context.Background()
	var r nixcli.Runner
	drvs, err := r.Instantiate(ctx, "default.nix", []string{"hello"})
	var exit *nixcli.ExitError
	if errors.As(err, &exit) {
		log.Fatalf("nix-instantiate failed:\n%s", exit.NixMessage())
	}
	if err != nil {
		log.Fatal(err)
	}
	derivations, err := r.ShowDerivationClosure(ctx, drvs...)
	if err != nil {
		log.Fatal(err)
	}
	for _, d := range derivations {
		if d.IsFixedOutput() {
			fmt.Println("source:", d.Outputs["out"].Path)
		}
	}
}

func ExampleParseVersion() {
	v, err := nixcli.ParseVersion("nix (Determinate Nix 3.6.2) 2.26.3")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(v.Impl, v.Major, v.Minor, v.AtLeast(2, 20))
	// Output: Determinate Nix 3.6.2 2 26 true
}
