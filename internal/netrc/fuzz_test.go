package netrc_test

import (
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/netrc"
)

// FuzzParse checks that Parse never panics and that what it finds, it
// finds again by name.
func FuzzParse(f *testing.F) {
	f.Add([]byte("machine cache.airgap login site password s3cret\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		nf, err := netrc.Parse(in)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, m := range nf.Machines {
			// The first entry of a name is the one Lookup answers with.
			first := !seen[strings.ToLower(m.Name)]
			seen[strings.ToLower(m.Name)] = true
			if m.Name == "" || m.Login == "" || !first {
				continue
			}
			if _, _, ok := nf.Lookup(m.Name); !ok {
				t.Errorf("Lookup(%q) found nothing in %q", m.Name, in)
			}
		}
	})
}
