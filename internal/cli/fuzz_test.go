package cli

import (
	"fmt"
	"strings"
	"testing"
)

// FuzzParseNixVersion parses client-config's --nix-version. A version it
// takes is a Nix from 2.8 on, read from the whole value, and its MAJOR.MINOR parses
// to the same numbers (leading zeros aside); an error quotes the value.
func FuzzParseNixVersion(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		v, err := parseNixVersion(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), fmt.Sprintf("client-config: --nix-version %q: ", s)) {
				t.Fatalf("parseNixVersion(%q): error %q does not quote the value", s, err)
			}
			return
		}
		short := fmt.Sprintf("%d.%d", v.Major, v.Minor)
		if v.Impl != "Nix" || v.Raw != s || !v.AtLeast(2, 8) {
			t.Fatalf("parseNixVersion(%q) = %+v", s, v)
		}
		if again, err := parseNixVersion(short); err != nil || again.Major != v.Major || again.Minor != v.Minor {
			t.Fatalf("parseNixVersion(%q) = %+v, but parseNixVersion(%q) = %+v, %v", s, v, short, again, err)
		}
	})
}
