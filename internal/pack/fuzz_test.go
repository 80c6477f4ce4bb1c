package pack_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/channel"
	"github.com/nix-airgap/nix-airgap/internal/pack"
)

// FuzzParseChannel parses --channel NAME=SOURCE. A channel it takes has
// a name channel.CheckName accepts and a source, and written back as
// NAME=SOURCE parses to itself; an error quotes the value, or the name
// with ErrBadName.
func FuzzParseChannel(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		c, err := pack.ParseChannel(s)
		if err != nil {
			name, _, _ := strings.Cut(s, "=")
			if !strings.HasPrefix(err.Error(), fmt.Sprintf("channel %q: ", s)) && !(errors.Is(err, channel.ErrBadName) && strings.HasPrefix(err.Error(), fmt.Sprintf("channel %q: ", name))) {
				t.Fatalf("ParseChannel(%q): error %q quotes neither the value nor its name", s, err)
			}
			return
		}
		if channel.CheckName(c.Name) != nil || c.Source == "" {
			t.Fatalf("ParseChannel(%q) = %+v", s, c)
		}
		if again, err := pack.ParseChannel(c.Name + "=" + c.Source); err != nil || again != c {
			t.Fatalf("ParseChannel(%q) = %+v, but written back %+v, %v", s, c, again, err)
		}
	})
}
