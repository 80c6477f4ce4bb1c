// Package check tells whether targets can be realised from what given
// sources hold, without the network: on the connected side against a
// bundle before it leaves, inside the airgap against the caches there.
//
// A Checker reads the targets' build closure straight from the local
// .drv files (in parallel), asks every source for every output's narinfo
// (in parallel, bounded by Jobs) and follows the references of what it
// finds, so that a path counts as available only when its whole runtime
// closure is. Then every output falls in one Class:
//
//   - Available: substitutable from a source (or valid in the local store,
//     with UseLocal), or a flat builtin:fetchurl file a source serves as a
//     hashed mirror;
//   - Buildable: missing, but its derivation is not fixed-output and every
//     input it needs is available or buildable, and every input source is
//     available or already in the local store;
//   - Blocked: neither. A fixed-output derivation whose output is missing
//     is a root cause: its builder needs the network. Any other blocked
//     derivation is blocked by the inputs that are.
//
// Only paths that realising the targets needs count in the Summary and the
// exit status: an unavailable compiler does not matter when everything
// built with it is available.
package check

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"slices"

	"golang.org/x/sync/errgroup"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/derivation"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Sentinel errors.
var (
	// ErrBlocked reports needed paths that can be neither substituted
	// nor built offline. The error is a *BlockedError.
	ErrBlocked = errors.New("blocked")
	// ErrStoreDir reports a source for another store dir.
	ErrStoreDir = errors.New("wrong store dir")
	// ErrBadSource reports a source that cannot be read as one: a tar
	// with an unparsable narinfo or manifest.
	ErrBadSource = errors.New("invalid source")
)

// Class is what can be done about one store path offline.
type Class uint8

const (
	// Available: substitutable from a source or valid locally.
	Available Class = iota + 1
	// Buildable: missing, but buildable from what is available.
	Buildable
	// Blocked: neither.
	Blocked
)

func (c Class) String() string {
	switch c {
	case Available:
		return "available"
	case Buildable:
		return "buildable"
	case Blocked:
		return "blocked"
	}
	return fmt.Sprintf("Class(%d)", c)
}

// MarshalText writes the class's name, for JSON.
func (c Class) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// Kind says how a path came into a check.
type Kind uint8

const (
	// KindOutput is an output of a derivation in the build closure, or
	// a store path named as a target.
	KindOutput Kind = iota + 1
	// KindInputSource is an input source of a derivation (a file
	// evaluation added to the store).
	KindInputSource
	// KindReference is a path a source's narinfo references that is in
	// neither of the above.
	KindReference
)

func (k Kind) String() string {
	switch k {
	case KindOutput:
		return "output"
	case KindInputSource:
		return "input-source"
	case KindReference:
		return "reference"
	}
	return fmt.Sprintf("Kind(%d)", k)
}

// MarshalText writes the kind's name, for JSON.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// LocalStore answers which paths are valid in the local store; a
// *nixcli.Runner is one.
type LocalStore interface {
	InvalidPaths(ctx context.Context, paths ...storepath.Path) ([]storepath.Path, error)
}

// LocalClosure is a LocalStore that also lists the closure of valid
// paths (nix-store -qR), as a *nixcli.Runner does. With it and UseLocal,
// the runtime closures of needed local paths count as needed too; without
// it, only the local paths themselves do.
type LocalClosure interface {
	LocalStore
	Requisites(ctx context.Context, paths ...storepath.Path) ([]storepath.Path, error)
}

// Target is one thing to check: a derivation's outputs, or a store path.
type Target struct {
	// Name is the target as the user wrote it, for reports.
	Name string
	// DrvPath is the derivation to realise; zero for a plain store path.
	DrvPath storepath.Path
	// Outputs are DrvPath's wanted outputs; nil means all.
	Outputs []string
	// Path is a store path named directly. With DrvPath set too, it
	// must be one of DrvPath's outputs (its deriver).
	Path storepath.Path
	// FlakeInput marks a flake input a plan carries: checked as a
	// target, counted apart from the targets the user named.
	FlakeInput bool
}

// Checker checks targets against sources. StoreDir is required.
type Checker struct {
	// StoreDir is the store dir of the .drv files and of every source.
	StoreDir storepath.Dir
	// Sources are asked in order; the first that has a path wins.
	Sources []Source
	// Local is the local store. Input sources valid there count as
	// present: evaluating the same expressions makes them on any
	// machine. nil counts every input source as present, as its .drv is.
	Local LocalStore
	// UseLocal counts every path valid in Local as available
	// (--against-local-store).
	UseLocal bool
	// Jobs bounds concurrent narinfo lookups and .drv reads; 0 means 16.
	Jobs int
	// Logger gets progress; nil discards it.
	Logger *slog.Logger
}

func (c *Checker) log() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

func (c *Checker) jobs() int {
	if c.Jobs <= 0 {
		return 16
	}
	return c.Jobs
}

// FixedOutput describes a fixed-output derivation's output.
type FixedOutput struct {
	// URLs are where its builder downloads from, when the .drv says
	// (see derivation.FetchURLs).
	URLs []string `json:"urls,omitempty"`
	// Hash is the expected hash, "ALGO:NIX32"; Recursive is true for a
	// NAR hash (unpacked, executable, fetchgit), false for a flat file.
	Hash      string `json:"hash"`
	Recursive bool   `json:"recursive"`
	// Builder is the derivation's builder, such as builtin:fetchurl.
	Builder string `json:"builder"`
}

// PathResult is one store path's outcome.
type PathResult struct {
	Path  storepath.Path
	Kind  Kind
	Class Class
	// Needed is true when realising the targets needs the path: a
	// target's output, in the runtime closure of a needed available
	// path, or an input of a needed derivation that must be built.
	Needed bool
	// Via says where an available path is: "local", a source's Name, or
	// "mirror " + a source's Name for a hashed-mirror file.
	Via string
	// FileSize and NarSize are the source narinfo's (NarSize when the
	// narinfo omits FileSize); zero when not from a source.
	FileSize, NarSize uint64
	// DrvPath is the derivation with this output, if known.
	DrvPath storepath.Path
	// FixedOutput is set for the output of a fixed-output derivation.
	FixedOutput *FixedOutput
	// BlockedBy lists, for a blocked path, the blocked inputs and input
	// sources that block its derivation; empty for a root cause.
	BlockedBy []storepath.Path
	// Reason says why a path is blocked (root causes), or why a path
	// with a narinfo cannot be substituted.
	Reason string
}

// RootCause is a blocked path that nothing else blocks.
type RootCause struct {
	Path        storepath.Path
	DrvPath     storepath.Path
	FixedOutput *FixedOutput
	Reason      string
	// Targets are the names of the targets that need it.
	Targets []string
}

// TargetResult is one target's outcome: the worst class of its paths.
type TargetResult struct {
	Name       string
	Paths      []storepath.Path
	Class      Class
	FlakeInput bool
}

// Summary counts the needed paths.
type Summary struct {
	// Available counts needed paths available; Local, FromSources and
	// ViaMirror split it.
	Available   int `json:"available"`
	Local       int `json:"local"`
	FromSources int `json:"fromSources"`
	ViaMirror   int `json:"viaMirror"`
	// ToBuild counts needed outputs that must be built.
	ToBuild int `json:"toBuild"`
	// Blocked counts needed paths that are blocked.
	Blocked int `json:"blocked"`
	// DownloadBytes adds up the FileSize of needed paths available from
	// a source and not valid locally; NarBytes their NarSize.
	DownloadBytes uint64 `json:"downloadBytes"`
	NarBytes      uint64 `json:"narBytes"`
	// NotNeeded counts paths in the build closure that realising the
	// targets does not need (everything built with them is available).
	NotNeeded int `json:"notNeeded"`
}

// Result is a check's outcome.
type Result struct {
	StoreDir storepath.Dir
	Sources  []string
	Targets  []TargetResult
	// Paths are sorted by path.
	Paths      []PathResult
	RootCauses []RootCause
	Summary    Summary

	index map[storepath.Path]int
}

// Path returns the result for p, or nil.
func (r *Result) Path(p storepath.Path) *PathResult {
	if i, ok := r.index[p]; ok {
		return &r.Paths[i]
	}
	return nil
}

// Err returns a *BlockedError when a needed path is blocked, else nil.
func (r *Result) Err() error {
	if r.Summary.Blocked == 0 {
		return nil
	}
	return &BlockedError{Result: r}
}

// BlockedError reports a check that found needed paths blocked.
type BlockedError struct {
	Result *Result
}

func (e *BlockedError) Error() string {
	return fmt.Sprintf("check: %v: %s can be neither substituted nor built offline, %s",
		ErrBlocked, plural(e.Result.Summary.Blocked, "needed path"), plural(len(e.Result.RootCauses), "root cause"))
}

func (e *BlockedError) Unwrap() error { return ErrBlocked }

// node is one path while checking.
type node struct {
	path  storepath.Path
	kind  Kind
	drv   storepath.Path
	fixed *FixedOutput
	ni    *narinfo.NarInfo
	src   int // index in Sources of ni's source, or -1
	local bool
	// mirror is the index of the source serving it as a flat file, or -1.
	mirror int
	// subst: 0 unknown, 1 substitutable, 2 not, 3 being decided.
	subst     int8
	class     Class
	needed    bool
	blockedBy []storepath.Path
	reason    string
}

// run is the state of one Check.
type run struct {
	c     *Checker
	nodes map[storepath.Path]*node
	drvs  map[storepath.Path]*drvInfo
	// drvState: 0 unknown, 1 buildable, 2 not, 3 being decided.
	drvState map[storepath.Path]int8
	drvWhy   map[storepath.Path][]storepath.Path
}

// Check checks targets against c's sources.
func (c *Checker) Check(ctx context.Context, targets []Target) (*Result, error) {
	if c.StoreDir == "" {
		return nil, errors.New("check: no store dir")
	}
	if len(targets) == 0 {
		return nil, errors.New("check: no targets")
	}
	log := c.log()
	r := &run{
		c: c, nodes: map[storepath.Path]*node{},
		drvState: map[storepath.Path]int8{}, drvWhy: map[storepath.Path][]storepath.Path{},
	}
	var roots []storepath.Path
	for _, t := range targets {
		if t.DrvPath != (storepath.Path{}) {
			roots = append(roots, t.DrvPath)
		}
	}
	log.Debug("reading derivations", "roots", len(roots))
	drvs, err := derivation.ReadClosure(ctx, r.c.StoreDir, roots, r.c.jobs(), newDrvInfo)
	if err != nil {
		return nil, fmt.Errorf("check: %w (check evaluates locally: the .drv files must be in the local store)", err)
	}
	r.drvs = drvs
	log.Info("read derivations", "count", len(r.drvs))
	if err := r.addOutputs(); err != nil {
		return nil, err
	}
	// Target paths, and which paths each target stands for.
	tpaths := make([][]storepath.Path, len(targets))
	for i, t := range targets {
		ps, err := r.targetPaths(t)
		if err != nil {
			return nil, err
		}
		tpaths[i] = ps
	}
	if err := r.findAll(ctx); err != nil {
		return nil, err
	}
	for _, n := range r.nodes {
		r.classify(n)
	}
	for _, ps := range tpaths {
		for _, p := range ps {
			r.need(p)
		}
	}
	if err := r.localClosure(ctx); err != nil {
		return nil, err
	}
	log.Debug("classified paths", "paths", len(r.nodes))
	return r.result(targets, tpaths), nil
}

func (r *run) add(p storepath.Path, kind Kind) *node {
	if n, ok := r.nodes[p]; ok {
		// An output is also an input source or reference: output wins.
		n.kind = min(n.kind, kind)
		return n
	}
	n := &node{path: p, kind: kind, src: -1, mirror: -1}
	r.nodes[p] = n
	return n
}

// drvInfo is what a check needs of a .drv. A build closure has
// thousands, and their environments (build scripts) are most of their size.
type drvInfo struct {
	// outputs are the output paths: as recorded, or computed from the
	// hash for a fixed-output derivation.
	outputs   map[string]storepath.Path
	fod       bool         // fixed-output, even if its hash does not parse
	fixed     *FixedOutput // set for a fixed-output derivation with a valid hash
	mirror    string       // its path under a hashed mirror (derivation.MirrorPath), or ""
	inputDrvs map[storepath.Path][]string
	inputSrcs []storepath.Path
	// err is why its output paths are unknown: Check fails with it once
	// the whole closure is read.
	err error
}

// newDrvInfo keeps of drv, read from the store path d, what a check needs.
func newDrvInfo(d storepath.Path, drv *derivation.Derivation) (*drvInfo, error) {
	info := &drvInfo{outputs: make(map[string]storepath.Path, len(drv.Outputs)), fod: drv.IsFixedOutput(), inputDrvs: drv.InputDrvs, inputSrcs: drv.InputSrcs}
	if method, h, ok := drv.FixedOutput(); ok {
		info.fixed = &FixedOutput{URLs: drv.FetchURLs(), Hash: h.String(), Recursive: method == storepath.Recursive, Builder: drv.Builder}
	}
	info.mirror, _ = drv.MirrorPath()
	for name, o := range drv.Outputs {
		switch {
		case o.Path != (storepath.Path{}):
			info.outputs[name] = o.Path
		case info.fod:
			p, err := drv.PredictFixedOutputPath()
			if err != nil {
				info.err = fmt.Errorf("check: derivation %s: %w", d, err)
				return info, nil
			}
			info.outputs[name] = p
		default:
			info.err = fmt.Errorf("check: derivation %s: output %s: %w: its path is known only after building (content-addressed)", d, name, derivation.ErrUnsupported)
			return info, nil
		}
	}
	return info, nil
}

// addOutputs makes a node for every output and input source.
func (r *run) addOutputs() error {
	for d, drv := range r.drvs {
		if drv.err != nil {
			return drv.err
		}
		for _, p := range drv.outputs {
			n := r.add(p, KindOutput)
			n.drv, n.fixed = d, drv.fixed
		}
		for _, s := range drv.inputSrcs {
			r.add(s, KindInputSource)
		}
	}
	return nil
}

// output returns the path of output name of derivation d, if read.
func (r *run) output(d storepath.Path, name string) (storepath.Path, bool) {
	drv := r.drvs[d]
	if drv == nil {
		return storepath.Path{}, false
	}
	p, ok := drv.outputs[name]
	return p, ok
}

// targetPaths returns the paths target t stands for.
func (r *run) targetPaths(t Target) ([]storepath.Path, error) {
	if t.DrvPath == (storepath.Path{}) {
		if t.Path == (storepath.Path{}) {
			return nil, fmt.Errorf("check target %q: no derivation and no path", t.Name)
		}
		r.add(t.Path, KindOutput)
		return []storepath.Path{t.Path}, nil
	}
	var outs map[string]storepath.Path
	if drv := r.drvs[t.DrvPath]; drv != nil {
		outs = drv.outputs
	}
	if t.Path != (storepath.Path{}) {
		for _, o := range outs {
			if o == t.Path {
				return []storepath.Path{o}, nil
			}
		}
		return nil, fmt.Errorf("check target %q: %s is not an output of %s", t.Name, t.Path, t.DrvPath)
	}
	names := t.Outputs
	if names == nil {
		names = slices.Sorted(maps.Keys(outs))
	}
	var ps []storepath.Path
	for _, name := range names {
		o, ok := outs[name]
		if !ok {
			return nil, fmt.Errorf("check target %q: %s has no output %q", t.Name, t.DrvPath, name)
		}
		ps = append(ps, o)
	}
	return ps, nil
}

// localParallel bounds concurrent queries of the local store.
const localParallel = 4

// invalid returns the paths of ps the local store lacks.
func (r *run) invalid(ctx context.Context, ps []storepath.Path) (map[storepath.Path]bool, error) {
	out := map[storepath.Path]bool{}
	if len(ps) == 0 {
		return out, nil
	}
	bad, err := nixcli.Chunked(ctx, ps, localParallel, r.c.Local.InvalidPaths)
	if err != nil {
		return nil, fmt.Errorf("check: local store: %w", err)
	}
	for _, q := range bad {
		out[q] = true
	}
	return out, nil
}

// markLocal asks the local store about ps and marks the valid ones.
func (r *run) markLocal(ctx context.Context, ps []storepath.Path) error {
	if r.c.Local == nil || len(ps) == 0 {
		return nil
	}
	bad, err := r.invalid(ctx, ps)
	if err != nil {
		return err
	}
	for _, p := range ps {
		if !bad[p] {
			r.nodes[p].local = true
		}
	}
	return nil
}

// findAll works out where every node is: locally, in a source (following
// narinfo references in rounds), or behind a hashed mirror.
func (r *run) findAll(ctx context.Context) error {
	log := r.c.log()
	var srcs, others []storepath.Path
	for p, n := range r.nodes {
		if n.kind == KindInputSource {
			srcs = append(srcs, p)
		} else {
			others = append(others, p)
		}
	}
	if r.c.Local == nil {
		for _, p := range srcs {
			r.nodes[p].local = true
		}
	} else if err := r.markLocal(ctx, srcs); err != nil {
		return err
	}
	if r.c.UseLocal {
		if err := r.markLocal(ctx, others); err != nil {
			return err
		}
	}
	var frontier []storepath.Path
	for p, n := range r.nodes {
		if !n.local {
			frontier = append(frontier, p)
		}
	}
	for round := 1; len(frontier) > 0; round++ {
		if err := r.lookup(ctx, frontier); err != nil {
			return err
		}
		var next []storepath.Path
		for _, p := range frontier {
			n := r.nodes[p]
			if n.ni == nil {
				continue
			}
			for _, ref := range n.ni.References {
				if _, ok := r.nodes[ref]; !ok {
					r.add(ref, KindReference)
					next = append(next, ref)
				}
			}
		}
		if r.c.UseLocal {
			if err := r.markLocal(ctx, next); err != nil {
				return err
			}
			next = slices.DeleteFunc(next, func(p storepath.Path) bool { return r.nodes[p].local })
		}
		log.Debug("looked up paths", "round", round, "paths", len(frontier), "new references", len(next))
		frontier = next
	}
	return r.mirrors(ctx)
}

// parallel runs fn on every item of ps with Jobs at a time, stopping at
// the first error.
func (r *run) parallel(ctx context.Context, ps []storepath.Path, fn func(context.Context, storepath.Path) error) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(r.c.jobs())
	for _, p := range ps {
		g.Go(func() error {
			if err := ctx.Err(); err != nil {
				return err
			}
			return fn(ctx, p)
		})
	}
	return g.Wait()
}

// lookup asks the sources, in order, for each of ps. Nodes are
// pre-allocated, so each goroutine writes only its own node.
func (r *run) lookup(ctx context.Context, ps []storepath.Path) error {
	if len(r.c.Sources) == 0 {
		return nil
	}
	nodes := make(map[storepath.Path]*node, len(ps))
	for _, p := range ps {
		nodes[p] = r.nodes[p]
	}
	return r.parallel(ctx, ps, func(ctx context.Context, p storepath.Path) error {
		n := nodes[p]
		for i, s := range r.c.Sources {
			ni, err := s.NarInfos.NarInfo(ctx, p.Hash)
			if errors.Is(err, cache.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return fmt.Errorf("check: source %s: %s: %w", s.Name, p, err)
			}
			if ni.StorePath != p {
				return fmt.Errorf("check: source %s: narinfo for %s describes %s: %w", s.Name, p, ni.StorePath, ErrBadSource)
			}
			n.ni, n.src = ni, i
			return nil
		}
		return nil
	})
}

// mirrors asks the sources' hashed mirrors for the flat files of
// builtin:fetchurl derivations whose output no source has.
func (r *run) mirrors(ctx context.Context) error {
	asks := map[storepath.Path]string{}
	for p, n := range r.nodes {
		if n.local || n.ni != nil || n.fixed == nil || n.fixed.Builder != "builtin:fetchurl" {
			continue
		}
		if mp := r.drvs[n.drv].mirror; mp != "" {
			asks[p] = mp
		}
	}
	var ps []storepath.Path
	for _, s := range r.c.Sources {
		if s.Mirror != nil {
			ps = slices.Collect(maps.Keys(asks))
			break
		}
	}
	return r.parallel(ctx, ps, func(ctx context.Context, p storepath.Path) error {
		for i, s := range r.c.Sources {
			if s.Mirror == nil {
				continue
			}
			ok, err := s.Mirror.HasFlat(ctx, asks[p])
			if err != nil {
				return fmt.Errorf("check: source %s: %w", s.Name, err)
			}
			if ok {
				r.nodes[p].mirror = i
				return nil
			}
		}
		return nil
	})
}

// substitutable reports whether n and its whole reference closure can
// be had without building.
func (r *run) substitutable(n *node) bool {
	switch n.subst {
	case 1, 3: // 3: a reference cycle, which only a path's self-reference makes
		return true
	case 2:
		return false
	}
	if n.local {
		n.subst = 1
		return true
	}
	if n.ni == nil {
		n.subst = 2
		return false
	}
	n.subst = 3
	ok := true
	for _, ref := range n.ni.References {
		if ref == n.path {
			continue
		}
		if m := r.nodes[ref]; m == nil || !r.substitutable(m) {
			ok = false
			if n.reason == "" {
				n.reason = fmt.Sprintf("its narinfo's reference %s cannot be substituted", ref)
			}
		}
	}
	n.subst = map[bool]int8{true: 1, false: 2}[ok]
	return ok
}

// buildable reports whether derivation d can be built offline, and
// records what blocks it.
func (r *run) buildable(d storepath.Path) bool {
	switch r.drvState[d] {
	case 1:
		return true
	case 2, 3: // 3: a cycle, which no real store holds
		return false
	}
	drv := r.drvs[d]
	if drv == nil {
		r.drvState[d] = 2
		return false
	}
	if drv.fod {
		r.drvState[d] = 2
		return false
	}
	r.drvState[d] = 3
	var why []storepath.Path
	for _, in := range slices.SortedFunc(maps.Keys(drv.inputDrvs), storepath.Compare) {
		for _, name := range drv.inputDrvs[in] {
			o, ok := r.output(in, name)
			if !ok {
				continue
			}
			if r.classify(r.nodes[o]) == Blocked {
				why = append(why, o)
			}
		}
	}
	for _, s := range drv.inputSrcs {
		if r.classify(r.nodes[s]) == Blocked {
			why = append(why, s)
		}
	}
	r.drvWhy[d] = why
	r.drvState[d] = map[bool]int8{true: 1, false: 2}[len(why) == 0]
	return len(why) == 0
}

// classify decides n's class.
func (r *run) classify(n *node) Class {
	if n.class != 0 {
		return n.class
	}
	switch {
	case r.substitutable(n), n.mirror >= 0:
		n.class = Available
	case n.drv != (storepath.Path{}) && r.buildable(n.drv):
		n.class = Buildable
	default:
		n.class = Blocked
		switch {
		case n.drv == (storepath.Path{}) && n.kind == KindInputSource:
			n.reason = "input source in neither the local store nor a source"
		case n.drv == (storepath.Path{}):
			if n.reason == "" {
				n.reason = "in no source, and no derivation is known to build it"
			}
		case n.fixed != nil:
			n.reason = "fixed-output derivation in no source: its builder needs the network"
		default:
			n.blockedBy = r.drvWhy[n.drv]
		}
	}
	return n.class
}

// need marks p as needed, and what realising it needs.
func (r *run) need(p storepath.Path) {
	stack := []storepath.Path{p}
	for len(stack) > 0 {
		q := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		n := r.nodes[q]
		if n == nil || n.needed {
			continue
		}
		n.needed = true
		switch {
		case n.class == Available && n.subst == 1 && n.ni != nil:
			stack = append(stack, n.ni.References...)
		case n.class == Available:
			// Local (its closure is local too) or a mirror file.
		case n.fixed != nil:
			// A missing fixed output cannot be fetched offline: its
			// fetcher's inputs are of no use.
		case n.drv != (storepath.Path{}):
			drv := r.drvs[n.drv]
			for in, names := range drv.inputDrvs {
				for _, name := range names {
					if o, ok := r.output(in, name); ok {
						stack = append(stack, o)
					}
				}
			}
			stack = append(stack, drv.inputSrcs...)
		}
	}
}

// localClosure marks the runtime closures of needed local paths needed,
// when the local store can list them.
func (r *run) localClosure(ctx context.Context) error {
	lc, ok := r.c.Local.(LocalClosure)
	if !r.c.UseLocal || !ok {
		return nil
	}
	var ps []storepath.Path
	for p, n := range r.nodes {
		if n.needed && n.local {
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		return nil
	}
	closure, err := nixcli.Chunked(ctx, ps, localParallel, lc.Requisites)
	if err != nil {
		return fmt.Errorf("check: local store: %w", err)
	}
	for _, q := range closure {
		n := r.nodes[q]
		if n == nil {
			n = r.add(q, KindReference)
			n.local, n.subst, n.class = true, 1, Available
		}
		n.needed = true
	}
	return nil
}

func (r *run) via(n *node) string {
	switch {
	case n.class != Available:
		return ""
	case n.local:
		return "local"
	case n.subst == 1 && n.ni != nil:
		return r.c.Sources[n.src].Name
	case n.mirror >= 0:
		return "mirror " + r.c.Sources[n.mirror].Name
	}
	return ""
}

// result assembles the Result.
func (r *run) result(targets []Target, tpaths [][]storepath.Path) *Result {
	res := &Result{StoreDir: r.c.StoreDir, index: map[storepath.Path]int{}}
	for _, s := range r.c.Sources {
		res.Sources = append(res.Sources, s.Name)
	}
	ps := slices.SortedFunc(maps.Keys(r.nodes), storepath.Compare)
	sum := &res.Summary
	for _, p := range ps {
		n := r.nodes[p]
		if n.kind == KindReference && !n.needed {
			continue // looked up only to decide substitutability
		}
		pr := PathResult{
			Path: p, Kind: n.kind, Class: n.class, Needed: n.needed, Via: r.via(n),
			DrvPath: n.drv, FixedOutput: n.fixed, BlockedBy: n.blockedBy, Reason: n.reason,
		}
		if n.ni != nil {
			pr.NarSize, pr.FileSize = n.ni.NarSize, n.ni.FileSize
			if pr.FileSize == 0 {
				pr.FileSize = n.ni.NarSize
			}
		}
		res.index[p] = len(res.Paths)
		res.Paths = append(res.Paths, pr)
		if !n.needed {
			if n.kind == KindOutput {
				sum.NotNeeded++
			}
			continue
		}
		switch n.class {
		case Available:
			sum.Available++
			switch {
			case n.local:
				sum.Local++
			case n.subst == 1:
				sum.FromSources++
				sum.DownloadBytes += pr.FileSize
				sum.NarBytes += pr.NarSize
			default:
				sum.ViaMirror++
			}
		case Buildable:
			if n.kind == KindOutput {
				sum.ToBuild++
			}
		case Blocked:
			sum.Blocked++
		}
	}
	// Root causes and the targets that reach them through blocked paths.
	causeTargets := map[storepath.Path][]string{}
	for i, t := range targets {
		seen := map[storepath.Path]bool{}
		stack := slices.Clone(tpaths[i])
		for len(stack) > 0 {
			q := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			n := r.nodes[q]
			if seen[q] || n.class != Blocked {
				continue
			}
			seen[q] = true
			if len(n.blockedBy) == 0 {
				if !slices.Contains(causeTargets[q], t.Name) {
					causeTargets[q] = append(causeTargets[q], t.Name)
				}
			}
			stack = append(stack, n.blockedBy...)
		}
	}
	for _, p := range slices.SortedFunc(maps.Keys(causeTargets), storepath.Compare) {
		n := r.nodes[p]
		res.RootCauses = append(res.RootCauses, RootCause{
			Path: p, DrvPath: n.drv, FixedOutput: n.fixed, Reason: n.reason, Targets: causeTargets[p],
		})
	}
	for i, t := range targets {
		tr := TargetResult{Name: t.Name, Paths: tpaths[i], Class: Available, FlakeInput: t.FlakeInput}
		for _, p := range tpaths[i] {
			tr.Class = max(tr.Class, r.nodes[p].class)
		}
		res.Targets = append(res.Targets, tr)
	}
	return res
}
