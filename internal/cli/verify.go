package cli

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/progress"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storage"
)

func verifyCommand(e *env) *cobra.Command {
	var (
		keyFiles      []keyArg
		allowUnsigned bool
		jobs          int
		asJSON        bool
		deep          bool
		against       []string
		noProgress    bool
	)
	cmd := &cobra.Command{
		Use:   "verify BUNDLE|CACHE|s3://BUCKET?...|-|VOLUME... --public-key KEY [--deep] [--against SOURCE] [--json]",
		Short: "Check a bundle's signature and every file in it",
		Long: "verify checks a bundle (a directory, a .tar file, - for a tar stream on\n" +
			"stdin, or volumes of a set) or a long-lived cache: the manifest's signature by\n" +
			"a trusted key, and every file's size and sha256, which the signed manifest\n" +
			"pins. It names every bad file, not just the first. --deep also decompresses\n" +
			"every NAR and checks its NarHash, as Nix will (for a cache, it always does).\n\n" +
			"For a cache, give the public key of every packing key that signed a bundle\n" +
			"imported into it, rotated ones too. A delta's references to its bases are\n" +
			"resolved in the caches or bundles --against names; without it they are only\n" +
			"listed as warnings.\n\n" +
			detailsLine("verify") + "\n\n" +
			exitHelp(ExitUntrusted, ExitCorrupt, ExitMissing, ExitUnavailable),
		Args: minArgs(1),
		Example: "  nix-airgap verify /media/usb/bundle-1 --public-key ~/keys/site.pub\n" +
			"  nix-airgap verify /media/usb/bundle-2 --public-key ~/keys/site.pub --against /srv/nix-cache\n" +
			"  nix-airgap verify /media/usb/site.*.tar --public-key ~/keys/site.pub --deep\n" +
			"  nix-airgap verify /srv/nix-cache --public-key ~/keys/site.pub --public-key ~/keys/site-old.pub",
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkStdin(cmd, args); err != nil {
				return err
			}
			kr, err := loadKeyring(keyFiles, allowUnsigned)
			if err != nil {
				return err
			}
			opts := bundle.VerifyOptions{
				Keys: kr, AllowUnsigned: allowUnsigned, Deep: deep, Jobs: jobs, Stdin: cmd.InOrStdin(), Log: e.log,
			}
			for _, dir := range against {
				if err := bundle.CheckCache(dir, bundle.CacheOrBundle); err != nil {
					// Missing (5), or no cache or bundle (4), as every
					// command says it.
					return fmt.Errorf("verify: --against %s: %w", dir, err)
				}
				d, err := cache.OpenStored(cmd.Context(), dir)
				if err != nil {
					// The command line was fine.
					return bundle.CacheOpenError("verify: --against", dir, err)
				}
				defer d.Close()
				opts.Against = append(opts.Against, d)
			}
			prog := newProgress(e, noProgress)
			opts.Progress = prog
			var rep *bundle.Report
			if len(args) > 1 {
				rep, err = bundle.VerifyVolumes(cmd.Context(), args, opts)
			} else {
				rep, err = bundle.Verify(cmd.Context(), args[0], opts)
			}
			prog.Close()
			if rep == nil {
				return volumeSetHint(err, args[0])
			}
			if asJSON {
				if jerr := writeReportJSON(e.stdout, rep); jerr != nil {
					return jerr
				}
			} else {
				printReport(e.stdout, rep, err)
			}
			if ve := (*bundle.VerifyError)(nil); errors.As(err, &ve) && ve.Down != nil {
				return shown(err, "verify %s: %s: %v (%s)", bundle.VolumesName(args), bundle.StoreDownNote, ve.Down, problemCount(rep, asJSON))
			}
			if err != nil {
				return shown(err, "verify %s: %s%s", bundle.VolumesName(args), problemCount(rep, asJSON), untrustedHint(err))
			}
			return nil
		},
	}
	addPublicKeyFlags(cmd.Flags(), &keyFiles, "key the bundle's signer must have")
	cmd.Flags().BoolVar(&allowUnsigned, "allow-unsigned", false, "accept a bundle no trusted key signed (everything else is still checked)")
	cmd.Flags().BoolVar(&deep, "deep", false, "also decompress every NAR and check its NarHash and NarSize")
	cmd.Flags().Var(listFlag{&against, false, "SOURCE"}, "against", "cache (a directory or s3:// bucket) or base bundle directory where a delta's references resolve (repeatable)")
	addJobsFlag(cmd.Flags(), &jobs, "check `N` files at once (default: one per CPU)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.Flags().BoolVar(&noProgress, "no-progress", false, "show no progress on stderr")
	return cmd
}

// loadKeyring reads the --public-key keys.
func loadKeyring(args []keyArg, allowUnsigned bool) (*signing.Keyring, error) {
	if len(args) == 0 && !allowUnsigned {
		return nil, usageError{errors.New("give the bundle signer's --public-key KEY, or --allow-unsigned")}
	}
	keys, err := readPublicKeys(args)
	if err != nil {
		return nil, err
	}
	return signing.NewKeyring(keys...), nil
}

// printProblems lists problems one a line, as verify and a refused
// import show them: FILE: KIND: PROBLEM.
func printProblems(w io.Writer, problems []bundle.Problem) {
	for _, p := range problems {
		fmt.Fprintf(w, "%s: %s: %s\n", p.File, p.Kind, p.Problem)
	}
}

func printReport(w io.Writer, rep *bundle.Report, err error) {
	printProblems(w, rep.Problems)
	for _, warn := range rep.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	for _, p := range rep.Damaged {
		fmt.Fprintf(w, "damaged: %s\n", p)
	}
	if r := rep.Repair; r != nil {
		them := "them"
		if len(rep.Damaged) == 1 {
			them = "it"
		}
		fmt.Fprintf(w, "to repair %s, run %s with a bundle that carries %s", progress.Plural(len(rep.Damaged), "damaged path"), r.Command, them)
		if len(r.Bundles) == 0 {
			fmt.Fprintf(w, " (no bundle imported into this cache says it carried %s)\n", them)
		} else {
			fmt.Fprintln(w, "; these did:")
		}
		for _, b := range r.Bundles {
			targets := b.Targets
			if len(targets) > 3 {
				targets = append(targets[:3:3], fmt.Sprintf("and %d more", len(b.Targets)-3))
			}
			about := "created " + b.Created.UTC().Format(time.DateTime)
			if len(targets) > 0 { // a bundle of --paths-from store paths has none
				about = strings.Join(targets, " ") + "; " + about
			}
			if b.Volumes > 0 {
				about += fmt.Sprintf("; a set of %d volumes, to give all at once", b.Volumes)
			}
			fmt.Fprintf(w, "  bundle %s (%s) carried %d\n", b.ID, about, b.Paths)
		}
	}
	fmt.Fprintln(w, summary(rep, err))
	if v := rep.Volumes; v != nil {
		line := volumeLine(v)
		if c := rep.Coverage; c != nil && c.PartPaths+c.AbsentPaths > 0 {
			// Nothing waits in verify: the paths are checked in part. (Held
			// counts also the whole paths that refer to these, which an
			// import keeps waiting with them.)
			n := c.PartPaths + c.AbsentPaths
			line += fmt.Sprintf("; %s %s whole only with the other volumes", progress.Plural(n, "path"), plural(n, "is", "are"))
		}
		fmt.Fprintln(w, line)
	}
}

// volumeLine says which volumes of a set were given and which are
// missing: "volumes 1, 3 of 4 given; still missing: volumes 2, 4", with
// three or more in a row as a range ("volumes 7-19"): a set of hundreds
// would fill the screen.
func volumeLine(v *bundle.VolumeReport) string {
	nums := func(ns []int) string {
		var s []string
		for i := 0; i < len(ns); i++ {
			j := i
			for j+1 < len(ns) && ns[j+1] == ns[j]+1 {
				j++
			}
			if j-i < 2 {
				s = append(s, fmt.Sprint(ns[i]))
				continue
			}
			s = append(s, fmt.Sprintf("%d-%d", ns[i], ns[j]))
			i = j
		}
		return strings.Join(s, ", ")
	}
	if len(v.Given) == v.Count && len(v.Missing) == 0 && v.Count > 1 {
		return fmt.Sprintf("all %d volumes given", v.Count)
	}
	line := fmt.Sprintf("%s %s of %d given", plural(len(v.Given), "volume", "volumes"), nums(v.Given), v.Count)
	if len(v.Missing) > 0 {
		line += "; still missing: " + plural(len(v.Missing), "volume ", "volumes ") + nums(v.Missing)
	}
	return line
}

// summary is verify's last line: "b1: OK: 8 paths, 1.2 GiB checked in
// 1.5s (812.0 MiB/s), signed by site-1".
func summary(rep *bundle.Report, err error) string {
	secs := time.Duration(rep.Elapsed).Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(rep.Bytes) / secs
	}
	status := "OK"
	if !rep.OK() {
		status = "FAILED, " + progress.Plural(len(rep.Problems), "problem")
	}
	if errors.Is(err, storage.ErrUnavailable) {
		status = "UNFINISHED, the store stopped answering, " + progress.Plural(len(rep.Problems), "problem") + " found before"
	}

	what := progress.Plural(rep.Paths, "store path")
	if rep.Files > 0 {
		what += " and " + progress.Plural(rep.Files, "other file")
	}
	if c := rep.Coverage; c != nil {
		// Volumes of a set: say how much of each path they held.
		what = coverage(c.WholePaths, c.PartPaths, rep.Paths, "store path")
		if rep.Files > 0 {
			what += "; " + coverage(c.WholeFiles, c.PartFiles, rep.Files, "other file")
		}
		what += " (the other volumes hold the rest)"
	} else if rep.Held > 0 {
		// Volumes of a set imported without the rest (verify's report
		// has Coverage): say how many paths the cache now has whole, not
		// that every path was.
		what = fmt.Sprintf("%d of %s complete in the cache, %d %s for the other volumes",
			rep.Paths-rep.Held, progress.Plural(rep.Paths, "store path"), rep.Held, plural(rep.Held, "waits", "wait"))
	}
	if rep.Rebuilt > 0 {
		what += " (" + progress.Plural(rep.Rebuilt, "NAR") + plural(rep.Rebuilt, " rebuilt from its binary delta)", " rebuilt from binary deltas)")
	}
	if rep.InCache > 0 {
		what += " (" + progress.Plural(rep.InCache, "binary delta") + plural(rep.InCache, " not rebuilt: the cache holds the NAR it makes)", " not rebuilt: the cache holds the NARs they make)")
	}
	signer := "signed by " + rep.Signer
	switch {
	case rep.Signer != "":
	case errors.Is(err, bundle.ErrUnsigned):
		signer = "unsigned"
	case errors.Is(err, bundle.ErrUntrusted) && !bundle.SignerUntrusted(rep.Problems):
		signer = "a bad signature"
	case errors.Is(err, bundle.ErrUntrusted):
		signer = "not signed by a trusted key"
	case rep.AcceptedUnsigned:
		signer = "accepted without a trusted signature (--allow-unsigned)"
	case rep.Paths == 0 && rep.Files == 0 && rep.OK():
		signer = "nothing signed in it" // an empty cache; a warning says so
	default:
		signer = "signature not checked"
	}
	if rep.Paths == 0 && rep.Files == 0 && !rep.OK() {
		// Not a bundle, or one whose manifest was not trusted: nothing
		// was checked against it. The signer stays in its own clause, as
		// on the OK line, not read as the problem.
		if rep.ID.IsZero() {
			return rep.Source + ": " + status
		}
		return rep.Source + ": " + status + ": no store path checked, " + signer
	}
	return fmt.Sprintf("%s: %s: %s, %s checked in %s (%s/s), %s",
		rep.Source, status, what, progress.IEC(uint64(rep.Bytes)), time.Duration(rep.Elapsed).Round(time.Millisecond), progress.IEC(uint64(rate)), signer)
}

// coverage says how many of n things the volumes given held whole and
// how many in part: "1 of 8 store paths whole, 5 in part".
func coverage(whole, part, n int, noun string) string {
	s := fmt.Sprintf("%d of %s whole", whole, progress.Plural(n, noun))
	if part > 0 {
		s += fmt.Sprintf(", %d in part", part)
	}
	return s
}

// problemCount says how many problems a failed verification found, and
// where they are listed.
func problemCount(rep *bundle.Report, asJSON bool) string {
	where := "listed above"
	if asJSON {
		where = "in the JSON report"
	}
	return fmt.Sprintf("%s, %s", progress.Plural(len(rep.Problems), "problem"), where)
}

// untrustedHint says what to do about a signer that no --public-key
// trusts: most often, the other key of the site was given.
func untrustedHint(err error) string {
	var ve *bundle.VerifyError
	switch {
	case errors.Is(err, bundle.ErrUnsigned):
		return "\nNo key signed it: pack it again with --secret-key, or give --allow-unsigned to accept it unsigned."
	case !errors.Is(err, bundle.ErrUntrusted) || errors.As(err, &ve) && !bundle.SignerUntrusted(ve.Problems):
		return ""
	}
	if ve != nil && slices.ContainsFunc(ve.Problems, func(p bundle.Problem) bool { return strings.HasPrefix(p.File, bundle.RecordDir+"/") }) {
		// A cache: its bundle records are signed by every packing key
		// there has been.
		return "\nTo trust the signers named above, give the public key of every packing key that signed bundles imported into the cache, each with --public-key: the packing keys' .pub files, not the cache key's."
	}
	return "\nTo trust the signer named above, give its public key with --public-key: the packing key's .pub file, not the cache key's."
}

// shownError is an error whose details were already shown in a report:
// Run prints only its short message, and ExitCode still sees err.
type shownError struct {
	err error
	msg string
}

func (e shownError) Error() string { return e.msg }
func (e shownError) Unwrap() error { return e.err }

func shown(err error, format string, args ...any) error {
	return shownError{err, fmt.Sprintf(format, args...)}
}

func writeReportJSON(w io.Writer, rep *bundle.Report) error {
	return writeJSON(w, reportJSON(rep))
}

// reportJSON is verify --json's report, and import --json's "verify".
func reportJSON(rep *bundle.Report) any {
	// Empty lists are [], as in every other command's JSON, not null.
	r := *rep
	if r.Problems == nil {
		r.Problems = []bundle.Problem{}
	}
	if r.Warnings == nil {
		r.Warnings = []string{}
	}
	out := struct {
		*bundle.Report
		ID string `json:"id"`
		OK bool   `json:"ok"`
	}{Report: &r, OK: rep.OK()}
	if !rep.ID.IsZero() {
		out.ID = rep.ID.String()
	}
	return out
}

// plural is one when n is 1, else many.
func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
