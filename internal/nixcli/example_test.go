package nixcli_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/nixcli"
)

// A Runner with an isolated environment runs the nix programs on PATH
// against a store of its own (the example needs them). An evaluation
// error comes back as an *ExitError holding Nix's message.
func Example() {
	ctx := context.Background()
	root, err := os.MkdirTemp("", "nixcli-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(root)
	env, err := nixcli.IsolatedEnv(root, "", "")
	if err != nil {
		log.Fatal(err)
	}
	file := filepath.Join(root, "default.nix")
	if err := os.WriteFile(file, []byte(`rec {
  src = derivation {
    name = "hello-2.12.tar.gz";
    system = "builtin";
    builder = "builtin:fetchurl";
    url = "https://example.org/hello-2.12.tar.gz";
    outputHashMode = "flat";
    outputHashAlgo = "sha256";
    outputHash = builtins.hashString "sha256" "hello";
  };
  hello = derivation {
    name = "hello-2.12";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo hello > $out" ];
    inherit src;
  };
}`), 0o644); err != nil {
		log.Fatal(err)
	}
	r := &nixcli.Runner{Env: env}

	_, err = r.Instantiate(ctx, file, []string{"goodbye"})
	var exit *nixcli.ExitError
	fmt.Println("goodbye fails in Nix:", errors.As(err, &exit) && strings.Contains(exit.NixMessage(), "goodbye"))

	drvs, err := r.Instantiate(ctx, file, []string{"hello"})
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
