package role_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nix-airgap/nix-airgap/internal/role"
)

func TestSet(t *testing.T) {
	r := role.Runtime | role.FlakeInput | role.Derivation
	if diff := cmp.Diff([]string{"runtime", "derivation", "flake-input"}, r.Names()); diff != "" {
		t.Errorf("Names (-want +got):\n%s", diff)
	}
	if !r.Has(role.Runtime|role.Derivation) || r.Has(role.Source) || r.Has(role.Runtime|role.Build) {
		t.Errorf("Has on %v is wrong", r)
	}
	if got := (r | role.Build).String(); got != "runtime,build,derivation,flake-input" {
		t.Errorf("String = %q", got)
	}
	if got := role.Set(0).Names(); got != nil {
		t.Errorf("empty set's Names = %q, want none", got)
	}
}

func TestParse(t *testing.T) {
	for _, name := range role.All.Names() {
		r, err := role.Parse(name)
		if err != nil || r.String() != name {
			t.Errorf("Parse(%q) = %v, %v", name, r, err)
		}
	}
	for _, bad := range []string{"", "everything", "Runtime", "runtime,source"} {
		if _, err := role.Parse(bad); err == nil || !strings.Contains(err.Error(), "unknown role") {
			t.Errorf("Parse(%q) error = %v, want unknown role", bad, err)
		}
	}
}

func TestParseMode(t *testing.T) {
	for _, m := range []role.Mode{role.ModeRuntime, role.ModeSources, role.ModeBuild} {
		if got, err := role.ParseMode(m.String()); err != nil || got != m {
			t.Errorf("ParseMode(%q) = %v, %v", m, got, err)
		}
	}
	for _, bad := range []string{"", "all", "Build", "Mode(7)"} {
		if _, err := role.ParseMode(bad); !errors.Is(err, role.ErrBadMode) {
			t.Errorf("ParseMode(%q) error = %v, want ErrBadMode", bad, err)
		}
	}
	if role.Mode(0) != role.ModeBuild {
		t.Error("the zero Mode is not ModeBuild")
	}
	if got := role.Mode(7).String(); got != "Mode(7)" {
		t.Errorf("Mode(7).String() = %q", got)
	}
}

func ExampleSet() {
	r, _ := role.Parse("flake-input")
	r |= role.Runtime
	fmt.Println(r, r.Has(role.Runtime), r.Has(role.Source))
	// Output: runtime,flake-input true false
}
