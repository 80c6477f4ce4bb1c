package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/check"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/inventory"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/pack"
	"github.com/nix-airgap/nix-airgap/internal/progress"
	"github.com/nix-airgap/nix-airgap/internal/sbom"
	"github.com/nix-airgap/nix-airgap/internal/storage"
)

// packFlags are pack's flags, beyond the target and planning ones.
type packFlags struct {
	tf                   targetFlags
	out, tempDir         string
	secretKey            keyArg
	comp                 string
	level                int
	since, channels      []string
	volumeSize           string
	binaryDeltas         bool
	asJSON, noProgress   bool
	checkAfter, withSBOM bool
	buildLogs            bool
	// What check parsed and found, for options: --channel and
	// --volume-size parsed, and what is at --out, handed to Pack, which
	// then reads a bundle there only once.
	parsedChannels []pack.Channel
	volumeBytes    int64
	outCheck       *pack.OutCheck
}

func packCommand(e *env) *cobra.Command {
	var f packFlags
	cmd := &cobra.Command{
		Use:   "pack " + targetUsage + " --out DIR|FILE.tar|- [--secret-key KEY] [--since OLD]",
		Short: "Copy every store path targets need into one signed bundle",
		Long: "pack plans the targets as plan does (nix-airgap help plan), builds with Nix\n" +
			"what is neither in the local store nor on a trusted upstream cache, and writes\n" +
			"every path into one bundle: a directory that is itself a Nix binary cache\n" +
			"(--out DIR), a tar file (--out FILE.tar) or a tar stream (--out -).\n\n" +
			"--secret-key signs the bundle; verify and import refuse an unsigned one. Keep\n" +
			"keys outside the flake: a key in a local flake's source would cross, and is\n" +
			"refused.\n\n" +
			"--since OLD leaves out what a site that imported OLD holds (what OLD carries,\n" +
			"what that refers to, and, for a delta, what its own bases provided): an\n" +
			"earlier bundle or volume, its manifest.json, or a cache inventory (nix-airgap\n" +
			"inventory). A path similar to one OLD carries travels as a binary delta when\n" +
			"that is smaller.\n\n" +
			"An --out that holds a finished bundle of other targets or --mode, a file that\n" +
			"is no bundle, or a binary cache Nix made is refused (exit 2), left as it is.\n" +
			"A killed or failed pack goes on where it stopped when run again into the\n" +
			"same --out.\n\n" +
			"--volume-size SIZE splits --out NAME.tar into volumes NAME.001.tar, … that\n" +
			"each verify alone. --channel NAME=SOURCE carries a nixpkgs channel.\n\n" +
			detailsLine("pack") + "\n\n" +
			exitHelp(ExitCorrupt, ExitMissing, ExitBlocked, ExitNixFailed, ExitNotBuilt, ExitUnavailable),
		Example: "  nix-airgap pack .#nixosConfigurations.gateway --secret-key ~/keys/site.sec --out /media/usb/bundle-1\n" +
			"  nix-airgap pack .#nixosConfigurations.gateway --secret-key ~/keys/site.sec --since /media/usb/bundle-1 --out /media/usb/bundle-2\n" +
			"  nix-airgap pack .#nixosConfigurations.gateway --secret-key ~/keys/site.sec --since /media/usb/inventory.json --out /media/usb/site.tar --volume-size fat32\n" +
			"  nix-airgap pack --file '<nixpkgs>' --attr hello --channel 'nixpkgs=<nixpkgs>' --secret-key ~/keys/site.sec --out /media/usb/bundle-3",
		RunE: func(cmd *cobra.Command, args []string) error {
			start := time.Now()
			err := f.run(cmd, e, args)
			if err != nil && f.asJSON {
				f.writeFailure(cmd, e, err, time.Since(start))
			}
			return err
		},
	}
	// pack's --jobs also bounds paths copied at once.
	f.tf.register(cmd.Flags(), "run `N` upstream lookups, .drv reads, dumps and downloads at once (default: 16, at most 4 dumps, 8 downloads)")
	fl := cmd.Flags()
	fl.StringVarP(&f.out, "out", "o", "", "write the bundle to `DIR|FILE.tar|-`: a directory, a tar file, or - for stdout")
	addSecretKeyFlag(fl, &f.secretKey, "secret key that signs narinfos and the manifest")
	fl.StringVar(&f.comp, "compression", compression.Zstd, "compress NARs with `METHOD`: zstd, xz or none")
	fl.IntVar(&f.level, "compression-level", 0, "compression `LEVEL`: zstd 1-22, xz 1-9 (default: the codec's)")
	fl.Var(listFlag{&f.since, false, "OLD"}, "since", "leave out what a site that imported OLD holds: a bundle, volume, manifest.json or cache inventory (repeatable)")
	fl.BoolVar(&f.binaryDeltas, "binary-deltas", true, "with --since, ship a path as a binary delta against a similar one when smaller")
	fl.Var(listFlag{&f.channels, false, "NAME=SOURCE"}, "channel", "carry a nixpkgs channel from a nixexprs tarball or URL, a nixpkgs directory, or <nixpkgs> (repeatable)")
	fl.BoolVar(&f.asJSON, "json", false, "write progress and the summary as JSON events, one per line")
	fl.BoolVar(&f.noProgress, "no-progress", false, "show no progress, only the summary")
	fl.BoolVarP(&f.buildLogs, "print-build-logs", "L", false, "print every line builders write, as nix build -L does")
	fl.BoolVar(&f.checkAfter, "check", false, "check the written bundle as nix-airgap check would; exit 6 if something is blocked")
	fl.StringVar(&f.tempDir, "temp-dir", "", "spool a tar's NAR files, and a volume set, in `DIR`, which must exist (default: $TMPDIR; volumes: beside --out)")
	fl.StringVar(&f.volumeSize, "volume-size", "", "split --out NAME.tar into volumes NAME.001.tar, … of at most `SIZE`: 25GB, 700MiB or fat32")
	fl.BoolVar(&f.withSBOM, "sbom", false, "add a CycloneDX SBOM of the bundle ("+sbom.FileName+"), which the signed manifest covers")
	return cmd
}

// check checks what cobra cannot: flags that need each other, and an
// output pack can write.
func (f *packFlags) check(stdout io.Writer) error {
	if f.checkAfter && f.out == "-" {
		return usageError{errors.New("--check needs the bundle on disk: --out DIR or FILE.tar, then check it")}
	}
	if _, err := compression.Ext(f.comp); err != nil || !(f.comp == compression.Zstd || f.comp == compression.XZ || f.comp == compression.None) {
		return usageError{fmt.Errorf("--compression %q: want zstd, xz or none", f.comp)}
	}
	switch top := map[string]int{compression.Zstd: 22, compression.XZ: 9}[f.comp]; {
	case f.level != 0 && top == 0:
		return usageError{fmt.Errorf("--compression-level %d: --compression %s has no levels", f.level, f.comp)}
	case f.level < 0 || f.level > top:
		return usageError{fmt.Errorf("--compression-level %d: want 1-%d for %s, or 0 for its default", f.level, top, f.comp)}
	}
	var size int64
	if f.volumeSize != "" {
		var err error
		size, err = bundle.ParseVolumeSize(f.volumeSize)
		if err != nil {
			return usageError{fmt.Errorf("--volume-size: %w", err)}
		}
		if size < bundle.MinVolumeSize {
			return usageError{fmt.Errorf("--volume-size %s: %w: every volume carries nix-cache-info, the manifest and its signature, so it needs %d bytes (16KiB) at least, more for a bigger bundle", f.volumeSize, bundle.ErrVolumeTooSmall, bundle.MinVolumeSize)}
		}
		if !strings.HasSuffix(f.out, ".tar") {
			return usageError{errors.New("--volume-size writes NAME.001.tar, NAME.002.tar, …: give --out NAME.tar")}
		}
	}
	// Said before the work, not after it.
	checked, err := pack.CheckOut(pack.Options{Out: f.out, Stdout: stdout, VolumeSize: size, Since: f.since})
	if err != nil {
		return usageError{err}
	}
	f.outCheck, f.volumeBytes = checked, size
	if f.tempDir != "" {
		// Said now, not after the planning, when the spool is made (or
		// never, for a bundle directory).
		fi, err := os.Stat(f.tempDir)
		if err == nil && !fi.IsDir() {
			err = errors.New("not a directory")
		}
		if err != nil {
			return usageError{fmt.Errorf("--temp-dir %s: %w", f.tempDir, storage.UnwrapPath(err))}
		}
	}
	seen := map[string]bool{}
	for _, c := range f.channels {
		ch, err := pack.ParseChannel(c)
		if err != nil {
			return usageError{fmt.Errorf("--channel: %w", err)}
		}
		if seen[ch.Name] {
			return usageError{fmt.Errorf("--channel %s: given twice", ch.Name)}
		}
		seen[ch.Name] = true
		f.parsedChannels = append(f.parsedChannels, ch)
	}
	return nil
}

func (f *packFlags) run(cmd *cobra.Command, e *env, args []string) error {
	if err := f.tf.parse(cmd, args); err != nil {
		return err
	}
	if err := f.check(e.stdout); err != nil {
		return err
	}
	ctx := cmd.Context()
	// A bad base is told before any Nix or network work.
	bases, err := pack.OpenSince(ctx, f.since)
	if err != nil {
		return fmt.Errorf("pack: %w", err)
	}
	popts, err := f.options(e, bases)
	if err != nil {
		return err
	}
	runner := f.tf.runner(e.log)
	dir, targets, opts, err := f.tf.targets(ctx, runner)
	if err != nil {
		return fmt.Errorf("pack: %w", err)
	}
	popts.Options = opts
	planner, err := f.tf.planner(ctx, e.log, runner, dir)
	if err != nil {
		return fmt.Errorf("pack: %w", err)
	}
	rep := f.reporter(e)
	defer rep.Close()
	p := &pack.Packer{Planner: planner, Nix: runner, Log: e.log, Progress: rep}
	if os.Getenv("GOMEMLIMIT") == "" {
		defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
		p.Progress = &memoryLimiter{Reporter: rep, log: e.log, phases: []string{pack.PhaseCopy}, perPath: packMemoryPerPath}
	}
	if f.buildLogs {
		p.BuildLog = func(name, line string) { fmt.Fprintf(e.stderr, "%s> %s\n", name, line) }
	}
	if f.tf.jobs > 0 {
		p.Jobs, p.Downloads = f.tf.jobs, f.tf.jobs
	}
	for _, c := range popts.Channels {
		if cache.IsHTTP(c.Source) {
			if p.HTTPClient, err = f.tf.httpClient(ctx, runner, c.Source); err != nil {
				return err
			}
		}
	}
	res, err := p.Pack(ctx, targets, popts)
	if errors.Is(err, pack.ErrOutTaken) || errors.Is(err, pack.ErrOutUnusable) || errors.Is(err, pack.ErrSinceIsOut) {
		return usageError{err} // a bundle or file the user may still want
	}
	if errors.Is(err, bundle.ErrVolumeTooSmall) || errors.Is(err, pack.ErrKeyInFlake) {
		// Found only once the plan is known, yet the command line's to
		// fix: a --volume-size to give again, larger, or a --secret-key
		// kept inside the packed flake.
		return usageError{err}
	}
	if err != nil {
		return f.tf.withCredentialsHint(err)
	}
	rep.Close()
	sum := res.Summary()
	if f.asJSON {
		rep.Event(sum)
	} else if err := sum.WriteText(e.stderr); err != nil {
		return err
	}
	if len(f.since) > 0 {
		if err := writeSinceDiff(e, rep, f.since, f.out, res, f.asJSON); err != nil {
			return err
		}
	}
	if f.checkAfter {
		return f.checkBundle(ctx, e, runner, res, bases)
	}
	return nil
}

// packFailure is pack --json's last event when pack fails, in place of
// the summary's "done" event: the error as stderr says it, and the exit
// code.
type packFailure struct {
	Event    string           `json:"event"` // "error"
	Error    string           `json:"error"`
	ExitCode int              `json:"exitCode"`
	Seconds  progress.Seconds `json:"seconds"`
}

// writeFailure ends pack --json's events with err, where the progress
// events went, for a script that reads them alone.
func (f *packFlags) writeFailure(cmd *cobra.Command, e *env, err error, took time.Duration) {
	out := e.stdout
	if f.out == "-" {
		out = e.stderr
	}
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	enc.Encode(packFailure{Event: "error", Error: errorText(cmd, err), ExitCode: ExitCode(err), Seconds: progress.Seconds(took)})
}

// options are pack's options from the flags; the plan's come with the
// targets.
func (f *packFlags) options(e *env, bases *bundle.Bases) (pack.Options, error) {
	popts := pack.Options{
		Out: f.out, Stdout: e.stdout, Compression: f.comp, Level: f.level, Since: f.since, Bases: bases, OutCheck: f.outCheck,
		SBOM: f.withSBOM, Tool: "nix-airgap " + toolVersion(), TempDir: f.tempDir, NoBinaryDeltas: !f.binaryDeltas,
		Channels: f.parsedChannels, VolumeSize: f.volumeBytes,
	}
	key, err := readSecretKey(f.secretKey)
	if err != nil {
		return pack.Options{}, fmt.Errorf("pack: %w", err)
	}
	popts.Key = key
	if f.comp == compression.XZ || len(f.channels) > 0 {
		// liblzma, as Nix compresses: smaller and faster than the
		// pure-Go encoder, which is the fallback. Channels are always xz.
		if xz, err := exec.LookPath("xz"); err == nil {
			popts.XZProgram = xz
		} else {
			e.log.Info("no xz(1) on PATH: compressing with the slower pure-Go xz encoder")
		}
	}
	return popts, nil
}

// reporter shows progress as the flags and stderr ask.
func (f *packFlags) reporter(e *env) *progress.Reporter {
	out, format := e.stderr, progress.Lines
	switch {
	case f.asJSON:
		format = progress.JSON
		if f.out != "-" {
			out = e.stdout
		}
	case f.noProgress:
		out = io.Discard
	case isTerminal(e.stderr):
		format = progress.Terminal
	}
	return progress.New(out, format)
}

// checkBundle is --check: the written bundle, with its bases, as check
// sees it.
func (f *packFlags) checkBundle(ctx context.Context, e *env, runner *nixcli.Runner, res *pack.Result, bases *bundle.Bases) error {
	written := []string{f.out}
	if res.Volumes != nil {
		written = res.Volumes
	}
	checked, err := check.CheckBundle(ctx, res.Plan, written, bases, runner, e.log)
	if err != nil {
		return fmt.Errorf("pack --check: %w", err)
	}
	if err := checked.Err(); err != nil {
		checked.WriteText(e.stderr)
		return fmt.Errorf("pack --check %s: %w", f.out, err)
	}
	fmt.Fprintf(e.stderr, "checked %s: everything the targets need is in it or buildable from it\n", f.out)
	return nil
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

// newProgress shows a long command's progress on stderr: a status line on
// a terminal, else a line now and then; nothing if off.
func newProgress(e *env, off bool) *progress.Reporter {
	switch {
	case off:
		return progress.New(io.Discard, progress.Lines)
	case isTerminal(e.stderr):
		return progress.New(e.stderr, progress.Terminal)
	}
	return progress.New(e.stderr, progress.Lines)
}

// statusLine shows, on a terminal only, that a command whose progress
// cannot be measured (an evaluation) is still at work: its name and the
// time it has taken, until Clear. Elsewhere it shows nothing.
func statusLine(e *env, name string) *progress.Reporter {
	if !isTerminal(e.stderr) {
		return progress.New(io.Discard, progress.Lines)
	}
	r := progress.New(e.stderr, progress.Terminal)
	r.Phase(name, 0, 0)
	return r
}

func isTerminal(w io.Writer) bool {
	if t, ok := w.(*progress.Term); ok {
		return t.IsTerminal()
	}
	f, ok := w.(*os.File)
	return ok && progress.IsTerminal(f) && !strings.EqualFold(os.Getenv("TERM"), "dumb")
}

// checkStdin refuses "-" among args when stdin is a terminal, as tar
// does: a tar stream is not typed in, and the command would wait for it.
func checkStdin(cmd *cobra.Command, args []string) error {
	if f, ok := cmd.InOrStdin().(*os.File); ok && slices.Contains(args, "-") && progress.IsTerminal(f) {
		return usageError{errors.New("-: refusing to read a tar stream from a terminal; redirect stdin from a file or a pipe, or give the bundle's path")}
	}
	return nil
}
