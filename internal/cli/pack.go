package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nix-airgap/nix-airgap/internal/check"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/inventory"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/pack"
	"github.com/nix-airgap/nix-airgap/internal/progress"
	"github.com/nix-airgap/nix-airgap/internal/sbom"
	"github.com/nix-airgap/nix-airgap/internal/signing"
)

func packCommand(e *env) *cobra.Command {
	var (
		tf          targetFlags
		out         string
		keyFile     string
		comp        string
		level       int
		since       []string
		asJSON      bool
		noProgress  bool
		tempDir     string
		jobsChanged bool
		checkAfter  bool
		withSBOM    bool
	)
	cmd := &cobra.Command{
		Use:   "pack " + targetUsage + " --out DIR|FILE.tar|- [--key FILE] [--since OLD]",
		Short: "Copy every store path targets need into one signed bundle",
		Long: "pack plans the targets as plan does, realises with Nix what is neither in the\n" +
			"local store nor on a trusted upstream cache (unless --no-build), and writes\n" +
			"every path into a bundle: a directory that is itself a Nix binary cache\n" +
			"(--out DIR), a tar file (--out FILE.tar) or a tar stream (--out -). Local\n" +
			"paths are dumped and compressed in-process; upstream NAR files are copied\n" +
			"verbatim with their signatures, their hashes checked as they stream; a copy\n" +
			"that fails is logged and the next source tried.\n\n" +
			"--key signs every narinfo and the manifest; an unsigned bundle is refused by\n" +
			"import unless told otherwise. --since OLD (a bundle directory or its\n" +
			"manifest.json, repeatable) leaves out what OLD carries. Re-running pack into\n" +
			"the same directory reuses the NAR files already there once they verify.\n" +
			"--check then checks the bundle (with its --since bases) as `check` would, so\n" +
			"it is known to be complete before it leaves.\n\n" +
			"Progress goes to stderr: a status line on a terminal, one line per path\n" +
			"otherwise, JSON events with --json (on stdout, or stderr with --out -).\n\n" +
			targetHelp + "\n\n" + planHelp,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := tf.parse(cmd, args); err != nil {
				return err
			}
			jobsChanged = cmd.Flags().Changed("jobs")
			if out == "" {
				return usageError{errors.New("--out is required: a directory, FILE.tar, or - for stdout")}
			}
			if checkAfter && out == "-" {
				return usageError{errors.New("--check needs the bundle on disk: --out DIR or FILE.tar, then check it")}
			}
			if _, err := compression.Ext(comp); err != nil || !(comp == compression.Zstd || comp == compression.XZ || comp == compression.None) {
				return usageError{fmt.Errorf("--compression %q: want zstd, xz or none", comp)}
			}
			if os.Getenv("GOMEMLIMIT") == "" {
				defer debug.SetMemoryLimit(debug.SetMemoryLimit(packMemoryLimit))
			}
			ctx := cmd.Context()
			var key *signing.SecretKey
			if keyFile != "" {
				k, err := signing.LoadSecretKey(keyFile)
				if err != nil {
					return fmt.Errorf("pack: --key: %w", err)
				}
				key = &k
			} else {
				e.log.Warn("no --key: the bundle will be unsigned, and import refuses unsigned bundles unless told otherwise")
			}
			runner := &nixcli.Runner{Logger: e.log}
			dir, targets, opts, err := tf.targets(ctx, runner)
			if err != nil {
				return fmt.Errorf("pack: %w", err)
			}
			planner, err := tf.planner(ctx, e.log, runner, dir)
			if err != nil {
				return fmt.Errorf("pack: %w", err)
			}
			progOut := e.stderr
			format := progress.Lines
			switch {
			case asJSON:
				format = progress.JSON
				if out != "-" {
					progOut = e.stdout
				}
			case noProgress:
				progOut = io.Discard
			case isTerminal(e.stderr):
				format = progress.Terminal
			}
			rep := progress.New(progOut, format)
			defer rep.Close()
			p := &pack.Packer{Planner: planner, Nix: runner, Logger: e.log, Progress: rep}
			if jobsChanged {
				p.Jobs, p.Downloads = tf.jobs, tf.jobs
			}
			popts := pack.Options{
				Options: opts, Out: out, Stdout: e.stdout, Key: key,
				Compression: comp, Level: level, Since: since, SBOM: withSBOM, Tool: "nix-airgap " + version(), TempDir: tempDir,
			}
			if comp == compression.XZ {
				// liblzma, as Nix compresses: smaller and faster than
				// the pure-Go encoder, which is the fallback.
				if xz, err := exec.LookPath("xz"); err == nil {
					popts.XZProgram = xz
				} else {
					e.log.Info("no xz(1) on PATH: compressing with the slower pure-Go xz encoder")
				}
			}
			res, err := p.Pack(ctx, targets, popts)
			if err != nil {
				return err
			}
			rep.Close()
			sum := res.Summary()
			if asJSON {
				rep.Event(sum)
			} else if err := sum.WriteText(e.stderr); err != nil {
				return err
			}
			if len(since) > 0 {
				if err := writeSinceDiff(e, rep, since, out, res, asJSON); err != nil {
					return err
				}
			}
			if !checkAfter {
				return nil
			}
			checked, err := check.CheckBundle(ctx, res.Plan, out, since, runner, e.log)
			if err != nil {
				return fmt.Errorf("pack --check: %w", err)
			}
			if err := checked.Err(); err != nil {
				checked.WriteText(e.stderr)
				return fmt.Errorf("pack --check %s: %w", out, err)
			}
			e.log.Info("checked: everything the targets need is in the bundle or buildable from it", "bundle", out)
			return nil
		},
	}
	tf.register(cmd.Flags())
	fl := cmd.Flags()
	fl.StringVarP(&out, "out", "o", "", "where to write the bundle: a directory, a FILE.tar, or - for a tar stream on stdout")
	fl.StringVar(&keyFile, "key", "", "Nix secret key file that signs narinfos and the manifest")
	fl.StringVar(&comp, "compression", compression.Zstd, "NAR compression: zstd, xz (through xz(1) when on PATH, as Nix compresses) or none")
	fl.IntVar(&level, "compression-level", 0, "compression level (zstd 1-22, xz 1-9); 0 means the codec's default")
	fl.StringArrayVar(&since, "since", nil, "earlier bundle (directory or manifest.json) whose paths to leave out (repeatable)")
	fl.BoolVar(&asJSON, "json", false, "write progress and the summary as JSON events, one per line")
	fl.BoolVar(&noProgress, "no-progress", false, "show no progress, only the summary")
	fl.BoolVar(&checkAfter, "check", false, "check the written bundle as `nix-airgap check` would; exit 6 if something is blocked")
	fl.StringVar(&tempDir, "temp-dir", "", "where the tar form spools NAR files (default: $TMPDIR)")
	fl.BoolVar(&withSBOM, "sbom", false, "add a CycloneDX SBOM of the bundle ("+sbom.FileName+"), which the signed manifest covers")
	// pack's --jobs also bounds paths copied at once.
	fl.Lookup("jobs").Usage = "parallel upstream lookups, .drv reads and copies (default: 16 lookups; GOMAXPROCS, at most 4, dumps and 8 downloads)"
	return cmd
}

// writeSinceDiff prints what the bundle changes, package by package,
// compared with its --since bases: `nix-airgap diff` of the bases and it.
func writeSinceDiff(e *env, rep *progress.Reporter, since []string, out string, res *pack.Result, asJSON bool) error {
	var bases []*inventory.Inventory
	for _, s := range since {
		inv, err := inventory.Open(s, nil)
		if err != nil {
			return fmt.Errorf("pack: --since %w", err)
		}
		bases = append(bases, inv)
	}
	d := inventory.Compare(inventory.Merge(strings.Join(since, " "), bases...), inventory.FromManifest(out, res.Manifest))
	if asJSON {
		rep.Event(struct {
			Event string `json:"event"`
			*inventory.Diff
		}{"diff", d})
		return nil
	}
	fmt.Fprintf(e.stderr, "\nchanges since %s:\n", strings.Join(since, ", "))
	return d.WriteText(e.stderr)
}

// packMemoryLimit is pack's soft memory limit, unless GOMEMLIMIT sets
// one. Compressing a large path in parallel frames leaves buffers as
// garbage between collections: packing a closure with a 1 GiB path peaked
// at 265 MiB without it and 165 MiB with it, in about the same time
// (bench/pack-pair.sh). Other commands keep far less live and gain
// nothing from one (plan on 10,000 derivations, verify --deep and import
// of that 2 GiB closure: bench/plan-memory.sh, docs/design.md).
const packMemoryLimit = 160 << 20

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && progress.IsTerminal(f) && !strings.EqualFold(os.Getenv("TERM"), "dumb")
}
