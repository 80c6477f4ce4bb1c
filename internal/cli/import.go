package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"time"

	"github.com/spf13/cobra"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/progress"
)

func importCommand(e *env) *cobra.Command {
	var (
		keyFiles      []keyArg
		allowUnsigned bool
		cacheDir      string
		jobs          int
		noProgress    bool
		repair        bool
		asJSON        bool
	)
	cmd := &cobra.Command{
		Use:   "import BUNDLE|-|VOLUME... --cache DIR|s3://BUCKET?... --public-key KEY [--repair] [--json]",
		Short: "Verify a bundle and merge it into a long-lived cache",
		Long: "import verifies a bundle completely, then adds its store paths to the cache\n" +
			"--cache names: a directory, created if needed, or an S3 bucket named as Nix's\n" +
			"s3:// store is (credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY,\n" +
			"or AWS_PROFILE). A bad bundle leaves the cache exactly as it was; NAR files go\n" +
			"in before their narinfos, and paths already there are left alone, so a killed\n" +
			"import can simply be run again.\n\n" +
			"A delta imports once every path it refers to is in the cache, whichever bundle\n" +
			"brought it. Volumes of a set import in any order, at once or over several\n" +
			"runs; it says which are still missing. --repair also re-checks the paths the\n" +
			"cache has and replaces damaged ones from the bundle.\n\n" +
			detailsLine("import") + "\n\n" +
			exitHelp(ExitUntrusted, ExitCorrupt, ExitMissing, ExitUnavailable),
		Args: minArgs(1),
		Example: "  nix-airgap import /media/usb/bundle-1 --cache /srv/nix-cache --public-key ~/keys/site.pub\n" +
			"  nix-airgap import /media/usb/site.*.tar --cache /srv/nix-cache --public-key ~/keys/site.pub\n" +
			"  nix-airgap import /media/usb/bundle-1 --cache /srv/nix-cache --public-key ~/keys/site.pub --repair\n" +
			"  nix-airgap import /media/usb/bundle-1 --cache 's3://nix-cache?endpoint=s3.site:8333&scheme=http&region=us-east-1' --public-key ~/keys/site.pub",
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkStdin(cmd, args); err != nil {
				return err
			}
			if cacheDir == "" {
				return usageError{fmt.Errorf("import: --cache DIR (or s3://BUCKET?...) is required%s", cacheArgHint(cmd, args))}
			}
			kr, err := loadKeyring(keyFiles, allowUnsigned)
			if err != nil {
				return err
			}
			prog := newProgress(e, noProgress)
			iopts := bundle.ImportOptions{
				Keys: kr, AllowUnsigned: allowUnsigned, Jobs: jobs, Stdin: cmd.InOrStdin(), Log: e.log, Progress: prog, Repair: repair,
			}
			if os.Getenv("GOMEMLIMIT") == "" {
				defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
				iopts.Progress = &memoryLimiter{Reporter: prog, log: e.log, phases: []string{bundle.PhaseVerify, bundle.PhaseImport}, perPath: importMemoryPerPath}
			}
			start := time.Now()
			var rep *bundle.ImportReport
			if len(args) > 1 {
				rep, err = bundle.ImportVolumes(cmd.Context(), args, cacheDir, iopts)
			} else {
				rep, err = bundle.Import(cmd.Context(), args[0], cacheDir, iopts)
			}
			prog.Close()
			if err != nil {
				var ve *bundle.VerifyError
				if errors.As(err, &ve) {
					where := "listed above"
					if asJSON {
						where = "in the JSON report"
						if jerr := writeJSON(e.stdout, importJSON{Cache: cacheDir, Problems: ve.Problems}); jerr != nil {
							return jerr
						}
					} else {
						printProblems(e.stdout, ve.Problems)
					}
					return shown(err, "import %s: refused, the cache is unchanged: %s, %s%s",
						bundle.VolumesName(args), progress.Plural(len(ve.Problems), "problem"), where, untrustedHint(err))
				}
				return volumeSetHint(err, args[0])
			}
			if asJSON {
				return writeJSON(e.stdout, newImportJSON(rep, cacheDir, repair, time.Since(start)))
			}
			printImportReport(e.stdout, rep, cacheDir, repair)
			return nil
		},
	}
	cmd.Flags().StringVar(&cacheDir, "cache", "", "the `CACHE` to import into: a directory or an s3:// bucket")
	addPublicKeyFlags(cmd.Flags(), &keyFiles, "key the bundle's signer must have")
	cmd.Flags().BoolVar(&allowUnsigned, "allow-unsigned", false, "accept a bundle no trusted key signed")
	addJobsFlag(cmd.Flags(), &jobs, "check `N` files at once (default: one per CPU)")
	cmd.Flags().BoolVar(&noProgress, "no-progress", false, "show no progress on stderr")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.Flags().BoolVar(&repair, "repair", false, "also check the paths the cache has already, and replace the damaged ones from the bundle")
	return cmd
}

// printImportReport says what an import did: the check, what it added or
// repaired, the volumes still to come and the channels.
func printImportReport(w io.Writer, rep *bundle.ImportReport, cacheDir string, repair bool) {
	checked := *rep.Verify
	checked.Volumes = nil // said once, below, with what waits
	checked.Held = rep.Held
	printReport(w, &checked, nil)
	for _, p := range rep.Repaired {
		fmt.Fprintf(w, "repaired: %s\n", p)
	}
	if repair {
		fmt.Fprintf(w, "repaired %s in %s (%s of NAR files replaced); checked %s, the bundle's paths the cache had\n",
			progress.Plural(len(rep.Repaired), "damaged path"), cacheDir, progress.IEC(uint64(rep.RepairedBytes)), progress.Plural(rep.RepairChecked, "path"))
		fmt.Fprintf(w, "only paths this bundle carries were checked: nix-airgap verify %s --public-key KEY checks the rest of the cache\n", bundle.ShellWord(cacheDir))
	}
	fmt.Fprintf(w, "imported %s into %s: %s added (%s), %d already there\n",
		rep.ID, cacheDir, progress.Plural(rep.Added, "path"), progress.IEC(uint64(rep.AddedBytes)), rep.Skipped)
	if v := rep.Volumes; v != nil {
		if len(v.Missing) == 0 {
			fmt.Fprintf(w, "volume set complete: the cache holds everything in its %s\n", progress.Plural(v.Count, "volume"))
		} else {
			fmt.Fprintln(w, volumeLine(v)+" (what waits is kept in the cache until they come)")
		}
	}
	for _, c := range rep.Channels {
		switch {
		case c.Installed:
			fmt.Fprintf(w, "channel %s: installed; serve publishes it at /channels/%s\n", c.Name, c.Name)
		case c.Absent:
			fmt.Fprintf(w, "warning: channel %s: not in %s; this bundle left it out because its base %s carries it: import that base, or pack again without --since, to serve it\n", c.Name, cacheDir, c.Base)
		default:
			fmt.Fprintf(w, "channel %s: kept the cache's, from a bundle packed later (%s)\n", c.Name, c.Kept.UTC().Format(time.RFC3339))
		}
	}
}

// importJSON is import --json's report: on a refusal only the cache, ok
// and the problems.
type importJSON struct {
	Cache    string               `json:"cache"`
	Created  bool                 `json:"created,omitempty"` // the import made the cache's directory or bucket
	OK       bool                 `json:"ok"`
	Problems []bundle.Problem     `json:"problems"`
	ID       string               `json:"id,omitempty"`
	Verify   any                  `json:"verify,omitempty"`
	Added    *importCount         `json:"added,omitempty"`
	Skipped  *importCount         `json:"skipped,omitempty"` // already in the cache
	Repair   *importRepair        `json:"repair,omitempty"`
	Volumes  *bundle.VolumeReport `json:"volumes,omitempty"`
	Held     int                  `json:"held,omitempty"`
	Channels []channelJSON        `json:"channels,omitempty"`
	Elapsed  progress.Seconds     `json:"seconds,omitempty"`
}

type importCount struct {
	Paths int   `json:"paths"`
	Bytes int64 `json:"bytes,omitempty"` // of the NAR files added
}

// importRepair is what --repair checked and mended.
type importRepair struct {
	Repaired []string `json:"repaired"`
	Bytes    int64    `json:"bytes"`
	Checked  int      `json:"checked"`
}

// channelJSON is what became of one of the bundle's channels.
type channelJSON struct {
	Name      string     `json:"name"`
	Installed bool       `json:"installed"`
	KeptFrom  *time.Time `json:"keptFrom,omitempty"` // when the cache's newer channel was packed
	Absent    bool       `json:"absent,omitempty"`
	Base      string     `json:"base,omitempty"`
}

func newImportJSON(rep *bundle.ImportReport, cacheDir string, repair bool, elapsed time.Duration) importJSON {
	j := importJSON{
		Cache: cacheDir, Created: rep.Created, OK: true, Problems: []bundle.Problem{}, ID: rep.ID.String(), Verify: reportJSON(rep.Verify),
		Added: &importCount{rep.Added, rep.AddedBytes}, Skipped: &importCount{Paths: rep.Skipped},
		Volumes: rep.Volumes, Held: rep.Held, Channels: []channelJSON{}, Elapsed: progress.Seconds(elapsed),
	}
	if repair {
		j.Repair = &importRepair{append([]string{}, rep.Repaired...), rep.RepairedBytes, rep.RepairChecked}
	}
	for _, c := range rep.Channels {
		cj := channelJSON{Name: c.Name, Installed: c.Installed, Absent: c.Absent}
		if c.Absent {
			cj.Base = c.Base.String()
		} else if !c.Installed {
			cj.KeptFrom = &c.Kept
		}
		j.Channels = append(j.Channels, cj)
	}
	return j
}
