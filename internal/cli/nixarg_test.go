package cli

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"
)

// TestNixArgs parses nix-build's two-word --arg and --argstr through
// cobra, as Run does, and checks the words reach plan.Args.NixArgs
// exactly and in order, and that cobra still parses every other flag.
func TestNixArgs(t *testing.T) {
	tests := []struct {
		args    []string
		words   []string // tf.nixArgs
		targets []string // tf.installables
		attrs   []string
		err     string // substring of the error, if one
	}{{
		args:  []string{"--file", "f.nix", "--arg", "x", "1", "-A", "a", "--argstr", "y", "two words", "--arg", "x", "{ z = 2; }"},
		words: []string{"--arg", "x", "1", "--argstr", "y", "two words", "--arg", "x", "{ z = 2; }"},
		attrs: []string{"a"},
	}, {
		// Words that look like flags or hold "=" are values all the same.
		args:    []string{"--argstr", "a=b", "--jobs", "--arg", "-A", "", "t1"},
		words:   []string{"--argstr", "a=b", "--jobs", "--arg", "-A", ""},
		targets: []string{"t1"},
	}, {
		// After "--" everything is a target.
		args:    []string{"-A", "a", "--", "--arg", "x", "1"},
		attrs:   []string{"a"},
		targets: []string{"--arg", "x", "1"},
	},
		{args: []string{"--arg", "x"}, err: `invalid argument "x" for "--arg" flag: needs two words`},
		{args: []string{"-A", "a", "--argstr"}, err: "flag needs an argument: --argstr"},
		{args: []string{"--arg=x", "--file", "f"}, err: "needs two words"},
		{args: []string{"--argstr", "x", "1", "--jobs", "0"}, err: "--jobs 0: want at least 1"},
	}
	for _, tt := range tests {
		var tf targetFlags
		cmd := &cobra.Command{
			Use:           "plan",
			SilenceErrors: true,
			SilenceUsage:  true,
			RunE:          func(cmd *cobra.Command, args []string) error { return tf.parse(cmd, args) },
		}
		tf.register(cmd.Flags(), "jobs")
		cmd.SetArgs(joinNixArgs(tt.args))
		err := cmd.Execute()
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: error %v, want %q", tt.args, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.args, err)
			continue
		}
		got := struct{ Words, Targets, Attrs []string }{tf.nixArgs, tf.installables, tf.attrs}
		want := struct{ Words, Targets, Attrs []string }{tt.words, tt.targets, tt.attrs}
		if diff := cmp.Diff(want, got, cmpEmpty); diff != "" {
			t.Errorf("%q (-want +got):\n%s", tt.args, diff)
		}
	}
}

var cmpEmpty = cmp.Transformer("empty", func(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
})
