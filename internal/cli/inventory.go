package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/nix-airgap/nix-airgap/internal/atomicfile"
	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/progress"
)

func inventoryCommand(e *env) *cobra.Command {
	var cacheDir, out string
	cmd := &cobra.Command{
		Use:   "inventory --cache DIR|s3://BUCKET?... [--out FILE]",
		Short: "Write what a cache holds, for packing deltas against it",
		Long: "inventory writes what a long-lived cache (import's --cache) holds as a small\n" +
			"JSON file (docs/bundle-format.md §7): every store path with its NAR hash and\n" +
			"size, and the imported bundles that brought it. Carried back to the connected\n" +
			"side, it is a base for `pack --since FILE`, which then leaves out everything\n" +
			"the cache has, however it got there. It is not signed, and needs no key: a\n" +
			"delta packed against a wrong inventory is refused by import, naming the paths\n" +
			"the cache lacks. It lists the store paths the site holds, so treat it as you\n" +
			"treat the cache's contents. Without --out it goes to stdout.\n\n" + exitHelp(ExitCorrupt, ExitMissing, ExitUnavailable),
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cacheDir == "" {
				return usageError{fmt.Errorf("inventory: --cache DIR (or s3://BUCKET?...) is required")}
			}
			inv, err := bundle.InventoryCache(cmd.Context(), cacheDir, "nix-airgap "+toolVersion())
			if err != nil {
				return err
			}
			data, err := inv.Marshal()
			if err != nil {
				return err
			}
			if out == "" || out == "-" {
				_, err = e.stdout.Write(data)
				return err
			}
			if err := atomicfile.WriteFile(out, data, 0o644); err != nil {
				return fmt.Errorf("inventory: %w", err)
			}
			fmt.Fprintf(e.stderr, "wrote the inventory of %s to %s: %s from %s\n", cacheDir, out, progress.Plural(len(inv.Paths), "path"), progress.Plural(len(inv.Bundles), "bundle"))
			return nil
		},
	}
	cmd.Flags().StringVar(&cacheDir, "cache", "", "the long-lived cache to inventory: a directory, or s3://BUCKET?endpoint=HOST:PORT&scheme=http&region=R")
	cmd.Flags().StringVarP(&out, "out", "o", "", "write the inventory to FILE (atomically) instead of stdout")
	return cmd
}
