package plan_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/plan"
)

// FuzzParseTarget checks that ParseTarget never panics, fails only with
// ErrBadTarget, and gives specs that agree with their text.
func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{".#hello", ".", "path:/d#a.b", `.#nixosConfigurations."a.b"`, hello, drv + "!out,dev", drv + "!", "#x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := plan.ParseTarget(dir, s)
		if err != nil {
			if !errors.Is(err, plan.ErrBadTarget) {
				t.Fatalf("ParseTarget(%q): error %v is not ErrBadTarget", s, err)
			}
			return
		}
		switch got.Kind {
		case plan.TargetPath:
			// The text as written, or the store path s is a file in or
			// links to (./result).
			if got.Text != s && got.Text != got.Path.String() {
				t.Fatalf("ParseTarget(%q).Text = %q", s, got.Text)
			}
			if !strings.HasPrefix(s, got.Path.String()) && (strings.HasPrefix(s, string(dir)+"/") || !strings.Contains(s, "/")) {
				t.Fatalf("ParseTarget(%q).Path = %s", s, got.Path)
			}
		case plan.TargetFlake:
			// The text as written, but for a relative flake path made absolute.
			if rel := strings.TrimPrefix(got.Text, "path:"); got.Text != s && (!strings.HasPrefix(rel, "/") ||
				!strings.HasSuffix(got.Text, strings.TrimPrefix(s, got.Flake)) || strings.HasPrefix(strings.TrimPrefix(got.Flake, "path:"), "/")) {
				t.Fatalf("ParseTarget(%q).Text = %q", s, got.Text)
			}
			if got.Flake == "" || !strings.HasPrefix(got.Installable(), got.Flake) {
				t.Fatalf("ParseTarget(%q) = %+v", s, got)
			}
		default:
			t.Fatalf("ParseTarget(%q).Kind = %d", s, got.Kind)
		}
	})
}

// FuzzReadPaths checks that ReadPaths never panics and returns only store
// paths, each named in the input.
func FuzzReadPaths(f *testing.F) {
	f.Add("# c\n" + hello + "\n\n" + drv + "!out\n")
	f.Add(hello + "\r\n")
	f.Add("\xfd7zXZ\x00garbage")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := plan.ReadPaths(dir, strings.NewReader(s), "fuzz")
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz") {
				t.Fatalf("ReadPaths error %q does not name the file", err)
			}
			return
		}
		for _, ts := range got {
			if ts.Kind != plan.TargetPath || (!strings.HasPrefix(s, "\xfd7zXZ") && !strings.Contains(s, ts.Path.String())) {
				t.Fatalf("ReadPaths(%q) gave %+v", s, ts)
			}
		}
	})
}
