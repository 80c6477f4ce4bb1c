package nixcli_test

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/nixcli"
)

// TestNixNotOnPath checks that a machine without Nix is told what to
// install, not only that an executable was not found.
func TestNixNotOnPath(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := (&nixcli.Runner{}).Version(t.Context())
	if !errors.Is(err, exec.ErrNotFound) || !strings.Contains(err.Error(), "this needs Nix on PATH (on Debian or Ubuntu: apt-get install nix-bin)") {
		t.Errorf("Version without nix on PATH = %v, want exec.ErrNotFound saying what to install", err)
	}
}
