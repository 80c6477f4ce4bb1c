package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/nix-airgap/nix-airgap/internal/demo"
)

func demoCommand(e *env) *cobra.Command {
	d := &demo.Demo{}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the whole airgap story on a built-in example",
		Long: "demo builds a small example world with stock Nix from a local \"internet\",\n" +
			"packs and verifies it, stops the internet and wipes the store, then, inside a\n" +
			"network namespace with only loopback, imports and serves the bundle and builds\n" +
			"the world again, plus a changed variant rebuilt from the bundled sources.\n" +
			"Nix runs isolated under the work dir: the machine's own store and Nix\n" +
			"configuration are not touched.\n\n" +
			detailsLine("demo") + "\n\n" +
			exitHelp(),
		Args: exactArgs(0),
		Example: "  nix-airgap demo\n" +
			"  nix-airgap demo --dir /tmp/airgap-demo",
		RunE: func(cmd *cobra.Command, _ []string) error {
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("demo: find own binary: %w", err)
			}
			// An earlier demo's files would be in the way of this one's,
			// and the user's own of either.
			if ents, err := os.ReadDir(d.Dir); d.Dir != "" && err == nil && len(ents) > 0 {
				return usageError{fmt.Errorf("demo: --dir %s: not empty (an earlier demo's?): give a new or empty directory", d.Dir)}
			}
			d.Exe, d.Out, d.Log = exe, e.stdout, e.log
			return d.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&d.Dir, "dir", "", "work `DIR` to use and keep, new or empty (default: a temp dir, removed afterwards)")
	cmd.Flags().BoolVar(&d.Keep, "keep", false, "keep the temp work dir")
	cmd.Flags().BoolVar(&d.NoIsolation, "no-isolation", false, "run the offline steps without a network namespace")
	return cmd
}
