package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/gc"
	"github.com/nix-airgap/nix-airgap/internal/progress"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

func gcCommand(e *env) *cobra.Command {
	var (
		cacheDir   string
		keep       int
		rootsFile  string
		opts       gc.Options
		asJSON     bool
		noProgress bool
	)
	cmd := &cobra.Command{
		Use:   "gc --cache DIR|s3://BUCKET?... (--keep-bundles N | --roots FILE) [--dry-run] [--json]",
		Short: "Remove from a cache what the last bundles imported, or given roots, do not need",
		Long: "gc removes from a long-lived cache everything but the closures of the last N\n" +
			"bundles imported, each in its mode (--keep-bundles N), or of the store paths\n" +
			"a file lists (--roots FILE). --dry-run says what would go, and removes nothing.\n\n" +
			"It holds the cache's lock, so imports wait, and a serve of the cache goes on\n" +
			"answering. Killed at any moment, it leaves a cache that serves and verifies;\n" +
			"running it again finishes the job. A client that fetched a narinfo within its\n" +
			"narinfo-cache-positive-ttl fails on a path gc removed unless it sets\n" +
			"fallback = true.\n\n" +
			detailsLine("gc") + "\n\n" +
			exitHelp(ExitCorrupt, ExitMissing, ExitUnavailable),
		Args: exactArgs(0),
		Example: "  nix-airgap gc --cache /srv/nix-cache --keep-bundles 2 --dry-run\n" +
			"  nix-airgap gc --cache /srv/nix-cache --keep-bundles 2\n" +
			"  nix-airgap gc --cache /srv/nix-cache --roots /media/usb/roots.txt",
		RunE: func(cmd *cobra.Command, args []string) error {
			if cacheDir == "" {
				return usageError{fmt.Errorf("gc: --cache DIR (or s3://BUCKET?...) is required")}
			}
			switch {
			case cmd.Flags().Changed("keep-bundles") == (rootsFile != ""):
				return usageError{fmt.Errorf("gc: give --keep-bundles N or --roots FILE, one of them")}
			case rootsFile == "" && keep < 1:
				return usageError{fmt.Errorf("gc: --keep-bundles %d: keep at least one bundle", keep)}
			}
			opts.Roots.KeepBundles = keep
			if rootsFile != "" {
				roots, err := readRoots(cmd, rootsFile, cacheDir)
				if err != nil {
					return err
				}
				opts.Roots.Paths = roots
			}
			if opts.Grace == 0 {
				opts.Grace = -1 // --grace 0 means none; its default is given below
			}
			prog := newProgress(e, noProgress || asJSON)
			opts.Log, opts.Progress = e.log, prog
			rep, err := gc.Collect(cmd.Context(), cacheDir, opts)
			prog.Close()
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(e.stdout, rep)
			}
			printGCReport(e.stdout, rep)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cacheDir, "cache", "", "the `CACHE` to collect: a directory or an s3:// bucket")
	f.IntVar(&keep, "keep-bundles", 0, "keep the closures of the last `N` bundles imported, each in its mode")
	f.StringVar(&rootsFile, "roots", "", "keep the closures of the store paths `FILE` lists, one per line (- for stdin)")
	f.BoolVar(&opts.DryRun, "dry-run", false, "say what would be removed, and remove nothing")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.DurationVar(&opts.Grace, "grace", cache.RemovalGrace, "keep NAR files `DURATION` after their narinfos go, for servers and their clients")
	addJobsFlag(f, &opts.Jobs, "read or remove `N` files at once (default: 8 per CPU)")
	f.BoolVar(&noProgress, "no-progress", false, "show no progress on stderr")
	return cmd
}

// readRoots reads --roots FILE in the store dir of the cache.
func readRoots(cmd *cobra.Command, file, cacheDir string) ([]storepath.Path, error) {
	// What is no cache is said as gc.Collect, and every other command,
	// says it.
	if err := bundle.CheckCache(cacheDir, bundle.CacheOnly); err != nil {
		return nil, fmt.Errorf("gc %s: %w", cacheDir, err)
	}
	b, err := storage.Open(cmd.Context(), cacheDir)
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	defer b.Close()
	c, err := cache.OpenBackend(cmd.Context(), b)
	if err != nil {
		return nil, bundle.CacheOpenError("gc", cacheDir, err)
	}
	defer c.Close()
	var r io.Reader = cmd.InOrStdin()
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("gc: --roots: %w", err)
		}
		defer f.Close()
		shape, _ := bundle.Identify(file)
		switch shape {
		case bundle.ShapeFile:
		case bundle.ShapeInventory:
			// It lists the paths the cache has, not those to keep.
			return nil, usageError{fmt.Errorf("gc: --roots %s: a cache inventory, not a file of store paths one a line: give the store paths to keep", file)}
		default:
			return nil, usageError{fmt.Errorf("gc: --roots %s: a directory, where a file of store paths one a line belongs", file)}
		}
		r = f
	}
	roots, err := gc.ParseRoots(r, c.StoreDir())
	if err != nil {
		err = fmt.Errorf("gc: --roots %s: %w", file, err)
		if errors.As(err, new(*gc.BadLineError)) {
			return nil, usageError{err} // as a roots file that lists nothing is
		}
		return nil, err
	}
	if len(roots) == 0 {
		// Such as a store-paths file a failed command left empty.
		return nil, usageError{fmt.Errorf("gc: --roots %s lists no store path: gc would remove everything in the cache", file)}
	}
	return roots, nil
}

func printGCReport(w io.Writer, rep *gc.Report) {
	for _, b := range rep.KeptBundles {
		targets := b.Targets
		if len(targets) > 3 {
			targets = append(targets[:3:3], fmt.Sprintf("and %d more", len(b.Targets)-3))
		}
		about := fmt.Sprintf("%s mode, imported %s, carried %s", b.Mode, b.Imported.UTC().Format(time.DateTime), progress.Plural(b.Paths, "path"))
		if len(targets) > 0 { // a bundle of --paths-from store paths has none
			about = strings.Join(targets, " ") + "; " + about
		}
		fmt.Fprintf(w, "keeping what bundle %s needs (%s)\n", b.ID, about)
	}
	for _, s := range rep.HalfImported {
		var about string
		switch {
		case s.Volumes == 0: // its manifest cannot be read: a warning says why
			about = "how many volumes it has is unknown"
		case s.Unknown != "":
			about = fmt.Sprintf("%d volumes; which are imported is unknown: %s", s.Volumes, s.Unknown)
		default:
			about = fmt.Sprintf("%d of %d volumes imported", len(s.Imported), s.Volumes)
		}
		fmt.Fprintf(w, "keeping what the half-imported volume set %s needs (%s)\n", s.ID, about)
	}
	for _, p := range rep.MissingRoots {
		fmt.Fprintf(w, "warning: root %s is not in the cache\n", p)
	}
	for _, warn := range rep.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	verb, freed := "removed", "freed"
	if rep.DryRun {
		verb, freed = "would remove", "would free"
	}
	r := rep.Removed
	what := []string{progress.Plural(r.Paths, "store path"), progress.Plural(r.NarFiles, "NAR file")}
	if r.Logs > 0 {
		what = append(what, progress.Plural(r.Logs, "build log"))
	}
	if r.Records > 0 {
		what = append(what, progress.Plural(r.Records, "bundle record"))
	}
	if len(r.Channels) > 0 {
		what = append(what, progress.Plural(len(r.Channels), "channel")+" ("+strings.Join(r.Channels, ", ")+")")
	}
	if r.RegistryEntries == 1 {
		what = append(what, "1 flake registry entry")
	} else if r.RegistryEntries > 1 {
		what = append(what, fmt.Sprintf("%d flake registry entries", r.RegistryEntries))
	}
	if r.TempFiles > 0 {
		what = append(what, progress.Plural(r.TempFiles, "temp file")+" killed writers left")
	}
	last := len(what) - 1
	list := strings.Join(what[:last], ", ") + " and " + what[last]
	fmt.Fprintf(w, "%s: %s %s, %s %s; kept %s (%s), in %s\n", rep.Cache, verb, list, freed, progress.IEC(uint64(r.Bytes)),
		progress.Plural(rep.Kept.Paths, "store path"), progress.IEC(uint64(rep.Kept.Bytes)), time.Duration(rep.Elapsed).Round(time.Millisecond))
}
