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
//
// Check runs in phases, a file each: drv.go reads the build closure,
// lookup.go finds every path (local store, sources, hashed mirrors),
// classify.go classifies the paths and marks the needed ones, result.go
// assembles the Result and report.go writes it out.
package check

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nix-airgap/nix-airgap/internal/derivation"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Sentinel errors.
var (
	// ErrBlocked reports needed paths that can be neither substituted
	// nor built offline. The error is a *BlockedError.
	ErrBlocked = errors.New("blocked")
	// ErrStoreDir reports a source for another store dir.
	ErrStoreDir = storepath.ErrWrongDir
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
	// Local marks a flake input made from a local directory (path:,
	// git+file:), such as the checked flake's own source: evaluating
	// the flake makes it, so it is present where it is valid locally,
	// as an input source is.
	Local bool
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
	// Log gets progress; nil discards it.
	Log *slog.Logger
}

func (c *Checker) log() *slog.Logger {
	if c.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Log
}

func (c *Checker) jobs() int {
	if c.Jobs <= 0 {
		return 16
	}
	return c.Jobs
}

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
	// subst: whether it and its closure are substitutable.
	subst     decision
	class     Class
	needed    bool
	blockedBy []storepath.Path
	reason    string
}

// decision is what a check has found out about a path or derivation so
// far: the recursion that decides it marks it deciding on the way in, so
// that a cycle ends.
type decision int8

const (
	undecided decision = iota
	decidedYes
	decidedNo
	deciding
)

// decide is decidedYes if ok, else decidedNo.
func decide(ok bool) decision {
	if ok {
		return decidedYes
	}
	return decidedNo
}

// run is the state of one Check.
type run struct {
	c     *Checker
	nodes map[storepath.Path]*node
	drvs  map[storepath.Path]*drvInfo
	// drvState: whether each derivation is buildable.
	drvState map[storepath.Path]decision
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
		drvState: map[storepath.Path]decision{}, drvWhy: map[storepath.Path][]storepath.Path{},
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
