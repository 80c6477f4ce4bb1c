package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/inventory"
	"github.com/nix-airgap/nix-airgap/internal/sbom"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

func showCommand(e *env) *cobra.Command {
	var (
		sigs   signatureCheck
		asJSON bool
		format string
	)
	cmd := &cobra.Command{
		Use:   "show BUNDLE|CACHE|MANIFEST [--public-key KEY] [--json | --format cyclonedx]",
		Short: "List the packages, sources and origins a bundle or cache holds",
		Long: "show lists, for review, what a bundle, a manifest.json, a cache inventory or a\n" +
			"long-lived cache holds: each bundle's targets, mode, tool, time and signer; the\n" +
			"packages by name and version, with their sizes and where each came from (the\n" +
			"local store, an upstream cache, a build); and every fixed-output source with\n" +
			"its URLs and hash. It reads only manifests: verify checks the files.\n\n" +
			"--format cyclonedx prints a CycloneDX 1.6 SBOM instead.\n\n" +
			signatureHelp +
			detailsLine("show") + "\n\n" +
			exitHelp(ExitUntrusted, ExitCorrupt, ExitMissing, ExitUnavailable),
		Args: exactArgs(1),
		Example: "  nix-airgap show /media/usb/bundle-2\n" +
			"  nix-airgap show /media/usb/bundle-2 --public-key ~/keys/site.pub --json\n" +
			"  nix-airgap show /srv/nix-cache --format cyclonedx > sbom.cdx.json",
		RunE: func(cmd *cobra.Command, args []string) error {
			if asJSON && cmd.Flags().Changed("format") && format != "json" {
				return usageError{fmt.Errorf("--json and --format %s: give one of them", format)}
			}
			if asJSON {
				format = "json"
			}
			if format != "text" && format != "json" && format != "cyclonedx" {
				return usageError{fmt.Errorf("--format %q: want text, json or cyclonedx", format)}
			}
			keys, err := sigs.keyring()
			if err != nil {
				return err
			}
			inv, err := openInventory("show", args[0], keys)
			if err != nil {
				return err
			}
			if err := writeInventory(e.stdout, inv, format); err != nil {
				return err
			}
			return sigs.check("show", inv)
		},
	}
	sigs.addFlags(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (the same as --format json)")
	cmd.Flags().StringVar(&format, "format", "text", "output `FORMAT`: text, json, or cyclonedx (a CycloneDX SBOM)")
	return cmd
}

// openInventory opens src for cmd, show or diff: a bucket without
// nix-cache-info is no cache, said as every command says it; other errors
// name src.
func openInventory(cmd, src string, keys *signing.Keyring) (*inventory.Inventory, error) {
	inv, err := inventory.Open(src, keys)
	if err != nil {
		return nil, volumeSetHint(bundle.CacheOpenError(cmd, src, err), src)
	}
	return inv, nil
}

// signatureCheck is show's and diff's --public-key: with keys, the
// signatures of the bundles they read are checked, shown as trusted or
// not, and a bundle no trusted key signed fails the command (exit 3)
// after its output.
type signatureCheck struct{ keyFiles []keyArg }

const signatureHelp = "--public-key checks the signatures (exit 3 when no trusted key signed);\n" +
	"without it the signers' key names are shown unchecked.\n\n"

func (s *signatureCheck) addFlags(cmd *cobra.Command) {
	addPublicKeyFlags(cmd.Flags(), &s.keyFiles, "key to check the signatures with")
}

// keyring returns the keys given, or nil when none were.
func (s *signatureCheck) keyring() (*signing.Keyring, error) {
	if len(s.keyFiles) == 0 {
		return nil, nil
	}
	return loadKeyring(s.keyFiles, false)
}

// check fails when keys were given and one of invs' bundles has no
// signature by a trusted key. A cache inventory records no signatures,
// so there is nothing of it to check.
func (s *signatureCheck) check(op string, invs ...*inventory.Inventory) error {
	if len(s.keyFiles) == 0 {
		return nil
	}
	for _, inv := range invs {
		if inv.Kind == inventory.KindInventory {
			continue
		}
		for _, b := range inv.Bundles {
			switch {
			case len(b.Signature.Keys) == 0:
				return fmt.Errorf("%s %s: bundle %s: %w: no key signed it", op, inv.Source, b.ID, bundle.ErrUntrusted)
			case b.Signature.Trusted == "":
				err := fmt.Errorf("%s %s: bundle %s: %w: signed by %s", op, inv.Source, b.ID, bundle.ErrUntrusted, strings.Join(b.Signature.Keys, ", "))
				return shown(err, "%s\nTo trust it, give its public key with --public-key: the packing key's .pub file, not the cache key's.", err)
			}
		}
	}
	return nil
}

func writeInventory(w io.Writer, inv *inventory.Inventory, format string) error {
	switch format {
	case "json":
		return writeJSON(w, inv)
	case "cyclonedx":
		data, err := sbom.CycloneDX(inv)
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	}
	return inv.WriteText(w)
}

// writeJSON writes every command's --json report: indented, and with
// strings as they are (an s3:// URL's &, not \u0026).
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

func diffCommand(e *env) *cobra.Command {
	var (
		sigs   signatureCheck
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "diff OLD NEW [--public-key KEY] [--json]",
		Short: "Show the packages and sources that differ between two bundles or caches",
		Long: "diff compares two bundles, manifests, cache inventories or caches and prints a\n" +
			"line per package whose versions or store paths differ, as nix store\n" +
			"diff-closures does (\"hello: 1.0 → 1.1, +12.3 KiB\", \"libfoo: 2.1 rebuilt\"), then\n" +
			"the sources and the paths and bytes added and removed.\n\n" +
			"A delta bundle (pack --since) as NEW reads as what it stands for: its paths and\n" +
			"those of its bases it needs. What else OLD holds shows as no longer needed,\n" +
			"which importing NEW does not remove.\n\n" +
			signatureHelp +
			detailsLine("diff") + "\n\n" +
			exitHelp(ExitUntrusted, ExitCorrupt, ExitMissing, ExitUnavailable),
		Args: exactArgs(2),
		Example: "  nix-airgap diff /media/usb/bundle-1 /media/usb/bundle-2\n" +
			"  nix-airgap diff /media/usb/inventory.json /media/usb/bundle-2 --json",
		RunE: func(cmd *cobra.Command, args []string) error {
			keys, err := sigs.keyring()
			if err != nil {
				return err
			}
			old, err := openInventory("diff", args[0], keys)
			if err != nil {
				return err
			}
			new, err := openInventory("diff", args[1], keys)
			if err != nil {
				return err
			}
			// Every path would differ, each shown as removed and added.
			if old.StoreDir != "" && new.StoreDir != "" && old.StoreDir != new.StoreDir {
				return fmt.Errorf("diff %s %s: %w: %s holds paths of %s, %s of %s; diff compares bundles and caches of one store dir",
					args[0], args[1], storepath.ErrWrongDir, args[0], old.StoreDir, args[1], new.StoreDir)
			}
			d := inventory.Compare(old, new)
			if asJSON {
				err = writeJSON(e.stdout, d)
			} else {
				err = d.WriteText(e.stdout)
			}
			if err != nil {
				return err
			}
			return sigs.check("diff", old, new)
		},
	}
	sigs.addFlags(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
