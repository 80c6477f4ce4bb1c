package check_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/check"
)

// TestWriteTextCounts checks the summary's counts of one: "1 path", not
// "1 paths", and that the paths found in the --against SOURCEs are not
// said to be "from sources", which read as fixed-output sources.
func TestWriteTextCounts(t *testing.T) {
	tests := []struct {
		sum  check.Summary
		want []string
	}{
		{check.Summary{Available: 1, FromSources: 1, ToBuild: 1, Blocked: 1, NotNeeded: 1}, []string{
			"  available       1 path (1 substitutable from --against, ",
			"  to build        1 path\n",
			"  blocked         1 path, 0 root causes\n",
			"  not needed      1 output of the build closure",
		}},
		{check.Summary{Available: 2, ToBuild: 0, Blocked: 3, NotNeeded: 4}, []string{
			"  available       2 paths (",
			"  to build        0 paths\n",
			"  blocked         3 paths, ",
			"  not needed      4 outputs of",
		}},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		if err := (&check.Result{Summary: tt.sum}).WriteText(&b); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(b.String(), "from sources") {
			t.Errorf("summary %+v:\n%s\nsays \"from sources\"", tt.sum, b.String())
		}
		for _, w := range tt.want {
			if !strings.Contains(b.String(), w) {
				t.Errorf("summary %+v:\n%s\nwant %q", tt.sum, b.String(), w)
			}
		}
	}
}
