package role_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/role"
)

// FuzzParse parses role and mode names as flags give them. A role is one
// of the five, named as parsed; a mode is named as parsed; errors quote
// the name, and a mode's wraps ErrBadMode.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		if r, err := role.Parse(s); err != nil {
			if !strings.Contains(err.Error(), fmt.Sprintf("%q", s)) {
				t.Errorf("Parse(%q): error %q does not quote the name", s, err)
			}
		} else if names := r.Names(); len(names) != 1 || names[0] != s || r.String() != s {
			t.Errorf("Parse(%q) = %v, named %q", s, r, names)
		}
		if m, err := role.ParseMode(s); err != nil {
			if !errors.Is(err, role.ErrBadMode) || !strings.HasPrefix(err.Error(), fmt.Sprintf("mode %q: ", s)) {
				t.Errorf("ParseMode(%q): error %q: want ErrBadMode quoting the mode", s, err)
			}
		} else if m.String() != s {
			t.Errorf("ParseMode(%q) = %v", s, m)
		}
	})
}
