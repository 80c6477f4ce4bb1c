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
		Long: "show lists what a bundle (a directory, .tar file or volume), a manifest.json,\n" +
			"a cache inventory or a long-lived cache (a directory or s3:// bucket) holds,\n" +
			"for review: each bundle's targets, mode, tool, creation time and signer; the\n" +
			"packages by name and version (split from store path names as\n" +
			"builtins.parseDrvName splits them), their sizes and where each came from (the\n" +
			"local store, an upstream cache and the keys that signed it, or a build); and\n" +
			"every fixed-output source with the URLs it was fetched from and its hash. It\n" +
			"reads only manifests: `verify` checks the files.\n\n" +
			"--format cyclonedx prints a CycloneDX 1.6 SBOM instead: a component per\n" +
			"store path with its version, purl, hashes and source URLs, and the\n" +
			"reference graph (pack --sbom puts the same into the bundle).\n\n" +
			signatureHelp + exitHelp(ExitUntrusted, ExitCorrupt, ExitMissing, ExitUnavailable),
		Args: exactArgs(1),
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
	cmd.Flags().StringVar(&format, "format", "text", "output format: text, json, or cyclonedx (a CycloneDX 1.6 JSON SBOM)")
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
type signatureCheck struct{ keyFiles []string }

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
		Long: "diff compares two bundles (directories, .tar files or volumes),\n" +
			"manifest.json files, cache inventories or long-lived caches (directories or\n" +
			"s3:// buckets), and prints one line per package name whose versions or\n" +
			"store paths differ, as `nix store diff-closures` does: \"hello: 1.0 → 1.1,\n" +
			"+12.3 KiB\", each side's whole set of versions (\"hello: 1.0 → 1.0, 1.1\" when\n" +
			"NEW keeps 1.0 beside 1.1), ∅ for a package one side lacks and ε for an empty\n" +
			"version. A version both sides have whose paths differ says how: \"libfoo: 2.1\n" +
			"rebuilt\" when only its hash changed, \"builds 1 → 2\" when a side has more\n" +
			"builds of it, \"output man added\" when outputs came or went. Then the sources\n" +
			"added and removed, with their URLs, and the paths and bytes added and removed.\n\n" +
			"A delta bundle (pack --since) holds only what changed, and says which paths\n" +
			"of its bases it needs: when OLD holds its bases (or those paths, as the cache\n" +
			"a delta of its inventory was packed against does), NEW is read as its own\n" +
			"paths and those, and what else OLD holds shows as no longer needed, which\n" +
			"importing NEW does not remove. A delta as OLD is read as it is, and a note\n" +
			"says that what its bases carry shows as added.\n\n" +
			signatureHelp + exitHelp(ExitUntrusted, ExitCorrupt, ExitMissing, ExitUnavailable),
		Args: exactArgs(2),
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
