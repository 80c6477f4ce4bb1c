// Package pack copies everything a plan lists into a bundle: the online
// half's copier behind `nix-airgap pack`.
//
// A Packer plans the targets (internal/plan), realises with Nix whatever is
// neither in the local store nor on a trusted upstream cache (unless
// NoBuild), plans again so that the runtime closures of newly built paths
// are complete, and then writes every path the bundles named by
// Options.Since do not already carry, taking each from the fastest honest
// source:
//
//  1. valid in the local store: its NAR is dumped in-process, compressed
//     and hashed while it streams, and checked against the store's NarHash
//     before its narinfo is written;
//  2. on an upstream binary cache: the compressed NAR is copied verbatim
//     with its narinfo (upstream signatures kept, the bundle's added), its
//     hashes checked while it streams, never touching the local store;
//  3. otherwise it is realised with Nix and then taken from the store.
//
// A copy that fails (a bad hash, an unreachable cache) is logged and the
// next source is tried: the next trusted upstream, then the store, then a
// build. Writing goes through bundle.Writer, which publishes each NAR
// before its narinfo and the manifest last, so an interrupted pack never
// leaves a bundle that looks complete; re-running into the same directory
// reuses the NAR files already there once they verify, and into the same
// FILE.tar goes on from the start of the tar the interrupted pack left.
//
// Pack runs the steps, a file each: realise.go plans and realises,
// output.go opens, closes and reads back the bundle, copy.go (with
// delta.go) copies the paths and channel.go adds the channels.
package pack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/progress"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// ErrStoreCorrupt reports a store path whose NAR differs from what the
// store's database says (nix-store --verify --check-contents would
// complain too).
var ErrStoreCorrupt = errors.New("store path does not match its recorded NarHash")

// Phases reported to Progress, in the order they run.
const (
	PhasePlan    = "plan"             // evaluating and planning
	PhaseRealise = "realise"          // building and fetching with Nix
	PhaseResume  = bundle.PhaseResume // reading the tar a killed pack left
	PhaseCopy    = "copy"             // writing paths into the bundle
	PhaseClose   = "close"            // writing the manifest
)

// Progress receives a pack's progress. Implementations must be safe for
// concurrent use: paths are copied in parallel.
type Progress interface {
	// Phase starts a phase that expects paths paths and bytes bytes (0
	// when unknown).
	Phase(name string, paths int, bytes int64)
	// Step reports progress within the phase: bytes more bytes read, and,
	// when path is not "", that path finished, from source ("store",
	// "build", an upstream URL, or "reused").
	Step(path, source string, bytes int64)
}

// ActivityProgress is a Progress that also hears what Nix is building or
// substituting while pack realises paths: the names, "hello-2.12", of
// what is in progress, whenever that changes.
type ActivityProgress interface {
	Progress
	Activity(names []string)
}

// WorkProgress is a Progress that also hears what Nix says it will do
// when pack realises paths, before it starts: how many derivations it
// will build and paths it will fetch, which can be more than the paths
// pack asked for.
type WorkProgress interface {
	Progress
	Work(build, fetch int)
}

// BuildProgress is a Progress that also hears how Nix's builds go while
// pack realises paths: Nix's count of builds done of total, failed, and
// the builds that finished; the phase a build enters; and, unless
// Packer.BuildLog takes them, the lines builders print.
type BuildProgress interface {
	Progress
	Builds(done, total, failed int, finished []string)
	BuildPhase(name, phase string)
	BuildLine(name, line string)
}

// CopyProgress is a Progress that also hears Nix's count of paths it
// copies from substituters and bytes it downloads while pack realises
// paths.
type CopyProgress interface {
	Progress
	Copies(progress.CopyCount)
}

// Options choose what to pack and where.
type Options struct {
	// Mode, Derivations and NoBuild are the plan's. With NoBuild, paths
	// that would have to be realised fail the pack with a
	// *plan.MissingError listing them (those its bases carry excepted).
	plan.Options

	// Out is a directory (created, or an earlier bundle reused), a file
	// ending in .tar, or "-" for a tar stream on Stdout.
	Out    string
	Stdout io.Writer
	// VolumeSize, if not 0, writes Out (NAME.tar) as a volume set of
	// NAME.001.tar, NAME.002.tar, …, each at most VolumeSize bytes.
	VolumeSize int64

	// Key signs narinfos and the manifest; nil leaves the bundle unsigned.
	Key *signing.SecretKey
	// Compression is "zstd" (the default), "xz" or "none"; Level is the
	// codec's level, 0 its default.
	Compression string
	Level       int
	// XZProgram, if set, is the xz(1) that xz compression runs (see
	// compression.WriterOptions); "" means the pure-Go encoder.
	XZProgram string

	// Since are what the airgapped side holds already (bundle
	// directories or tars, volumes, manifest.json files, cache inventories
	// or caches; see bundle.OpenBases): paths they carry are left out,
	// and the manifest names them as bases.
	Since []string
	// Bases are Since as OpenSince opened them; nil means Pack opens
	// them itself.
	Bases *bundle.Bases
	// OutCheck is what CheckOut found at Out; nil means Pack looks
	// itself, as it does when Out changed since.
	OutCheck *OutCheck

	// NoBinaryDeltas ships every path's NAR whole. The zero value makes,
	// for each path with a similar path in the Since bases, a binary
	// delta against that path's NAR, and ships it instead of the NAR
	// when it is smaller (docs/bundle-format.md §10).
	NoBinaryDeltas bool
	// Channels are nixpkgs channels to carry, each as its nixexprs
	// tarball.
	Channels []Channel

	// SBOM adds a CycloneDX SBOM of the bundle's paths as sbom.FileName.
	SBOM bool

	// Tool is the manifest's "tool"; "" means "nix-airgap".
	Tool string
	// TempDir is where the tar form spools NAR files; "" means
	// os.TempDir().
	TempDir string
}

// Packer writes bundles. Only Planner is required.
type Packer struct {
	// Planner plans the targets; its Nix, StoreDir, Upstreams and
	// TrustedKeys are pack's too.
	Planner *plan.Planner
	// Nix realises paths; nil means Planner.Nix (or a zero Runner).
	Nix *nixcli.Runner
	// Jobs is how many local paths are dumped and compressed at once;
	// 0 means GOMAXPROCS, at most 4. A path's zstd compressor uses
	// GOMAXPROCS goroutines too when the smaller paths after it would
	// leave the other jobs idle before it ends (copier.oneCoreItems), so
	// that one big path alone still keeps every core busy.
	Jobs int
	// Downloads is how many upstream NAR files are copied at once; 0
	// means 8.
	Downloads int
	// Log gets warnings and progress; nil discards them.
	Log *slog.Logger
	// Progress, when set, gets phases and steps, and, if it is an
	// ActivityProgress or BuildProgress, what Nix is building.
	Progress Progress
	// BuildLog, when set, gets every line a builder prints while pack
	// realises paths, with the build's name (pack --print-build-logs); a
	// failed build's error then leaves out the last lines, shown already.
	BuildLog func(name, line string)
	// HTTPClient fetches channels given by URL; nil means
	// cache.NewHTTPClient().
	HTTPClient *http.Client
}

// Result is what a pack did.
type Result struct {
	// Plan is the final plan (after realising). The NarInfo of each item
	// copied from an upstream is nil: pack lets go of it once the path is
	// in the bundle, whose manifest says the same.
	Plan *plan.Plan
	// Paths are the paths written, sorted.
	Paths []PathResult
	// Bases are the manifest's bases (what Options.Since named); InBases
	// counts the planned paths they carry, left out.
	Bases   []bundle.Base
	InBases int
	// InBasesNotCarried counts those of InBases no base carries itself:
	// a site that imported the bases holds them through what the bases
	// carry (its closure) or what their own bases provided.
	InBasesNotCarried int
	// Deltas says what binary deltas saved.
	Deltas DeltaStats
	// ChannelsInBases are the channels left out because a base carries
	// the very same tarball.
	ChannelsInBases []string
	// Built are the paths realised with Nix.
	Built []storepath.Path
	// ID is the bundle's id: the sha256 of its manifest.json.
	ID storepath.Hash
	// Volumes are the volume files written, for a volume set.
	Volumes []string
	// NarBytes adds up the written paths' NAR sizes; FileBytes their
	// NAR and delta files' sizes, compressed. BundleBytes is what the
	// bundle takes on the medium: every file of a directory (narinfos,
	// manifest and signature too: what verify reads), the whole stream
	// for a tar, the volume files for a volume set.
	NarBytes    uint64
	FileBytes   uint64
	BundleBytes uint64
	Elapsed     time.Duration
	// Signed says whether a key signed the bundle.
	Signed bool
	// Manifest is the bundle's manifest.json, parsed.
	Manifest *bundle.Manifest
}

// PathResult is one path written.
type PathResult struct {
	Path  storepath.Path
	Roles role.Set
	// Source is where it came from: "store", "build" (realised, then
	// from the store), or an upstream's URL.
	Source string
	// Reused says an earlier bundle in the output directory, or the tar
	// a killed pack into the output left, had it, and its NAR file
	// verified.
	Reused   bool
	NarSize  uint64
	FileSize uint64
}

func (p *Packer) log() *slog.Logger {
	if p.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Log
}

func (p *Packer) nix() *nixcli.Runner {
	switch {
	case p.Nix != nil:
		return p.Nix
	case p.Planner.Nix != nil:
		return p.Planner.Nix
	}
	return &nixcli.Runner{Log: p.Log}
}

func (p *Packer) jobs() int {
	if p.Jobs > 0 {
		return p.Jobs
	}
	return min(runtime.GOMAXPROCS(0), 4)
}

func (p *Packer) downloads() int {
	if p.Downloads > 0 {
		return p.Downloads
	}
	return 8
}

type nopProgress struct{}

func (nopProgress) Phase(string, int, int64)   {}
func (nopProgress) Step(string, string, int64) {}

func (p *Packer) progress() Progress {
	if p.Progress == nil {
		return nopProgress{}
	}
	return p.Progress
}

// Pack plans targets, realises what is missing and writes the bundle
// opts.Out names. Nix failures, evaluation errors included, are returned
// as the *nixcli.ExitError carrying Nix's message; with NoBuild, missing
// paths give a *plan.MissingError.
func (p *Packer) Pack(ctx context.Context, targets []plan.TargetSpec, opts Options) (*Result, error) {
	start := time.Now()
	if p.Planner == nil {
		return nil, errors.New("pack: no planner")
	}
	given := opts.Out
	resolved, olds, err := opts.OutCheck.resolve(opts)
	if err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	opts.Out = resolved
	if opts.Compression == "" {
		opts.Compression = compression.Zstd
	}
	if _, err := compression.Ext(opts.Compression); err != nil {
		return nil, fmt.Errorf("pack: compression %q: %w", opts.Compression, err)
	}
	if err := p.checkChannels(ctx, opts); err != nil {
		return nil, err
	}
	log := p.log()
	res := &Result{Signed: opts.Key != nil}

	bases := opts.Bases
	if bases == nil {
		if bases, err = OpenSince(ctx, opts.Since); err != nil {
			return nil, fmt.Errorf("pack: %w", err)
		}
	}
	if err := refuseOther(given, olds, targets, opts.Mode); err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	replaced := replacedBundle(olds)

	pl, built, err := p.planAndRealise(ctx, targets, opts.Options, bases)
	if err != nil {
		return nil, err
	}
	res.Plan, res.Built = pl, built
	if sd := bases.StoreDir(); sd != "" && sd != pl.StoreDir {
		return nil, fmt.Errorf("pack: --since: the bases are for store %s, the targets for %s", sd, pl.StoreDir)
	}

	known := bases.Known(pl.References)
	items := res.leaveOut(pl, known)
	if res.InBases > 0 {
		log.Info("leaving out paths a site that imported the bases holds", "paths", res.InBases, "not_carried_by_them", res.InBasesNotCarried, "bases", len(opts.Since))
	}

	if opts.Key != nil {
		if err := keyInFlakes(ctx, items, opts.Key); err != nil {
			return nil, err
		}
	}

	out, err := p.openOutput(ctx, opts, pl.StoreDir, items)
	if err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	defer out.abort()
	if opts.Key == nil {
		// Said once the bundle is being written, not before a
		// failure that writes none.
		log.Warn("no --secret-key: the bundle will be unsigned, and verify and import refuse an unsigned bundle unless given --allow-unsigned")
	}

	c := &copier{
		p: p, w: out.w, pl: pl, builtSet: map[storepath.Path]bool{}, inBase: known.Has, prog: p.progress(), log: log,
		bases: bases, noDeltas: opts.NoBinaryDeltas, tempDir: opts.TempDir,
	}
	for _, b := range built {
		c.builtSet[b] = true
	}
	results, err := c.copyAll(ctx, items)
	if err != nil {
		return nil, err
	}
	res.Built = append(res.Built, c.extraBuilt...)
	res.Deltas = c.deltas
	if res.Manifest, err = p.close(ctx, out, pl, opts, bases, known, res); err != nil {
		return nil, err
	}
	res.Bases = res.Manifest.Bases
	res.Paths = results
	for _, r := range results {
		res.NarBytes += r.NarSize
	}
	if err := res.readBack(out); err != nil {
		return nil, err
	}
	if replaced != "" && !sameContent(olds[0].m, res.Manifest) {
		// Said where it is seen: a pack without --since over last
		// week's delta otherwise replaces it without a word.
		log.Warn(fmt.Sprintf("replaced bundle %s at %s", replaced, given))
	}
	res.Elapsed = time.Since(start)
	return res, nil
}

// OpenSince opens the bases since names. Pack does it first, once
// checkOut has refused a base that is the output; a caller that does it
// before any Nix work (after CheckOut), and passes them as
// Options.Bases, reports a bad base at once.
func OpenSince(ctx context.Context, since []string) (*bundle.Bases, error) {
	bases, err := bundle.OpenBases(ctx, since)
	if err != nil {
		return nil, fmt.Errorf("--since: %w", err)
	}
	return bases, nil
}

// leaveOut returns pl's items that a site that imported the bases lacks,
// counting the others in r.
func (r *Result) leaveOut(pl *plan.Plan, known *bundle.Known) []*plan.Item {
	var items []*plan.Item
	for i := range pl.Items {
		it := &pl.Items[i]
		if known.Has(it.Path) {
			r.InBases++
			if !known.Carried(it.Path) {
				r.InBasesNotCarried++
			}
			continue
		}
		items = append(items, it)
	}
	return items
}

// ErrKeyInFlake reports a secret key that a flake source the bundle
// would carry holds: the key would cross the airgap with it.
var ErrKeyInFlake = errors.New("the secret key is in the flake's source, which the bundle carries across")

// maxKeyFile bounds the files searched for the key: a key file is about
// 100 bytes, a file that quotes one is small too.
const maxKeyFile = 64 << 10

// keyInFlakes refuses to pack items when the source of a flake in a local
// directory among them (path:, or git+file: with the key committed)
// holds sk: a key kept in the flake directory travels with it, and serve
// would hand it to every client. Sources of other flakes are not
// searched: they are fetched, not made from this machine's files.
func keyInFlakes(ctx context.Context, items []*plan.Item, sk *signing.SecretKey) error {
	_, secret, _ := strings.Cut(sk.String(), ":")
	for _, it := range items {
		if !it.LocalFlake() {
			continue
		}
		root := it.Path.String()
		name, err := findInTree(ctx, root, []byte(secret), maxKeyFile)
		if name != "" {
			rel, _ := filepath.Rel(root, name)
			return fmt.Errorf("%w: %s in the flake source %s (%s): keep the key outside the flake directory, and out of its git history", ErrKeyInFlake, rel, it.Path, it.Fetch.URLs[0])
		}
		if err != nil {
			return fmt.Errorf("pack: %w", err)
		}
	}
	return nil
}
