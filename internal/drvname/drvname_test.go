package drvname_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/drvname"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want drvname.Name
	}{
		{"apache-httpd-2.0.48", drvname.Name{"apache-httpd", "2.0.48"}},
		{"hello-2.12.1", drvname.Name{"hello", "2.12.1"}},
		{"hello", drvname.Name{"hello", ""}},
		{"demo-system", drvname.Name{"demo-system", ""}},
		{"hello-1.0-man", drvname.Name{"hello", "1.0-man"}},
		{"glibc-2.39-52-bin", drvname.Name{"glibc", "2.39-52-bin"}},
		{"source", drvname.Name{"source", ""}},
		{"hello-1.0.tar.gz", drvname.Name{"hello", "1.0.tar.gz"}},
		{"foo--1", drvname.Name{"foo", "-1"}},
		{"foo-", drvname.Name{"foo-", ""}},
		{"-1", drvname.Name{"", "1"}},
		{"-", drvname.Name{"-", ""}},
		{"", drvname.Name{"", ""}},
		{"x-_y", drvname.Name{"x", "_y"}},
		{"x-.y", drvname.Name{"x", ".y"}},
		{"python3.12-requests-2.31.0", drvname.Name{"python3.12-requests", "2.31.0"}},
		{"linux-6.6-modules", drvname.Name{"linux", "6.6-modules"}},
		{"firefox-unwrapped-120.0", drvname.Name{"firefox-unwrapped", "120.0"}},
		{"nixos-system-host-24.05.20240101", drvname.Name{"nixos-system-host", "24.05.20240101"}},
		{"x-\u00e9", drvname.Name{"x", "\u00e9"}}, // not an ASCII letter
	} {
		got := drvname.Parse(tc.in)
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("Parse(%q) (-want +got):\n%s", tc.in, diff)
		}
		if got.String() != tc.in {
			t.Errorf("Parse(%q).String() = %q", tc.in, got.String())
		}
	}
}

// FuzzParse checks Parse's invariants: the parts join back to the input,
// and the name holds no "-" that Nix would have split at.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"hello-2.12", "foo--1", "-", "a-b-c-1", "x-\u00e9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n := drvname.Parse(s)
		if n.String() != s {
			t.Fatalf("Parse(%q) = %#v, which joins to %q", s, n, n.String())
		}
		if n.Version != "" && (!strings.HasPrefix(s, n.Name+"-") || isLetter(n.Version[0])) {
			t.Fatalf("Parse(%q) = %#v: the version does not start after a dash and a non-letter", s, n)
		}
		for i := 0; i+1 < len(n.Name); i++ {
			if n.Name[i] == '-' && !isLetter(n.Name[i+1]) {
				t.Fatalf("Parse(%q) = %#v: the name has a dash before a non-letter", s, n)
			}
		}
	})
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
