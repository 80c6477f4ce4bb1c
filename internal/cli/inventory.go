package cli

import (
	"fmt"
	"os"
	"path/filepath"

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
		Long: "inventory writes what a long-lived cache holds as a small JSON file: every\n" +
			"store path with its NAR hash and size, and the bundles that brought it. Carried\n" +
			"back to the connected side, it is a base for pack --since FILE, which then\n" +
			"leaves out everything the cache has. It is not signed and needs no key, but it\n" +
			"lists the store paths the site holds: treat it as you treat the cache.\n\n" +
			detailsLine("inventory") + "\n\n" +
			exitHelp(ExitCorrupt, ExitMissing, ExitUnavailable),
		Args:    exactArgs(0),
		Example: "  nix-airgap inventory --cache /srv/nix-cache --out /media/usb/inventory.json",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cacheDir == "" {
				return usageError{fmt.Errorf("inventory: --cache DIR (or s3://BUCKET?...) is required")}
			}
			if err := checkInventoryOut(out); err != nil {
				return err
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
			if err := writeOut(out, data); err != nil {
				return fmt.Errorf("inventory: %w", err)
			}
			fmt.Fprintf(e.stderr, "wrote the inventory of %s to %s: %s from %s\n", cacheDir, out, progress.Plural(len(inv.Paths), "path"), progress.Plural(len(inv.Bundles), "bundle"))
			return nil
		},
	}
	cmd.Flags().StringVar(&cacheDir, "cache", "", "the `CACHE` to inventory: a directory or an s3:// bucket")
	cmd.Flags().StringVarP(&out, "out", "o", "", "write the inventory to `FILE` (atomically) instead of stdout")
	return cmd
}

// checkInventoryOut refuses an --out that is a directory, or a file with
// something other than an earlier inventory in it (a bundle's
// manifest.json, say), which the inventory would replace.
func checkInventoryOut(out string) error {
	if out == "" || out == "-" {
		return nil
	}
	fi, err := os.Stat(out)
	switch {
	case err != nil:
		return nil // a new file
	case fi.IsDir():
		return usageError{fmt.Errorf("inventory: --out %s: a directory; give the file to write, such as %s", out, filepath.Join(out, "inventory.json"))}
	case !fi.Mode().IsRegular() || fi.Size() == 0:
		return nil // a device such as /dev/stdout, a pipe, an empty file
	}
	if shape, _ := bundle.Identify(out); shape != bundle.ShapeInventory {
		return usageError{fmt.Errorf("inventory: --out %s: a file that is not a cache inventory; inventory replaces only an earlier one", out)}
	}
	return nil
}

// writeOut writes data to the file out atomically, or, when out is a
// symlink, a device or a pipe (/dev/stdout, a FIFO), into it: renamed
// over, it would be replaced by a file.
func writeOut(out string, data []byte) error {
	if fi, err := os.Lstat(out); err != nil || fi.Mode().IsRegular() {
		return atomicfile.WriteFile(out, data, 0o644)
	}
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", out, err)
	}
	return f.Close()
}
