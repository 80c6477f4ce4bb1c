package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/progress"
	"github.com/nix-airgap/nix-airgap/internal/signing"
)

func verifyCommand(e *env) *cobra.Command {
	var (
		keyFiles      []string
		allowUnsigned bool
		jobs          int
		asJSON        bool
		deep          bool
		against       []string
	)
	cmd := &cobra.Command{
		Use:   "verify BUNDLE|CACHE|-",
		Short: "Check a bundle's signature and every file in it",
		Long: "verify checks a bundle directory, a bundle .tar file, or a tar stream on\n" +
			"stdin (-): the manifest's signature by a trusted key, every file's size and\n" +
			"sha256 (which the signed manifest pins, so any damaged byte is found), every\n" +
			"narinfo against the manifest, that every reference resolves, and that no file\n" +
			"is missing or unaccounted for. --deep also decompresses every NAR and checks\n" +
			"its NarHash and NarSize, as Nix will when it substitutes it (import always\n" +
			"does). It names every bad file, not just the first. Given a long-lived cache\n" +
			"(import's --cache), it checks every bundle record's signature and every\n" +
			"narinfo's NAR file, decompressed. A delta bundle's references to its\n" +
			"bases resolve in the caches or base bundles given with --against; without\n" +
			"one they are only listed as warnings (import checks them).",
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			kr, err := loadKeyring(keyFiles, allowUnsigned)
			if err != nil {
				return err
			}
			opts := bundle.VerifyOptions{
				Keys: kr, AllowUnsigned: allowUnsigned, Deep: deep, Jobs: jobs, Stdin: cmd.InOrStdin(), Log: e.log,
			}
			for _, dir := range against {
				d, err := cache.OpenDir(dir)
				if err != nil {
					return usageError{fmt.Errorf("--against %s: %w", dir, err)}
				}
				defer d.Close()
				opts.Against = append(opts.Against, d)
			}
			rep, err := bundle.Verify(cmd.Context(), args[0], opts)
			if rep == nil {
				return err
			}
			if asJSON {
				if jerr := writeReportJSON(e.stdout, rep); jerr != nil {
					return jerr
				}
			} else {
				printReport(e.stdout, rep)
			}
			return err
		},
	}
	addPublicKeyFlags(cmd.Flags(), &keyFiles, "key the bundle's signer must have")
	cmd.Flags().BoolVar(&allowUnsigned, "allow-unsigned", false, "accept a bundle no trusted key signed (everything else is still checked)")
	cmd.Flags().BoolVar(&deep, "deep", false, "also decompress every NAR and check its NarHash and NarSize")
	cmd.Flags().StringArrayVar(&against, "against", nil, "cache or base bundle directory in which references outside the bundle may resolve (repeatable)")
	cmd.Flags().IntVar(&jobs, "jobs", 0, "files to check at once (0: one per CPU)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

// loadKeyring reads the --public-key keys.
func loadKeyring(args []string, allowUnsigned bool) (*signing.Keyring, error) {
	if len(args) == 0 && !allowUnsigned {
		return nil, usageError{errors.New("give the bundle signer's --public-key KEY, or --allow-unsigned")}
	}
	keys, err := readPublicKeys(args)
	if err != nil {
		return nil, err
	}
	return signing.NewKeyring(keys...), nil
}

func printReport(w io.Writer, rep *bundle.Report) {
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "%s: %s: %s\n", p.File, p.Kind, p.Problem)
	}
	for _, warn := range rep.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	fmt.Fprintln(w, summary(rep))
}

func summary(rep *bundle.Report) string {
	secs := rep.Elapsed.Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(rep.Bytes) / secs
	}
	status := "OK"
	if !rep.OK() {
		status = fmt.Sprintf("FAILED (%d problems)", len(rep.Problems))
	}
	signer := "unsigned"
	if rep.Signer != "" {
		signer = "signed by " + rep.Signer
	}
	return fmt.Sprintf("%s: %s: %d paths, %d files, %s in %s (%s/s), %s",
		rep.Source, status, rep.Paths, rep.Files, progress.IEC(uint64(rep.Bytes)), rep.Elapsed.Round(time.Millisecond), progress.IEC(uint64(rate)), signer)
}

func writeReportJSON(w io.Writer, rep *bundle.Report) error {
	out := struct {
		*bundle.Report
		ID string `json:"id"`
		OK bool   `json:"ok"`
	}{Report: rep, OK: rep.OK()}
	if !rep.ID.IsZero() {
		out.ID = rep.ID.String()
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
