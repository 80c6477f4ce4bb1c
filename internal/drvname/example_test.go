package drvname_test

import (
	"fmt"

	"github.com/nix-airgap/nix-airgap/internal/drvname"
)

func ExampleParse() {
	for _, s := range []string{"apache-httpd-2.0.48", "hello-1.0-man", "demo-system"} {
		n := drvname.Parse(s)
		fmt.Printf("%s: name %q, version %q\n", s, n.Name, n.Version)
	}
	// Output:
	// apache-httpd-2.0.48: name "apache-httpd", version "2.0.48"
	// hello-1.0-man: name "hello", version "1.0-man"
	// demo-system: name "demo-system", version ""
}
