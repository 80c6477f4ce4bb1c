package nixtest

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/nix-airgap/nix-airgap/internal/nixcli"
)

// HelloNix is the Nix file the examples of the packages that drive Nix
// share: hello-2.12, built by /bin/sh, and its source hello-2.12.tar.gz, a
// fixed-output derivation builtin:fetchurl would fetch from example.org
// (no example lets it).
const HelloNix = `rec {
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
}`

// Example is where an Example that drives Nix works, as a test works in
// New's Nix, though with no testing.T to clean up after it: a temp
// directory holding a Nix store of its own (nixcli.IsolatedEnv) and a
// Nix file.
type Example struct {
	// Root is the temp directory; the example removes it when done.
	Root string
	// File is Root/default.nix.
	File string
	// Nix runs the nix programs on PATH against the store under Root.
	Nix *nixcli.Runner
}

// NewExample makes an Example in a new temp directory named after
// pattern (as os.MkdirTemp takes it), with expr in its File.
func NewExample(pattern, expr string) (*Example, error) {
	root, err := os.MkdirTemp("", pattern)
	if err != nil {
		return nil, fmt.Errorf("nixtest example: %w", err)
	}
	env, err := nixcli.IsolatedEnv(filepath.Join(root, "nix"), "", "")
	if err == nil {
		err = os.WriteFile(filepath.Join(root, "default.nix"), []byte(expr), 0o644)
	}
	if err != nil {
		os.RemoveAll(root)
		return nil, fmt.Errorf("nixtest example: %w", err)
	}
	return &Example{Root: root, File: filepath.Join(root, "default.nix"), Nix: &nixcli.Runner{Env: env}}, nil
}
