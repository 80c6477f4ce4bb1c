package plan

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/derivation"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Upstream is an upstream binary cache: the planner asks it for
// narinfos and pack copies NAR files from it. OpenUpstream opens one.
type Upstream struct {
	// URL names the cache in plans and messages.
	URL string
	// Cache answers narinfo queries, parsed in the planner's store dir (a
	// miss wraps cache.ErrNotFound or fs.ErrNotExist; any other error
	// fails the plan), and opens files for pack.
	Cache cache.Source
}

// Retries of requests to an upstream: network failures and server errors
// are retried this many times in all, waiting upstreamBackoff, then twice
// that.
const (
	upstreamAttempts = 3
	upstreamBackoff  = 500 * time.Millisecond
)

// OpenUpstream opens the binary cache at url (as cache.Open takes it) as
// an Upstream for a store in dir, retrying transient failures. It refuses
// a cache whose nix-cache-info names another store dir.
func OpenUpstream(ctx context.Context, url string, dir storepath.Dir) (Upstream, error) {
	src, err := cache.Open(ctx, url, nil)
	if err != nil {
		return Upstream{}, err
	}
	if sd, ok := src.(interface{ StoreDir() storepath.Dir }); ok && sd.StoreDir() != dir {
		return Upstream{}, fmt.Errorf("open cache %s: it is for store %s, not %s", url, sd.StoreDir(), dir)
	}
	url = strings.TrimSuffix(url, "/")
	return Upstream{URL: url, Cache: cache.WithRetry(src, upstreamAttempts, upstreamBackoff)}, nil
}

// Planner works out plans. Only Nix is required.
type Planner struct {
	// Nix runs the nix programs; nil means a zero nixcli.Runner.
	Nix *nixcli.Runner
	// StoreDir is the local store dir; "" means asking Nix.
	StoreDir storepath.Dir
	// Upstreams are asked in order for paths the local store lacks; the
	// first with a trusted narinfo wins.
	Upstreams []Upstream
	// TrustedKeys are the keys an upstream narinfo must be signed by
	// (Nix's trusted-public-keys); content-addressed narinfos need no
	// signature. nil trusts only content-addressed ones.
	TrustedKeys *signing.Keyring
	// Jobs bounds concurrent upstream lookups and .drv reads; 0 means 16.
	Jobs int
	// Logger gets progress and warnings; nil discards them.
	Logger *slog.Logger
}

// Options choose what a plan covers.
type Options struct {
	Mode role.Mode
	// Derivations adds the targets' .drv closure.
	Derivations bool
	// NoBuild makes paths that would have to be realised an error: Plan
	// then returns the plan together with a *MissingError.
	NoBuild bool
}

// EstimatedZstdRatio is the compressed/uncompressed size ratio assumed for
// NARs dumped from the local store, which pack compresses with zstd. It
// is an estimate from typical store contents, not a measurement.
const EstimatedZstdRatio = 0.40

// nixParallel bounds concurrent nix invocations for chunked queries.
const nixParallel = 4

func (p *Planner) log() *slog.Logger {
	if p.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Logger
}

func (p *Planner) nix() *nixcli.Runner {
	if p.Nix == nil {
		p.Nix = &nixcli.Runner{}
	}
	return p.Nix
}

func (p *Planner) jobs() int {
	if p.Jobs <= 0 {
		return 16
	}
	return p.Jobs
}

// group is the targets a summary reports together, and what they need.
type group struct {
	name    string
	drvs    []storepath.Path // roots of the build closure
	outputs []storepath.Path // the targets' own outputs and paths
	flakes  []string         // flake references
	roles   map[storepath.Path]role.Set
}

// flakeInfo is what Nix says about one flake reference.
type flakeInfo struct {
	meta    nixcli.FlakeMetadata
	sources []storepath.Path
}

// Plan resolves targets and works out every path they need under opts,
// and where each comes from. Evaluation and other Nix failures are
// returned as the *nixcli.ExitError that carries Nix's message.
func (p *Planner) Plan(ctx context.Context, targets []TargetSpec, opts Options) (*Plan, error) {
	if len(targets) == 0 {
		return nil, fmt.Errorf("plan: %w: none given", ErrBadTarget)
	}
	dir := p.StoreDir
	if dir == "" {
		var err error
		if dir, err = p.nix().StoreDir(ctx); err != nil {
			return nil, fmt.Errorf("plan: %w", err)
		}
	}
	log := p.log()
	pl := &Plan{StoreDir: dir, Mode: opts.Mode, Derivations: opts.Derivations}
	for _, u := range p.Upstreams {
		pl.Upstreams = append(pl.Upstreams, u.URL)
	}

	resolved, flakes, err := p.resolveTargets(ctx, dir, targets)
	if err != nil {
		return nil, err
	}
	log.Info("resolved targets", "targets", len(targets), "derivations", countDrvs(resolved))

	// The .drv closure: only the targets themselves in runtime mode.
	walkClosure := opts.Mode != role.ModeRuntime || opts.Derivations
	known := validity{}
	g, derivers, err := p.readGraph(ctx, dir, known, resolved, walkClosure)
	if err != nil {
		return nil, err
	}
	log.Info("read derivations", "count", len(g.drvs))
	outputs := g.outputs()
	if err := setOutputs(resolved, outputs); err != nil {
		return nil, err
	}
	pl.Targets = resolved

	groups := groupTargets(resolved, derivers)
	groupSeeds := make([][]seedSet, len(groups))
	var all []storepath.Path
	for i, gr := range groups {
		groupSeeds[i] = gr.seeds(g, outputs, flakes, opts, walkClosure)
		for _, s := range groupSeeds[i] {
			all = append(all, s.paths...)
		}
	}
	r := &resolver{p: p, dir: dir, items: map[storepath.Path]*Item{}, outDrv: g.outDrv(outputs), known: known}
	if err := r.resolve(ctx, all); err != nil {
		return nil, err
	}
	// Roles: each seed's role spreads over its closure.
	for i, gr := range groups {
		gr.roles = map[storepath.Path]role.Set{}
		for _, s := range groupSeeds[i] {
			for _, q := range r.closure(s.paths) {
				gr.roles[q] |= s.roles
			}
		}
		for q, rs := range gr.roles {
			r.items[q].Roles |= rs
		}
	}
	pl.groups = groups
	pl.Items = r.planned(g)

	if pl.FlakeRegistry, err = registry(dir, flakes); err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	if r.untrusted.Load() > 0 {
		log.Warn("ignored upstream narinfos not signed by a trusted key", "count", r.untrusted.Load())
	}
	if missing := pl.ToBuild(); opts.NoBuild && len(missing) > 0 {
		return pl, &MissingError{Items: missing}
	}
	return pl, nil
}

// readGraph reads the targets' .drv files and, if deep, their closures,
// rooted also at the derivers of output paths named as targets (which it
// returns, by output path).
func (p *Planner) readGraph(ctx context.Context, dir storepath.Dir, known validity, resolved []ResolvedTarget, deep bool) (*drvGraph, map[storepath.Path]storepath.Path, error) {
	g := &drvGraph{dir: dir, jobs: p.jobs(), drvs: map[storepath.Path]*drvNode{}}
	var roots []storepath.Path
	for _, rt := range resolved {
		if rt.DrvPath != (storepath.Path{}) {
			roots = append(roots, rt.DrvPath)
		}
	}
	derivers := map[storepath.Path]storepath.Path{}
	if deep {
		var err error
		if derivers, err = p.derivers(ctx, known, resolved); err != nil {
			return nil, nil, err
		}
		roots = append(roots, slices.Collect(maps.Values(derivers))...)
	}
	if err := g.load(ctx, roots, deep); err != nil {
		return nil, nil, fmt.Errorf("plan: %w", err)
	}
	return g, derivers, nil
}

// setOutputs fills in the output paths of each target that names a .drv:
// those it asks for, or all.
func setOutputs(resolved []ResolvedTarget, outputs map[storepath.Path]map[string]storepath.Path) error {
	for i := range resolved {
		rt := &resolved[i]
		if rt.DrvPath == (storepath.Path{}) {
			continue
		}
		want := rt.Spec.Outputs
		if want == nil {
			want = slices.Sorted(maps.Keys(outputs[rt.DrvPath]))
		}
		rt.Outputs = map[string]storepath.Path{}
		for _, name := range want {
			out, ok := outputs[rt.DrvPath][name]
			if !ok {
				return fmt.Errorf("plan target %s: %s has no output %q", rt.Spec, rt.DrvPath, name)
			}
			rt.Outputs[name] = out
		}
	}
	return nil
}

// groupTargets gathers the resolved targets by group, in order.
func groupTargets(resolved []ResolvedTarget, derivers map[storepath.Path]storepath.Path) []*group {
	var groups []*group
	byName := map[string]*group{}
	for _, rt := range resolved {
		gr := byName[rt.Spec.Group]
		if gr == nil {
			gr = &group{name: rt.Spec.Group}
			byName[gr.name] = gr
			groups = append(groups, gr)
		}
		gr.outputs = append(gr.outputs, rt.Paths()...)
		if rt.DrvPath != (storepath.Path{}) {
			gr.drvs = append(gr.drvs, rt.DrvPath)
		}
		if d, ok := derivers[rt.Path]; ok {
			gr.drvs = append(gr.drvs, d)
		}
		if rt.Spec.Kind == TargetFlake && !slices.Contains(gr.flakes, rt.Spec.Flake) {
			gr.flakes = append(gr.flakes, rt.Spec.Flake)
		}
	}
	return groups
}

// seedSet is paths whose closures have a role.
type seedSet struct {
	roles role.Set
	paths []storepath.Path
}

// seeds are the paths whose closures gr needs under opts, by role.
func (gr *group) seeds(g *drvGraph, outputs map[storepath.Path]map[string]storepath.Path, flakes map[string]*flakeInfo, opts Options, walkClosure bool) []seedSet {
	seeds := []seedSet{{role.Runtime, gr.outputs}}
	if walkClosure {
		closure := g.closure(gr.drvs)
		var src, bld []storepath.Path
		for _, d := range closure {
			fod := g.drvs[d].fixed
			for _, out := range outputs[d] {
				if fod {
					src = append(src, out)
				} else {
					bld = append(bld, out)
				}
			}
		}
		if opts.Mode != role.ModeRuntime {
			seeds = append(seeds, seedSet{role.Source, src})
		}
		if opts.Mode == role.ModeBuild {
			seeds = append(seeds, seedSet{role.Build, bld})
		}
		if opts.Derivations {
			seeds = append(seeds, seedSet{role.Derivation, closure})
		}
	}
	var fl []storepath.Path
	for _, ref := range gr.flakes {
		fl = append(fl, flakes[ref].sources...)
	}
	return append(seeds, seedSet{role.FlakeInput, fl})
}

func countDrvs(rts []ResolvedTarget) int {
	n := 0
	for _, rt := range rts {
		if rt.DrvPath != (storepath.Path{}) {
			n++
		}
	}
	return n
}

// resolveTargets evaluates the targets: one nix-instantiate per file and
// argument set, one nix path-info --derivation per flake installable (nix
// prints them as a set, so they cannot be matched up from one call), and
// metadata and archive once per flake.
func (p *Planner) resolveTargets(ctx context.Context, dir storepath.Dir, targets []TargetSpec) ([]ResolvedTarget, map[string]*flakeInfo, error) {
	nix := p.nix()
	perTarget := make([][]ResolvedTarget, len(targets))
	// File targets, batched by file and arguments.
	type fileKey struct{ file, args string }
	batches := map[fileKey][]int{}
	var keys []fileKey
	flakes := map[string]*flakeInfo{}
	var flakeRefs []string
	var flakeTargets []int
	for i, t := range targets {
		switch t.Kind {
		case TargetPath:
			rt := ResolvedTarget{Spec: t}
			if t.Path.IsDerivation() {
				rt.DrvPath = t.Path
			} else {
				rt.Path = t.Path
			}
			perTarget[i] = []ResolvedTarget{rt}
		case TargetFile:
			if t.Attr == "" {
				var err error
				if perTarget[i], err = instantiate(ctx, nix, t, nil); err != nil {
					return nil, nil, err
				}
				continue
			}
			k := fileKey{t.File, strings.Join(t.NixArgs, "\x00")}
			if _, ok := batches[k]; !ok {
				keys = append(keys, k)
			}
			batches[k] = append(batches[k], i)
		case TargetFlake:
			if _, ok := flakes[t.Flake]; !ok {
				flakes[t.Flake] = &flakeInfo{}
				flakeRefs = append(flakeRefs, t.Flake)
			}
			flakeTargets = append(flakeTargets, i)
		default:
			return nil, nil, fmt.Errorf("plan target %q: %w: unknown kind %d", t.Text, ErrBadTarget, t.Kind)
		}
	}
	for _, k := range keys {
		if err := instantiateBatch(ctx, nix, targets, batches[k], perTarget); err != nil {
			return nil, nil, err
		}
	}
	if err := resolveFlakes(ctx, nix, targets, flakeTargets, flakeRefs, flakes, perTarget); err != nil {
		return nil, nil, err
	}
	var out []ResolvedTarget
	for i, rts := range perTarget {
		if len(rts) == 0 {
			return nil, nil, fmt.Errorf("plan target %s: evaluates to no derivation", targets[i])
		}
		out = append(out, rts...)
	}
	return out, flakes, nil
}

// instantiate evaluates t's file, or only attrs of it, into perTarget.
func instantiate(ctx context.Context, nix *nixcli.Runner, t TargetSpec, attrs []string) ([]ResolvedTarget, error) {
	drvs, err := nix.Instantiate(ctx, t.File, attrs, t.NixArgs...)
	if err != nil {
		return nil, fmt.Errorf("plan target %s: %w", t, err)
	}
	var rts []ResolvedTarget
	for _, d := range drvs {
		rts = append(rts, ResolvedTarget{Spec: t, DrvPath: d})
	}
	return rts, nil
}

// instantiateBatch evaluates the targets idx, attributes of one file with
// the same arguments, in one nix-instantiate, into perTarget.
func instantiateBatch(ctx context.Context, nix *nixcli.Runner, targets []TargetSpec, idx []int, perTarget [][]ResolvedTarget) error {
	attrs := make([]string, len(idx))
	for j, i := range idx {
		attrs[j] = targets[i].Attr
	}
	first := targets[idx[0]]
	drvs, err := nix.Instantiate(ctx, first.File, attrs, first.NixArgs...)
	if err != nil {
		return fmt.Errorf("plan target --file %s: %w", first.File, err)
	}
	if len(drvs) == len(idx) {
		for j, i := range idx {
			perTarget[i] = []ResolvedTarget{{Spec: targets[i], DrvPath: drvs[j]}}
		}
		return nil
	}
	// Some attribute gave several derivations (or none): instantiate
	// one by one to tell them apart.
	for _, i := range idx {
		if perTarget[i], err = instantiate(ctx, nix, targets[i], []string{targets[i].Attr}); err != nil {
			return err
		}
	}
	return nil
}

// resolveFlakes locks and archives each flake (which copies every input's
// source into the store), then evaluates the flake targets' installables
// in parallel, into perTarget.
func resolveFlakes(ctx context.Context, nix *nixcli.Runner, targets []TargetSpec, flakeTargets []int, flakeRefs []string, flakes map[string]*flakeInfo, perTarget [][]ResolvedTarget) error {
	for _, ref := range flakeRefs {
		meta, err := nix.FlakeMetadata(ctx, ref)
		if err != nil {
			return fmt.Errorf("plan flake %s: %w", ref, err)
		}
		arch, err := nix.FlakeArchive(ctx, ref)
		if err != nil {
			return fmt.Errorf("plan flake %s: %w", ref, err)
		}
		flakes[ref].meta = meta
		flakes[ref].sources = arch.Paths()
	}
	// Every target's error is reported, so no error cancels the others.
	errs := make([]error, len(targets))
	var g errgroup.Group
	g.SetLimit(nixParallel)
	for _, i := range flakeTargets {
		g.Go(func() error {
			t := targets[i]
			drvs, err := nix.DerivationPaths(ctx, t.Installable())
			if err != nil {
				errs[i] = fmt.Errorf("plan target %s: %w", t, err)
				return nil
			}
			for _, d := range drvs {
				perTarget[i] = append(perTarget[i], ResolvedTarget{Spec: t, DrvPath: d})
			}
			return nil
		})
	}
	g.Wait()
	return errors.Join(errs...)
}

// derivers finds the .drv of each output path named as a target, when
// the path is valid and its .drv is still in the store, so that its
// build closure can be walked.
func (p *Planner) derivers(ctx context.Context, known validity, rts []ResolvedTarget) (map[storepath.Path]storepath.Path, error) {
	var paths []storepath.Path
	for _, rt := range rts {
		if rt.Path != (storepath.Path{}) {
			paths = append(paths, rt.Path)
		}
	}
	out := map[storepath.Path]storepath.Path{}
	if len(paths) == 0 {
		return out, nil
	}
	valid, _, err := p.splitValid(ctx, known, paths)
	if err != nil {
		return nil, err
	}
	infos, err := p.pathInfo(ctx, valid)
	if err != nil {
		return nil, err
	}
	var drvs []storepath.Path
	for _, in := range infos {
		if in.Deriver != (storepath.Path{}) {
			drvs = append(drvs, in.Deriver)
		}
	}
	validDrvs, _, err := p.splitValid(ctx, known, drvs)
	if err != nil {
		return nil, err
	}
	ok := map[storepath.Path]bool{}
	for _, d := range validDrvs {
		ok[d] = true
	}
	for _, in := range infos {
		if ok[in.Deriver] {
			out[in.Path] = in.Deriver
		} else {
			p.log().Warn("no derivation in the store for a target path: its build closure is not included", "path", in.Path, "deriver", in.Deriver)
		}
	}
	for _, q := range paths {
		if _, ok := out[q]; !ok && !slices.ContainsFunc(infos, func(in nixcli.PathInfo) bool { return in.Path == q }) {
			p.log().Warn("target path not in the store: its build closure is not included", "path", q)
		}
	}
	return out, nil
}

// drvGraph is a .drv closure read straight from the store's files, of
// which it keeps only what the plan needs.
type drvGraph struct {
	dir  storepath.Dir
	jobs int
	drvs map[storepath.Path]*drvNode
}

// drvNode is what a plan needs of a .drv. A build closure has thousands,
// and their environments (build scripts) are most of their size.
type drvNode struct {
	// outputs are the output paths: as recorded, or computed from the
	// hash for a fixed-output derivation.
	outputs map[string]storepath.Path
	inputs  []storepath.Path // input derivations
	fixed   bool             // fixed-output
	fetch   *derivation.Fetch
}

// newDrvNode keeps of drv, read from the store path d, what a plan needs.
func newDrvNode(d storepath.Path, drv *derivation.Derivation) (*drvNode, error) {
	n := &drvNode{outputs: make(map[string]storepath.Path, len(drv.Outputs)), fixed: drv.IsFixedOutput()}
	for name, o := range drv.Outputs {
		switch {
		case o.Path != (storepath.Path{}):
			n.outputs[name] = o.Path
		case n.fixed:
			p, err := drv.PredictFixedOutputPath()
			if err != nil {
				return nil, fmt.Errorf("derivation %s: %w", d, err)
			}
			n.outputs[name] = p
		default:
			return nil, fmt.Errorf("derivation %s: output %s: %w: its path is known only after building (content-addressed)", d, name, derivation.ErrUnsupported)
		}
	}
	n.inputs = slices.Collect(maps.Keys(drv.InputDrvs))
	if f, ok := drv.Fetch(); ok {
		n.fetch = &f
	}
	return n, nil
}

// load reads roots and, if deep, every input derivation.
func (g *drvGraph) load(ctx context.Context, roots []storepath.Path, deep bool) error {
	if deep {
		drvs, err := derivation.ReadClosure(ctx, g.dir, roots, g.jobs, newDrvNode)
		g.drvs = drvs
		return err
	}
	for _, r := range roots {
		drv, err := derivation.ReadFile(r.String(), g.dir)
		if err != nil {
			return err
		}
		if g.drvs[r], err = newDrvNode(r, drv); err != nil {
			return err
		}
	}
	return nil
}

// outputs maps every loaded .drv to its output paths.
func (g *drvGraph) outputs() map[storepath.Path]map[string]storepath.Path {
	out := make(map[storepath.Path]map[string]storepath.Path, len(g.drvs))
	for d, n := range g.drvs {
		out[d] = n.outputs
	}
	return out
}

// outDrv maps each output path to its derivation.
func (g *drvGraph) outDrv(outputs map[storepath.Path]map[string]storepath.Path) map[storepath.Path]storepath.Path {
	m := map[storepath.Path]storepath.Path{}
	for d, outs := range outputs {
		for _, o := range outs {
			m[o] = d
		}
	}
	return m
}

// closure returns the loaded .drvs reachable from roots, and roots.
func (g *drvGraph) closure(roots []storepath.Path) []storepath.Path {
	return reachable(roots, func(d storepath.Path) ([]storepath.Path, bool) {
		if n := g.drvs[d]; n != nil {
			return n.inputs, true
		}
		return nil, true
	})
}

// reachable walks depth first from roots and returns each path once,
// unless edges says it is not part of the graph (ok false), and goes on
// to the paths edges names.
func reachable(roots []storepath.Path, edges func(storepath.Path) (next []storepath.Path, ok bool)) []storepath.Path {
	seen := map[storepath.Path]bool{}
	stack := slices.Clone(roots)
	var out []storepath.Path
	for len(stack) > 0 {
		q := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[q] {
			continue
		}
		seen[q] = true
		next, ok := edges(q)
		if !ok {
			continue
		}
		out = append(out, q)
		stack = append(stack, next...)
	}
	return out
}

// resolver decides where each path comes from.
type resolver struct {
	p         *Planner
	dir       storepath.Dir
	items     map[storepath.Path]*Item
	outDrv    map[storepath.Path]storepath.Path
	known     validity
	untrusted atomic.Int64
}

// planned returns the items that have a role, with what each fixed-output
// one fetches, sorted by path.
func (r *resolver) planned(g *drvGraph) []Item {
	items := make([]Item, 0, len(r.items))
	for _, it := range r.items {
		if it.Roles == 0 {
			continue
		}
		if n := g.drvs[r.outDrv[it.Path]]; n != nil {
			it.Fetch = n.fetch
		}
		items = append(items, *it)
	}
	slices.SortFunc(items, func(a, b Item) int { return storepath.Compare(a.Path, b.Path) })
	return items
}

// resolve finds a source and references for seeds and everything they
// reference, in rounds: the local store first (whose closures are
// complete), then the upstreams for what it lacks, whose narinfos name
// further references for the next round.
func (r *resolver) resolve(ctx context.Context, seeds []storepath.Path) error {
	log := r.p.log()
	frontier := r.unknown(seeds)
	for round := 1; len(frontier) > 0; round++ {
		valid, invalid, err := r.p.splitValid(ctx, r.known, frontier)
		if err != nil {
			return err
		}
		if len(valid) > 0 {
			closure, err := r.p.requisites(ctx, valid)
			if err != nil {
				return err
			}
			infos, err := r.p.pathInfo(ctx, r.unknown(closure))
			if err != nil {
				return err
			}
			for i := range infos {
				in := &infos[i]
				r.items[in.Path] = &Item{
					Path: in.Path, Source: Source{Kind: FromStore},
					NarHash: in.NarHash, NarSize: in.NarSize,
					FileSize:   uint64(float64(in.NarSize) * EstimatedZstdRatio),
					References: in.References, Deriver: in.Deriver, Info: in,
				}
			}
		}
		found, err := r.lookup(ctx, invalid)
		if err != nil {
			return err
		}
		var next []storepath.Path
		for _, q := range invalid {
			it := found[q]
			if it == nil {
				d := r.outDrv[q]
				it = &Item{Path: q, Source: Source{Kind: FromBuild}, Deriver: d, DrvPath: d}
			} else {
				next = append(next, it.References...)
			}
			r.items[q] = it
		}
		log.Debug("resolved paths", "round", round, "store", len(valid), "upstream", len(found), "build", len(invalid)-len(found))
		frontier = r.unknown(next)
	}
	return nil
}

// unknown returns the paths of ps not yet resolved, without duplicates.
func (r *resolver) unknown(ps []storepath.Path) []storepath.Path {
	seen := map[storepath.Path]bool{}
	var out []storepath.Path
	for _, q := range ps {
		if _, ok := r.items[q]; !ok && !seen[q] {
			seen[q] = true
			out = append(out, q)
		}
	}
	return out
}

// closure returns the resolved paths reachable from seeds through known
// references.
func (r *resolver) closure(seeds []storepath.Path) []storepath.Path {
	return reachable(seeds, func(q storepath.Path) ([]storepath.Path, bool) {
		if it := r.items[q]; it != nil {
			return it.References, true
		}
		return nil, false
	})
}

// lookup asks the upstreams, in order, for each path, with Jobs lookups
// at a time. It returns the items found with a trusted narinfo.
func (r *resolver) lookup(ctx context.Context, paths []storepath.Path) (map[storepath.Path]*Item, error) {
	found := map[storepath.Path]*Item{}
	if len(r.p.Upstreams) == 0 || len(paths) == 0 {
		return found, nil
	}
	var mu sync.Mutex
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(r.p.jobs())
	for _, q := range paths {
		g.Go(func() error {
			if err := ctx.Err(); err != nil {
				return err
			}
			it, err := r.lookupOne(ctx, q)
			if it != nil {
				mu.Lock()
				found[q] = it
				mu.Unlock()
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return found, nil
}

func (r *resolver) lookupOne(ctx context.Context, q storepath.Path) (*Item, error) {
	for i, u := range r.p.Upstreams {
		ni, err := u.Cache.NarInfo(ctx, q.Hash)
		if errors.Is(err, cache.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("plan: upstream %s: %s: %w", u.URL, q, err)
		}
		if ni.StorePath != q {
			return nil, fmt.Errorf("plan: upstream %s: narinfo for %s describes %s: %w", u.URL, q, ni.StorePath, narinfo.ErrCorrupt)
		}
		if !ni.IsContentAddressed() && (r.p.TrustedKeys == nil || !ni.Verify(r.p.TrustedKeys)) {
			r.untrusted.Add(1)
			r.p.log().Debug("upstream narinfo not signed by a trusted key", "upstream", u.URL, "path", q)
			continue
		}
		size := ni.FileSize
		if size == 0 {
			size = ni.NarSize
		}
		return &Item{
			Path: q, Source: Source{Kind: FromUpstream, Upstream: i, URL: u.URL},
			NarHash: ni.NarHash, NarSize: ni.NarSize, FileSize: size,
			References: ni.References, Deriver: ni.Deriver, NarInfo: ni,
		}, nil
	}
	return nil, nil
}

// splitValid splits paths into those valid in the local store and the
// rest, asking Nix only about those known does not have yet.
func (p *Planner) splitValid(ctx context.Context, known validity, paths []storepath.Path) (valid, invalid []storepath.Path, err error) {
	var ask []storepath.Path
	for _, q := range paths {
		if _, ok := known[q]; !ok {
			ask = append(ask, q)
		}
	}
	if len(ask) > 0 {
		bad, err := nixcli.Chunked(ctx, ask, nixParallel, p.nix().InvalidPaths)
		if err != nil {
			return nil, nil, fmt.Errorf("plan: %w", err)
		}
		for _, q := range ask {
			known[q] = true
		}
		for _, q := range bad {
			known[q] = false
		}
	}
	for _, q := range paths {
		if known[q] {
			valid = append(valid, q)
		} else {
			invalid = append(invalid, q)
		}
	}
	return valid, invalid, nil
}

// validity is what one Plan learnt of paths' validity in the local
// store, so that each path costs Nix one question: the targets' outputs
// are asked about before their closure is resolved.
type validity map[storepath.Path]bool

// requisites returns the closure of valid paths. Closures overlap
// heavily, so chunks run one after another, each leaving out the paths
// earlier ones already covered.
func (p *Planner) requisites(ctx context.Context, paths []storepath.Path) ([]storepath.Path, error) {
	in := map[storepath.Path]bool{}
	var out []storepath.Path
	for len(paths) > 0 {
		var chunk []storepath.Path
		for len(paths) > 0 && len(chunk) < nixcli.ArgChunk {
			if !in[paths[0]] {
				chunk = append(chunk, paths[0])
			}
			paths = paths[1:]
		}
		if len(chunk) == 0 {
			break
		}
		closure, err := p.nix().Requisites(ctx, chunk...)
		if err != nil {
			return nil, fmt.Errorf("plan: %w", err)
		}
		for _, q := range closure {
			if !in[q] {
				in[q] = true
				out = append(out, q)
			}
		}
	}
	return out, nil
}

func (p *Planner) pathInfo(ctx context.Context, paths []storepath.Path) ([]nixcli.PathInfo, error) {
	if len(paths) == 0 {
		return nil, nil
	}
	infos, err := nixcli.Chunked(ctx, paths, nixParallel, p.nix().PathInfo)
	if err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	return infos, nil
}

// registry maps every indirect flake reference the flakes use (the
// targets' own and their lock files' inputs) to the source packed for it.
func registry(dir storepath.Dir, flakes map[string]*flakeInfo) ([]RegistryEntry, error) {
	byKey := map[string]RegistryEntry{}
	add := func(from, locked nixcli.FlakeRef) error {
		src, err := locked.SourcePath(dir)
		if err != nil {
			return fmt.Errorf("flake input %v: %w", from.Attrs, err)
		}
		h, err := locked.NarHash()
		if err != nil {
			return fmt.Errorf("flake input %v: %w", from.Attrs, err)
		}
		to := map[string]any{"type": "path", "path": src.String(), "narHash": h.SRI()}
		if lm, ok := locked.Attrs["lastModified"]; ok {
			to["lastModified"] = lm
		}
		key := fmt.Sprint(from.Attrs["id"], "\x00", from.Attrs["ref"], "\x00", from.Attrs["rev"])
		if _, dup := byKey[key]; !dup {
			byKey[key] = RegistryEntry{From: from, To: nixcli.FlakeRef{Attrs: to}, Locked: locked, Source: src}
		}
		return nil
	}
	for _, ref := range slices.Sorted(maps.Keys(flakes)) {
		meta := flakes[ref].meta
		if id, ok := strings.CutPrefix(meta.OriginalURL, "flake:"); ok {
			from := map[string]any{"type": "indirect"}
			id, rest, hasRest := strings.Cut(id, "/")
			from["id"] = id
			if hasRest {
				from["ref"] = rest
			}
			if err := add(nixcli.FlakeRef{Attrs: from}, meta.Locked); err != nil {
				return nil, err
			}
		}
		for _, name := range slices.Sorted(maps.Keys(meta.Locks.Nodes)) {
			n := meta.Locks.Nodes[name]
			if n.Original.Type() == "indirect" && !n.Locked.IsZero() {
				if err := add(n.Original, n.Locked); err != nil {
					return nil, err
				}
			}
		}
	}
	out := slices.Collect(maps.Values(byKey))
	slices.SortFunc(out, func(a, b RegistryEntry) int {
		return strings.Compare(fmt.Sprint(a.From.Attrs["id"], a.From.Attrs["ref"]), fmt.Sprint(b.From.Attrs["id"], b.From.Attrs["ref"]))
	})
	return out, nil
}
