package cli

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"
)

// TestListFlags: a repeatable flag adds each argument whole, and one that
// takes a list as nix.conf does adds each space-separated word; --public-key
// and its aliases split alike, each key remembering the flag it came by.
func TestListFlags(t *testing.T) {
	tests := []struct {
		args      []string
		list      []string
		keys      []keyArg
		listSplit bool
	}{
		{
			args: []string{"--list", "a b", "--list", " c ", "--public-key", "k1 k2", "--trusted-public-key", "k3"},
			list: []string{"a b", " c "},
			keys: []keyArg{{"public-key", "k1 k2"}, {"trusted-public-key", "k3"}},
		},
		{
			args:      []string{"--list", "a  b", "--list", "\tc\n", "--list", "", "--trusted-public-keys", " k1  k2 ", "--trusted-public-keys", ""},
			list:      []string{"a", "b", "c"},
			keys:      []keyArg{{"trusted-public-keys", "k1"}, {"trusted-public-keys", "k2"}},
			listSplit: true,
		},
	}
	for _, tt := range tests {
		var list []string
		var keys []keyArg
		fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
		fs.Var(listFlag{&list, tt.listSplit, "X"}, "list", "")
		addPublicKeyFlags(fs, &keys, "key")
		if err := fs.Parse(tt.args); err != nil {
			t.Fatalf("%q: %v", tt.args, err)
		}
		if diff := cmp.Diff(tt.list, list); diff != "" {
			t.Errorf("%q: list (-want +got):\n%s", tt.args, diff)
		}
		if diff := cmp.Diff(tt.keys, keys, cmp.AllowUnexported(keyArg{})); diff != "" {
			t.Errorf("%q: keys (-want +got):\n%s", tt.args, diff)
		}
	}
}
