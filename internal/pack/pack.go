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
package pack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/atomicfile"
	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/derivation"
	"github.com/nix-airgap/nix-airgap/internal/inventory"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/progress"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/sbom"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// ErrNoOutput reports Options without an output.
var ErrNoOutput = errors.New("no output given")

// ErrSinceIsOut reports a base bundle that is also the output: packing
// would replace the bundle it is meant to extend.
var ErrSinceIsOut = errors.New("the base bundle is the output directory")

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
	// 0 means GOMAXPROCS, at most 4. Each path's zstd compressor may use
	// GOMAXPROCS goroutines too, so that one big path alone still keeps
	// every core busy.
	Jobs int
	// Downloads is how many upstream NAR files are copied at once; 0
	// means 8.
	Downloads int
	// Logger gets warnings and progress; nil discards them.
	Logger *slog.Logger
	// Progress, when set, gets phases and steps, and, if it is an
	// ActivityProgress, what Nix is building.
	Progress Progress
	// BuildLog, when set, gets every line a builder prints while pack
	// realises paths, with the build's name (pack --print-build-logs).
	BuildLog func(name, line string)
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
	// Deltas says what binary deltas saved.
	Deltas DeltaStats
	// ChannelsInBases are the channels left out because a base carries
	// the very same tarball.
	ChannelsInBases []string
	// Built are the paths realised with Nix.
	Built []storepath.Path
	// ID is the bundle's id, for a directory or a volume set; zero for a
	// tar.
	ID storepath.Hash
	// Volumes are the volume files written, for a volume set.
	Volumes []string
	// NarBytes adds up the written paths' NAR sizes; BundleBytes is the
	// bundle's size: its NAR files and narinfos for a directory, the
	// whole stream for a tar.
	NarBytes    uint64
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
	if p.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Logger
}

func (p *Packer) nix() *nixcli.Runner {
	switch {
	case p.Nix != nil:
		return p.Nix
	case p.Planner.Nix != nil:
		return p.Planner.Nix
	}
	return &nixcli.Runner{Logger: p.Logger}
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
	if opts.Out == "" {
		return nil, fmt.Errorf("pack: %w", ErrNoOutput)
	}
	if opts.Compression == "" {
		opts.Compression = compression.Zstd
	}
	if _, err := compression.Ext(opts.Compression); err != nil {
		return nil, fmt.Errorf("pack: compression %q: %w", opts.Compression, err)
	}
	log := p.log()
	res := &Result{Signed: opts.Key != nil}

	for _, s := range opts.Since {
		if sameDir(s, opts.Out) || sameDir(filepath.Dir(s), opts.Out) && filepath.Base(s) == bundle.ManifestName {
			return nil, fmt.Errorf("pack: --since %s: %w", s, ErrSinceIsOut)
		}
	}
	bases, err := bundle.OpenBases(ctx, opts.Since)
	if err != nil {
		return nil, fmt.Errorf("pack: --since: %w", err)
	}
	inBase := bases.Has

	pl, built, err := p.planAndRealise(ctx, targets, opts.Options, inBase)
	if err != nil {
		return nil, err
	}
	res.Plan, res.Built = pl, built
	if sd := bases.StoreDir(); sd != "" && sd != pl.StoreDir {
		return nil, fmt.Errorf("pack: --since: the bases are for store %s, the targets for %s", sd, pl.StoreDir)
	}

	var items []*plan.Item
	for i := range pl.Items {
		it := &pl.Items[i]
		if inBase(it.Path) {
			res.InBases++
			continue
		}
		items = append(items, it)
	}
	if res.InBases > 0 {
		log.Info("leaving out paths the bases carry", "paths", res.InBases, "bases", len(opts.Since))
	}

	out, err := p.openOutput(ctx, opts, pl.StoreDir, items)
	if err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	defer out.abort()

	c := &copier{
		p: p, w: out.w, pl: pl, builtSet: map[storepath.Path]bool{}, inBase: inBase, prog: p.progress(), log: log,
		// A volume set carries whole NARs (docs/bundle-format.md §8).
		bases: bases, noDeltas: opts.NoBinaryDeltas || opts.VolumeSize > 0, tempDir: opts.TempDir,
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
	if res.Manifest, err = p.close(ctx, out, pl, opts, bases, res); err != nil {
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
	res.Elapsed = time.Since(start)
	return res, nil
}

// close adds the channels, the flake registry and, if asked, the SBOM to
// the bundle, then its manifest, and publishes it.
func (p *Packer) close(ctx context.Context, out *output, pl *plan.Plan, opts Options, bases *bundle.Bases, res *Result) (*bundle.Manifest, error) {
	same, err := p.addChannels(ctx, out.w, opts, bases)
	if err != nil {
		return nil, err
	}
	res.ChannelsInBases = slices.Sorted(maps.Keys(same))
	if len(pl.FlakeRegistry) > 0 {
		data, err := registryJSON(pl.FlakeRegistry)
		if err != nil {
			return nil, fmt.Errorf("pack: %w", err)
		}
		if err := out.w.AddFile(bundle.RegistryName, data); err != nil {
			return nil, fmt.Errorf("pack: %w", err)
		}
	}
	p.progress().Phase(PhaseClose, 0, 0)
	tool := opts.Tool
	if tool == "" {
		tool = "nix-airgap"
	}
	header := bundle.ManifestHeader{
		Tool: tool, Created: time.Now().UTC().Truncate(time.Second), Mode: pl.Mode, Derivations: pl.Derivations,
		Targets: manifestTargets(pl.Targets),
	}
	// Each base, with the paths of it that the targets need.
	var leftOut []storepath.Path
	for _, it := range pl.Items {
		if bases.Has(it.Path) {
			leftOut = append(leftOut, it.Path)
		}
	}
	header.Bases = bases.For(out.w.Manifest(header).Paths, leftOut, same)
	if opts.SBOM {
		// The SBOM describes the bundle's paths; it becomes one of its
		// files, which the signed manifest covers.
		data, err := sbom.CycloneDX(inventory.FromManifest(opts.Out, out.w.Manifest(header)))
		if err != nil {
			return nil, fmt.Errorf("pack: %w", err)
		}
		if err := out.w.AddFile(sbom.FileName, data); err != nil {
			return nil, fmt.Errorf("pack: %w", err)
		}
	}
	if err := out.w.Close(ctx, header); err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	if err := out.commit(); err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	return out.w.Written(), nil
}

// readBack fills in the bundle's id and file sizes from the manifest of a
// directory, or the stream's size for a tar.
func (r *Result) readBack(out *output) error {
	if vols := out.w.Volumes(); vols != nil {
		r.Volumes = vols
		for _, v := range vols {
			fi, err := os.Stat(v)
			if err != nil {
				return fmt.Errorf("pack: %w", err)
			}
			r.BundleBytes += uint64(fi.Size())
		}
		r.ID = bundle.ID(out.w.ManifestData())
		return nil
	}
	if out.dir == "" {
		r.BundleBytes = uint64(out.counter.n.Load())
		return nil
	}
	// The manifest has the exact file sizes, and the id: read back from
	// the writer, not the disk, as parsing it again would hold a
	// channel-sized manifest twice.
	r.ID = bundle.ID(out.w.ManifestData())
	size := make(map[string]uint64, len(r.Manifest.Paths))
	for _, e := range r.Manifest.Paths {
		size[e.Path.Hash] = e.FileSize
		r.BundleBytes += e.FileSize
	}
	for i := range r.Paths {
		r.Paths[i].FileSize = size[r.Paths[i].Path.Hash]
	}
	return nil
}

// planAndRealise plans targets and, unless NoBuild, realises whatever must
// be built and plans again, until nothing is left to build.
func (p *Packer) planAndRealise(ctx context.Context, targets []plan.TargetSpec, opts plan.Options, inBase func(storepath.Path) bool) (*plan.Plan, []storepath.Path, error) {
	prog, log := p.progress(), p.log()
	var built []storepath.Path
	// Realising normally completes every closure at once; the bound only
	// stops a store that keeps losing paths from looping forever.
	for round := 0; ; round++ {
		prog.Phase(PhasePlan, 0, 0)
		pl, err := p.Planner.Plan(ctx, targets, plan.Options{Mode: opts.Mode, Derivations: opts.Derivations})
		if err != nil {
			return nil, nil, err
		}
		if err := pl.CheckTargetPaths(); err != nil {
			return nil, nil, fmt.Errorf("pack: %w", err)
		}
		var missing []*plan.Item
		for _, it := range pl.ToBuild() {
			if !inBase(it.Path) {
				missing = append(missing, it)
			}
		}
		if len(missing) == 0 {
			return pl, built, nil
		}
		if opts.NoBuild {
			return pl, nil, fmt.Errorf("pack: %w", &plan.MissingError{Items: missing})
		}
		if round == 2 {
			return nil, nil, fmt.Errorf("pack: %s still missing after realising them, such as %s", progress.Plural(len(missing), "path"), missing[0].Path)
		}
		want := realiseArgs(missing)
		log.Info("realising with Nix", "paths", len(missing), "derivations", len(want))
		prog.Phase(PhaseRealise, len(missing), 0)
		if err := p.realise(ctx, want); err != nil {
			return nil, nil, fmt.Errorf("pack: realise: %w", err)
		}
		for _, it := range missing {
			built = append(built, it.Path)
			prog.Step(it.Path.String(), "build", 0)
		}
	}
}

// realise realises paths with Nix, telling Progress (if it hears
// activities) what is being built and BuildLog every builder line.
func (p *Packer) realise(ctx context.Context, paths []storepath.Path) error {
	opts := nixcli.RealiseOptions{BuildLog: p.BuildLog}
	if ap, ok := p.progress().(ActivityProgress); ok {
		opts.Activity = ap.Activity
	}
	_, err := p.nix().Realise(ctx, opts, paths...)
	return err
}

// realiseArgs is what to pass nix-store --realise for items: each one's
// derivation, or the path itself when no derivation is known.
func realiseArgs(items []*plan.Item) []storepath.Path {
	var out []storepath.Path
	for _, it := range items {
		if it.DrvPath != (storepath.Path{}) {
			out = append(out, it.DrvPath)
		} else {
			out = append(out, it.Path)
		}
	}
	slices.SortFunc(out, storepath.Compare)
	return slices.Compact(out)
}

// sameDir reports whether a and b name the same existing directory.
func sameDir(a, b string) bool {
	sa, err := os.Stat(a)
	if err != nil || !sa.IsDir() {
		return false
	}
	sb, err := os.Stat(b)
	return err == nil && os.SameFile(sa, sb)
}

func manifestTargets(rts []plan.ResolvedTarget) []bundle.Target {
	var out []bundle.Target
	for _, rt := range rts {
		t := bundle.Target{Spec: rt.Spec.Text, DrvPath: rt.DrvPath, Outputs: map[string]storepath.Path{}}
		for name, p := range rt.Outputs {
			t.Outputs[name] = p
		}
		if rt.Path != (storepath.Path{}) && len(t.Outputs) == 0 {
			t.Outputs["out"] = rt.Path
		}
		out = append(out, t)
	}
	return out
}

// registryJSON writes a flake registry (version 2) of entries.
func registryJSON(entries []plan.RegistryEntry) ([]byte, error) {
	type flake struct {
		From map[string]any `json:"from"`
		To   map[string]any `json:"to"`
	}
	reg := struct {
		Version int     `json:"version"`
		Flakes  []flake `json:"flakes"`
	}{Version: 2}
	for _, e := range entries {
		reg.Flakes = append(reg.Flakes, flake{From: e.From.Attrs, To: e.To.Attrs})
	}
	data, err := json.MarshalIndent(reg, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("flake registry: %w", err)
	}
	return append(data, '\n'), nil
}

// output is the bundle being written and what commits it.
type output struct {
	w       *bundle.Writer
	dir     string           // directory form
	file    *atomicfile.File // a .tar file
	counter *countingWriter  // tar form
	done    bool
}

// openOutput opens the bundle for the paths items. A tar file goes on
// from what a killed pack into it left, as far as that holds items.
func (p *Packer) openOutput(ctx context.Context, opts Options, dir storepath.Dir, items []*plan.Item) (*output, error) {
	wopts := bundle.WriterOptions{
		Compression: opts.Compression, Key: opts.Key, TempDir: opts.TempDir, Log: p.Logger,
		Codec: compression.WriterOptions{Level: opts.Level, XZProgram: opts.XZProgram},
	}
	switch {
	case opts.VolumeSize > 0:
		w, err := bundle.NewVolumeWriter(opts.Out, opts.VolumeSize, dir, wopts)
		if err != nil {
			return nil, err
		}
		return &output{w: w}, nil
	case opts.Out == "-":
		if opts.Stdout == nil {
			return nil, errors.New("output -: no stdout")
		}
		cw := &countingWriter{w: opts.Stdout}
		w, err := bundle.NewTarWriter(cw, dir, wopts)
		if err != nil {
			return nil, err
		}
		return &output{w: w, counter: cw}, nil
	case strings.HasSuffix(opts.Out, ".tar"):
		f, resumed, err := atomicfile.Resume(opts.Out, 0o644)
		if err != nil {
			return nil, err
		}
		var prefix *bundle.TarPrefix
		if resumed {
			flat := make(map[storepath.Path]bool, len(items))
			for _, it := range items {
				flat[it.Path] = isFlat(itemCA(it))
			}
			want := func(p storepath.Path) (bool, bool) {
				f, ok := flat[p]
				return f, ok
			}
			if prefix, err = bundle.ScanTar(ctx, f.File, dir, wopts, want, p.progress()); err != nil {
				// Interrupted, it is as the killed pack left it; a file
				// that cannot be read is no start to go on from.
				if ctx.Err() != nil {
					f.Keep()
				} else {
					f.Abort()
				}
				return nil, err
			}
		}
		cw := &countingWriter{w: f}
		cw.n.Store(prefix.Size())
		w, err := bundle.ResumeTarWriter(cw, prefix, dir, wopts)
		if err != nil {
			if resumed {
				f.Keep() // still a start for the next pack
			} else {
				f.Abort()
			}
			return nil, err
		}
		return &output{w: w, file: f, counter: cw}, nil
	}
	w, err := bundle.NewDirWriter(opts.Out, dir, wopts)
	if err != nil {
		return nil, err
	}
	return &output{w: w, dir: opts.Out}, nil
}

func (o *output) commit() error {
	o.done = true
	if o.file != nil {
		return o.file.Commit()
	}
	return nil
}

// abort drops the tar form's spool. A half-written tar file, directory or
// volume set's spool stays: none has a manifest, and the next pack into
// the same output goes on from what it holds.
func (o *output) abort() {
	if o.done {
		return
	}
	o.w.Abort()
	if o.file != nil {
		o.file.Keep()
	}
}

type countingWriter struct {
	w io.Writer
	n atomic.Int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// isFlat reports whether a content address is a flat fixed output's:
// "fixed:ALGO:HASH" without "r:".
func isFlat(ca string) bool {
	return strings.HasPrefix(ca, "fixed:") && !strings.HasPrefix(ca, "fixed:r:")
}

// upstreamOrigin is the origin of a path copied from the cache at url:
// with the names of the trusted keys that signed ni.
func (p *Packer) upstreamOrigin(url string, ni *narinfo.NarInfo) *bundle.Origin {
	o := &bundle.Origin{From: bundle.FromUpstream, URL: url}
	if ni == nil || p.Planner.TrustedKeys == nil {
		return o
	}
	fp := []byte(ni.Fingerprint())
	for _, s := range ni.Sigs {
		if _, ok := p.Planner.TrustedKeys.Verify(fp, []signing.Signature{s}); ok {
			o.Keys = append(o.Keys, s.KeyName)
		}
	}
	return o
}

// bundleFetch converts a plan's fetch to the manifest's.
func bundleFetch(f *derivation.Fetch) *bundle.Fetch {
	if f == nil {
		return nil
	}
	return &bundle.Fetch{URLs: f.URLs, Method: f.Method, Hash: f.Hash}
}

// trusted reports whether the planner would accept ni from an upstream.
func (p *Packer) trusted(ni *narinfo.NarInfo) bool {
	if ni.IsContentAddressed() {
		return true
	}
	return p.Planner.TrustedKeys != nil && ni.Verify(p.Planner.TrustedKeys)
}
