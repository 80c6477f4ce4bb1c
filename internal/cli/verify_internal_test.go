package cli

import (
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
)

func TestSummaryRebuilt(t *testing.T) {
	for n, want := range map[int]string{1: "(1 NAR rebuilt from its binary delta)", 2: "(2 NARs rebuilt from binary deltas)"} {
		got := summary(&bundle.Report{Source: "b", Paths: 3, Rebuilt: n, Signer: "k"}, nil)
		if !strings.Contains(got, want) {
			t.Errorf("summary with %d rebuilt = %q, want %q", n, got, want)
		}
	}
}
