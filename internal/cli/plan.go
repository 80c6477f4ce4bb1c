package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/netrc"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/pack"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/progress"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// targetFlags are the target and planning flags plan and pack share
// (check, only the target flags).
type targetFlags struct {
	file, expr    string   // --file, --expr
	include       []string // -I: Nix search path entries
	showTrace     bool
	impure        bool // --impure: evaluate flakes with the environment, as nix build --impure
	attrs         []string
	pathsFrom     []string
	mode          string
	derivations   bool
	substituters  []string
	extraSubs     []string // --extra-substituters: after --substituters or Nix's
	trustedKeys   []keyArg // --public-key arguments
	extraKeys     []keyArg // --extra-trusted-public-keys arguments
	trusted       []signing.PublicKey
	extraTrusted  []signing.PublicKey
	noBuild       bool
	jobs          int
	nixArgs       []string // --arg NAME EXPR / --argstr NAME VALUE words, in order
	installables  []string // positional arguments
	store         string   // --store
	substitutersS bool     // --substituter or --substituters given
	trustedKeysS  bool     // --public-key or its aliases given
	netrcFile     string   // --netrc-file
	netrc         *netrc.File
	netrcMissing  bool            // Nix's netrc-file is not there
	userinfoHosts map[string]bool // host:port of cache URLs with credentials
	client        *http.Client    // for HTTP caches, with netrc's credentials
}

const targetUsage = "TARGETS... [--file F|--expr E --attr A [--arg N E] [--argstr N V]] [--paths-from FILE]"

const targetHelp = "Targets are flake installables (.#foo; .#nixosConfigurations.NAME means its\n" +
	"toplevel), attributes of --file F or --expr E (--attr A), or store paths and\n" +
	".drv files, as arguments or one a line in --paths-from FILE. An attribute\n" +
	"brings every output of its derivation; DRV!OUT,OUT names outputs exactly."

// planHelp explains the planning flags plan and pack add to the targets.
const planHelp = "--mode runtime takes the runtime closure; sources adds the output of every\n" +
	"fixed-output derivation (tarballs, git checkouts); build, the default, adds\n" +
	"every output of the build closure. Each path comes from the local store,\n" +
	"else from an upstream cache a trusted key signed, else Nix fetches or builds\n" +
	"it (--no-build makes that an error, exit 8)."

// register adds the target and planning flags (plan, pack), --jobs with
// jobsUsage, which says what the command does at once.
func (f *targetFlags) register(fs *pflag.FlagSet, jobsUsage string) {
	f.registerTargets(fs, jobsUsage)
	fs.StringVar(&f.mode, "mode", "build", "what to carry, by `MODE`: runtime, sources or build")
	fs.BoolVar(&f.derivations, "derivations", false, "include the .drv closure")
	fs.Var(listFlag{&f.substituters, false, "URL"}, "substituter", "upstream binary cache, in order of preference (repeatable; default: Nix's substituters)")
	fs.Var(listFlag{&f.substituters, true, "URLS"}, "substituters", "Nix's name for --substituter: URLs separated by spaces")
	fs.Var(listFlag{&f.extraSubs, true, "URLS"}, "extra-substituters", "upstream binary cache URLs, separated by spaces, used after --substituter's or Nix's, as Nix's --extra-substituters")
	addPublicKeyFlags(fs, &f.trustedKeys, "key an upstream cache's narinfos must be signed by (default: Nix's trusted-public-keys)")
	fs.Var(publicKeyFlag{&f.extraKeys, "extra-trusted-public-keys", true}, "extra-trusted-public-keys", "keys, separated by spaces, trusted besides --public-key's or Nix's, as Nix's --extra-trusted-public-keys")
	fs.BoolVar(&f.noBuild, "no-build", false, "fail, listing them, if paths are neither in the store nor upstream")
}

// registerTargets adds only the flags that name targets, and --jobs
// with jobsUsage (check).
func (f *targetFlags) registerTargets(fs *pflag.FlagSet, jobsUsage string) {
	fs.StringVarP(&f.file, "file", "f", "", "Nix `FILE` whose attributes (--attr) are targets")
	fs.StringVarP(&f.expr, "expr", "E", "", "Nix expression `EXPR` whose attributes (--attr) are targets")
	fs.VarP(listFlag{&f.attrs, false, "ATTR"}, "attr", "A", "attribute of --file or --expr to use as a target (repeatable)")
	fs.VarP(listFlag{&f.include, false, "PATH"}, "include", "I", "add PATH to Nix's search path, as nix-build -I (repeatable)")
	fs.BoolVar(&f.showTrace, "show-trace", false, "have Nix show the trace of an evaluation error")
	fs.BoolVar(&f.impure, "impure", false, "let Nix evaluate flakes impurely (builtins.getEnv, NIXPKGS_ALLOW_UNFREE=1), as nix build --impure")
	fs.Var(listFlag{&f.pathsFrom, false, "FILE"}, "paths-from", "file listing store paths, one a line, plain or xz (repeatable)")
	// 0 is each consumer's own default, which the usage says.
	fs.IntVarP(&f.jobs, "jobs", "j", 0, jobsUsage)
	fs.Var(nixArg{"arg", &f.nixArgs}, "arg", "pass argument `NAME EXPR`, a Nix expression, to --file or --expr (as nix-build)")
	fs.Var(nixArg{"argstr", &f.nixArgs}, "argstr", "pass argument `NAME VALUE`, a string, to --file or --expr (as nix-build)")
	fs.StringVar(&f.netrcFile, "netrc-file", "", "netrc `FILE` with the credentials of HTTP caches (default: Nix's netrc-file, /etc/nix/netrc)")
	fs.StringVar(&f.store, "store", "", "Nix `STORE` to use: auto, daemon, local or unix://SOCKET")
}

// checkStore accepts, for --store, the stores whose paths nix-airgap can
// read at their store paths, as it dumps and reads them itself: not a
// chroot store (local?root=DIR, or a bare directory) or a remote one.
func checkStore(s string) error {
	base, query, _ := strings.Cut(s, "?")
	switch {
	case s == "":
		return nil
	case base == "auto" || base == "daemon" || strings.HasPrefix(base, "unix://"),
		base == "local" && !strings.Contains(query, "root=") && !strings.Contains(query, "real="):
		return nil
	}
	return usageError{fmt.Errorf("--store %s: nix-airgap reads store paths where they are, so it supports only auto, daemon, local and unix://SOCKET stores", s)}
}

// runner runs Nix in the store --store names, evaluating with -I,
// --show-trace and --impure.
func (f *targetFlags) runner(log *slog.Logger) *nixcli.Runner {
	var eval []string
	for _, p := range f.include {
		eval = append(eval, "-I", p)
	}
	if f.showTrace {
		eval = append(eval, "--show-trace")
	}
	if f.impure {
		eval = append(eval, "--impure")
	}
	return &nixcli.Runner{Log: log, Store: f.store, EvalArgs: eval}
}

// nixArgSep joins the two words of --arg and --argstr into the one value
// pflag takes (see joinNixArgs). No argument can contain a NUL, so the
// name and value come apart exactly as given.
const nixArgSep = "\x00"

// joinNixArgs rewrites nix-build's two-word --arg NAME EXPR and --argstr
// NAME VALUE into one word each, "--arg=NAME\x00EXPR", so that cobra parses
// every flag. It leaves alone whatever follows "--", and a --arg with
// fewer than two words after it, for pflag and nixArg to report.
func joinNixArgs(args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		if (a == "--arg" || a == "--argstr") && i+2 < len(args) {
			a += "=" + args[i+1] + nixArgSep + args[i+2]
			i += 2
		}
		out = append(out, a)
	}
	return out
}

// nixArg is the value of --arg or --argstr: it appends the flag and its
// two words to *words, which keeps them in the order given, as
// plan.Args.NixArgs takes them.
type nixArg struct {
	flag  string
	words *[]string
}

func (a nixArg) String() string { return "" }
func (a nixArg) Type() string   { return "NAME VALUE" }

func (a nixArg) Set(s string) error {
	name, value, ok := strings.Cut(s, nixArgSep)
	if !ok {
		return errors.New("needs two words: NAME and a value")
	}
	*a.words = append(*a.words, "--"+a.flag, name, value)
	return nil
}

// parse takes the positional targets and checks the flags cobra parsed.
func (f *targetFlags) parse(cmd *cobra.Command, args []string) error {
	fl := cmd.Flags()
	f.installables = args
	f.substitutersS, f.trustedKeysS = changed(fl, "substituter", "substituters"), publicKeyFlagsChanged(fl)
	if f.jobs < 0 || fl.Changed("jobs") && f.jobs == 0 {
		return usageError{fmt.Errorf("--jobs %d: want at least 1", f.jobs)}
	}
	if err := checkStore(f.store); err != nil {
		return err
	}
	// Read the keys now: a bad one is reported before Nix runs.
	var err error
	if f.trusted, err = readPublicKeys(f.trustedKeys); err != nil {
		return err
	}
	f.extraTrusted, err = readPublicKeys(f.extraKeys)
	return err
}

// targets parses the targets and planning options in the store dir
// runner reports.
func (f *targetFlags) targets(ctx context.Context, runner *nixcli.Runner) (storepath.Dir, []plan.TargetSpec, plan.Options, error) {
	mode, err := role.ParseMode(f.mode)
	if err != nil {
		return "", nil, plan.Options{}, usageError{fmt.Errorf("--mode: %w", err)}
	}
	if f.needConfig() {
		// f.planner reads Nix's configuration. Each nix start-up costs
		// 15-25 ms, so read it (the runner keeps it) while the store dir
		// is asked; an error comes again when the planner asks.
		var config errgroup.Group
		config.Go(func() error { _, err := runner.Config(ctx); return err })
		defer config.Wait()
	}
	dir, targets, err := f.targetSpecs(ctx, runner)
	return dir, targets, plan.Options{Mode: mode, Derivations: f.derivations, NoBuild: f.noBuild}, err
}

// needConfig reports whether f.planner reads Nix's configuration: for
// whatever the flags do not give.
func (f *targetFlags) needConfig() bool { return !f.substitutersS || !f.trustedKeysS }

// targetSpecs parses only the targets, in the store dir runner reports.
func (f *targetFlags) targetSpecs(ctx context.Context, runner *nixcli.Runner) (storepath.Dir, []plan.TargetSpec, error) {
	dir, err := runner.StoreDir(ctx)
	if err != nil {
		return "", nil, err
	}
	targets, err := plan.ParseTargets(dir, plan.Args{
		Installables: f.installables, File: f.file, Expr: f.expr, Attrs: f.attrs, NixArgs: f.nixArgs, Include: f.include, PathsFrom: f.pathsFrom,
	})
	if errors.Is(err, plan.ErrBadTarget) {
		err = usageError{err}
	}
	return dir, targets, err
}

// planner makes a Planner with the upstreams and trusted keys the flags
// name, or Nix's own configuration's.
func (f *targetFlags) planner(ctx context.Context, log *slog.Logger, runner *nixcli.Runner, dir storepath.Dir) (*plan.Planner, error) {
	subs, pks := f.substituters, slices.Clone(f.trusted)
	var confKeys []string
	if f.needConfig() {
		conf, err := runner.Config(ctx)
		if err != nil {
			return nil, err
		}
		if !f.substitutersS {
			subs = conf.Substituters
		}
		if !f.trustedKeysS {
			confKeys = conf.TrustedPublicKeys
		}
	}
	// As Nix's extra- settings, added to whichever list is in force.
	for _, u := range f.extraSubs {
		if !slices.Contains(subs, u) {
			subs = append(subs[:len(subs):len(subs)], u)
		}
	}
	pks = append(pks, f.extraTrusted...)
	for _, k := range confKeys {
		pk, err := signing.ParsePublicKey(k)
		if err != nil {
			// Name the key only: what follows its colon may be secret.
			name, _, _ := strings.Cut(k, ":")
			log.Warn("ignoring a trusted public key from the Nix configuration", "name", name, "err", err)
			continue
		}
		pks = append(pks, pk)
	}
	p := &plan.Planner{Nix: runner, StoreDir: dir, TrustedKeys: signing.NewKeyring(pks...), Jobs: f.jobs, Log: log}
	var down []error
	for _, u := range subs {
		var client *http.Client
		if cache.IsHTTP(u) {
			var err error
			if client, err = f.httpClient(ctx, runner, u); err != nil {
				return nil, err
			}
		}
		up, err := plan.OpenUpstream(ctx, u, dir, client)
		u = storage.Redact(u)
		err = f.withCredentialsHint(err)
		switch {
		case err == nil:
			p.Upstreams = append(p.Upstreams, up)
		case errors.Is(err, storage.ErrUnavailable):
			down = append(down, err)
		case f.substitutersS || slices.Contains(f.extraSubs, u):
			return nil, fmt.Errorf("substituter %s: %w", u, err)
		default:
			// Nix skips a substituter it cannot use; so do we.
			log.Warn("skipping a substituter from the Nix configuration", "url", u, "err", err)
		}
	}
	// Nix warns of a substituter that does not answer and goes on with
	// the others, and so do we: the paths are the same, those it would
	// have had come from another or are built. When none of those the
	// user named answers, though, the plan would be to build everything
	// the store lacks, which a try a little later would not: say so, and
	// exit 75. Nix's own substituters down (a packing machine cut off
	// from cache.nixos.org) leave the store and builds, as for Nix.
	if (f.substitutersS || len(f.extraSubs) > 0) && len(p.Upstreams) == 0 && len(down) > 0 {
		return nil, errors.Join(down...)
	}
	for _, err := range down {
		log.Warn("skipping a substituter that did not answer", "err", err)
	}
	return p, nil
}

func planCommand(e *env) *cobra.Command {
	var (
		tf           targetFlags
		asJSON       bool
		listPaths    bool
		since        []string
		binaryDeltas bool
	)
	cmd := &cobra.Command{
		Use:   "plan " + targetUsage + " [--mode M] [--paths] [--json]",
		Short: "Work out every store path targets need, and where each comes from",
		Long: "plan evaluates the targets and lists every store path an airgapped machine\n" +
			"needs for them, with its role and where pack will get it. It copies nothing.\n" +
			"--paths lists every path, --json the whole plan for scripts, and --since OLD\n" +
			"says what pack --since OLD would leave out.\n\n" +
			targetHelp + "\n\n" + planHelp + "\n\n" +
			detailsLine("plan") + "\n\n" +
			exitHelp(ExitCorrupt, ExitMissing, ExitNixFailed, ExitNotBuilt, ExitUnavailable),
		Example: "  nix-airgap plan .#nixosConfigurations.gateway\n" +
			"  nix-airgap plan .#nixosConfigurations.gateway --mode sources --paths\n" +
			"  nix-airgap plan .#nixosConfigurations.gateway --since /media/usb/bundle-1\n" +
			"  nix-airgap plan --file '<nixpkgs>' --attr hello --json",
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := tf.parse(cmd, args); err != nil {
				return err
			}
			ctx := cmd.Context()
			// A bad base is told before any Nix or network work, as pack does.
			bases, err := pack.OpenSince(ctx, since)
			if err != nil {
				return fmt.Errorf("plan: %w", err)
			}
			runner := tf.runner(e.log)
			dir, targets, opts, err := tf.targets(ctx, runner)
			if err != nil {
				return fmt.Errorf("plan: %w", err)
			}
			p, err := tf.planner(ctx, e.log, runner, dir)
			if err != nil {
				return fmt.Errorf("plan: %w", err)
			}
			start := time.Now()
			prog := statusLine(e, "plan")
			pl, err := p.Plan(ctx, targets, opts)
			prog.Clear()
			if pl == nil {
				return tf.withCredentialsHint(err)
			}
			if cerr := pl.CheckTargetPaths(); cerr != nil {
				return cerr // "plan target X: problem", as the planner's errors
			}
			e.log.Info("planned", "paths", len(pl.Items), "duration", time.Since(start).Round(time.Millisecond))
			if len(since) > 0 {
				if pl.Since, err = planSince(ctx, e, p, pl, since, bases, binaryDeltas); err != nil {
					return fmt.Errorf("plan: %w", err)
				}
			}
			if asJSON {
				if werr := writeJSON(e.stdout, pl); werr != nil {
					return fmt.Errorf("plan: %w", werr)
				}
			} else if werr := writePlanTable(e, pl, listPaths); werr != nil {
				return fmt.Errorf("plan: %w", werr)
			}
			return err
		},
	}
	tf.register(cmd.Flags(), "run `N` upstream lookups and .drv reads at once (default 16)")
	cmd.Flags().BoolVar(&listPaths, "paths", false, "also list every path with its roles, source and NAR size")
	cmd.Flags().Var(listFlag{&since, false, "OLD"}, "since", "say what pack --since OLD would leave out and what binary deltas would save (repeatable)")
	cmd.Flags().BoolVar(&binaryDeltas, "binary-deltas", true, "with --since, compute the binary deltas pack would make of local paths, to say what they save")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the whole plan as JSON")
	return cmd
}

func writePlanTable(e *env, pl *plan.Plan, listPaths bool) error {
	w := e.stdout
	fmt.Fprintf(w, "mode %s%s, store %s\n", pl.Mode, map[bool]string{true: " with derivations"}[pl.Derivations], pl.StoreDir)
	const maxListed = 20
	for i, t := range pl.Targets {
		if i == maxListed && !listPaths {
			fmt.Fprintf(w, "… and %d more targets\n", len(pl.Targets)-maxListed)
			break
		}
		if t.DrvPath != (storepath.Path{}) {
			fmt.Fprintf(w, "target %s: %s\n", t.Spec, t.DrvPath)
		} else {
			fmt.Fprintf(w, "target %s\n", t.Spec)
		}
	}
	fmt.Fprintln(w)
	if listPaths {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, it := range pl.Items {
			src, size := it.Source.Kind.String(), progress.IEC(it.NarSize)
			switch it.Source.Kind {
			case plan.FromUpstream:
				src = it.Source.URL
			case plan.FromBuild:
				size = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", it.Path, it.Roles, src, size)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(w)
	}
	sum := pl.Summary()
	if err := sum.WriteTable(w); err != nil {
		return err
	}
	if s := pl.Since; s != nil {
		// The sizes above are of every path; say what the delta keeps.
		fmt.Fprintf(w, "\nsince %s: %s a site that imported the bases holds, left out (%s NAR",
			strings.Join(s.Bases, ", "), progress.Plural(s.InBases, "path"), progress.IEC(s.InBasesNarSize))
		if s.InBasesNotCarried > 0 {
			fmt.Fprintf(w, "; %d not carried by the bases themselves: what theirs refer to, or their own bases provided", s.InBasesNotCarried)
		}
		fmt.Fprintf(w, "); %s to carry (%s NAR)",
			progress.Plural(len(pl.Items)-s.InBases, "path"), progress.IEC(sum.NarSize-min(s.InBasesNarSize, sum.NarSize)))
		if s.DeltaTried > 0 || s.DeltaNoBase > 0 {
			fmt.Fprintf(w, "; binary deltas (of paths in the local store): %s, %s saved", progress.Plural(s.DeltaPaths, "path"), progress.IEC(s.DeltaSaved))
			if s.DeltaNoBase > 0 {
				fmt.Fprintf(w, " (%d whole, the base's NAR not at hand)", s.DeltaNoBase)
			}
		}
		fmt.Fprintln(w)
	}
	return nil
}

// planSince is plan --since: what a site that imported the bases, opened
// from since, holds (what pack --since leaves out: bundle.Bases.Known),
// and what binary deltas against them save, made as pack would make them.
func planSince(ctx context.Context, e *env, p *plan.Planner, pl *plan.Plan, since []string, bases *bundle.Bases, deltas bool) (*plan.Since, error) {
	s := &plan.Since{Bases: since}
	known := bases.Known(pl.References)
	for _, it := range pl.Items {
		if known.Has(it.Path) {
			s.InBases++
			s.InBasesNarSize += it.NarSize
			if !known.Carried(it.Path) {
				s.InBasesNotCarried++
			}
		}
	}
	if !deltas {
		return s, nil
	}
	prog := statusLine(e, "binary deltas")
	defer prog.Clear()
	st, err := (&pack.Packer{Planner: p, Log: e.log}).EstimateDeltas(ctx, pl, bases, "", "")
	if err != nil {
		return nil, err
	}
	s.DeltaPaths, s.DeltaSaved, s.DeltaTried, s.DeltaNoBase = st.Paths, st.Saved, st.Tried, st.NoBase
	return s, nil
}
