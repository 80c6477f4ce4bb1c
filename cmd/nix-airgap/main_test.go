package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/nixtest"
)

// asMain makes the test binary act as nix-airgap itself when the demo
// (or any test) runs it as a subprocess.
const asMain = "NIX_AIRGAP_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMain) == "1" {
		main()
	}
	os.Exit(m.Run())
}

// TestDemo runs the README's first command end to end with real Nix.
func TestDemo(t *testing.T) {
	nixtest.Require(t)
	t.Setenv(asMain, "1")
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"demo"}, &stdout, &stderr)
	t.Logf("demo output:\n%s", stdout.String())
	if err != nil {
		t.Fatalf("demo: %v\nstderr:\n%s", err, stderr.String())
	}
	for _, want := range []string{
		"nothing built",
		"derivations rebuilt from the bundled sources",
		"network namespace with only loopback",
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
}
