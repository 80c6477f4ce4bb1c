// Package plan works out, for chosen targets, the whole set of store paths
// an airgapped machine needs, and where each one comes from: the local
// store, an upstream binary cache, or a Nix build.
//
// A Planner evaluates the targets with nixcli (one nix invocation per kind
// of target), walks their build closure by reading .drv files directly
// (in parallel), takes output paths from the .drvs, and resolves every
// needed path in this order, fastest honest source first:
//
//  1. valid in the local store (batched nix-store and nix path-info calls);
//  2. on an upstream binary cache, when its narinfo is signed by a trusted
//     key or is content-addressed (parallel lookups, bounded by Jobs);
//  3. otherwise it must be realised: fetched (a fixed-output derivation)
//     or built.
//
// Runtime closures follow local references for store paths and narinfo
// references for upstream ones. A path that must be built has no known
// references until it is built: its Item says so (ReferencesKnown), and
// pack completes its closure after realising it.
//
// The result is a Plan: the resolved targets, every Item sorted by path
// with its roles and source, and the flake registry entries the bundle
// needs. pack consumes a Plan; Summary and MarshalJSON report it.
//
// Planner.Plan (planner.go) runs the stages, a file each: eval.go and
// flake.go evaluate the targets, graph.go reads the .drv closure, and
// resolve.go resolves the paths, asking the local store (localstore.go),
// then the upstreams (upstream.go).
package plan

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/derivation"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/progress"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// SourceKind is where a path comes from.
type SourceKind uint8

const (
	// FromStore: valid in the local store; pack dumps its NAR.
	FromStore SourceKind = iota + 1
	// FromUpstream: on an upstream binary cache with a trusted narinfo;
	// pack copies the compressed NAR verbatim.
	FromUpstream
	// FromBuild: neither; it must be realised with Nix (a fixed-output
	// derivation fetched, or a derivation built) before packing.
	FromBuild
)

func (k SourceKind) String() string {
	switch k {
	case FromStore:
		return "store"
	case FromUpstream:
		return "upstream"
	case FromBuild:
		return "build"
	}
	return fmt.Sprintf("SourceKind(%d)", k)
}

// Source is where one path comes from.
type Source struct {
	Kind SourceKind
	// Upstream is the index in Planner.Upstreams, for FromUpstream.
	Upstream int
	// URL is that upstream's URL, for FromUpstream.
	URL string
}

// Item is one store path of a plan.
type Item struct {
	Path   storepath.Path
	Roles  role.Set
	Source Source
	// NarHash and NarSize describe the path's NAR; zero for FromBuild.
	NarHash storepath.Hash
	NarSize uint64
	// FileSize is the bytes the path will take in a bundle: exact for
	// FromUpstream (the compressed NAR's size, or NarSize when the
	// narinfo omits it), an estimate (NarSize × estimatedZstdRatio) for
	// FromStore, zero for FromBuild.
	FileSize uint64
	// References are the path's direct references, sorted; nil and
	// meaningless for FromBuild (see ReferencesKnown).
	References []storepath.Path
	// Deriver is the .drv that made the path, when known.
	Deriver storepath.Path
	// DrvPath is the .drv to realise for FromBuild items: the derivation
	// in the build closure with this output, else the deriver a
	// narinfo names. It is zero when no derivation is known: realising
	// the output path itself is then the only way (substitution).
	DrvPath storepath.Path
	// Info is what the local store says, for FromStore.
	Info *nixcli.PathInfo
	// NarInfo is the upstream's narinfo, for FromUpstream.
	NarInfo *narinfo.NarInfo
	// Fetch is what the fixed-output derivation that makes the path
	// downloads, when the plan read that .drv (any mode but runtime); for
	// a flake source, the flake's locked reference and NAR hash.
	Fetch *derivation.Fetch
}

// LocalFlake reports whether the item is the source of a flake in a
// local directory (its locked reference path: or git+file:), such as the
// packed flake's own: evaluating the flake makes it from that directory.
func (it *Item) LocalFlake() bool {
	if !it.Roles.Has(role.FlakeInput) || it.Fetch == nil || len(it.Fetch.URLs) == 0 {
		return false
	}
	u := it.Fetch.URLs[0]
	return strings.HasPrefix(u, "path:") || strings.HasPrefix(u, "git+file:")
}

// ReferencesKnown reports whether References is the path's real reference
// list. It is false for paths still to be built: their runtime closure is
// known only after realising them.
func (it *Item) ReferencesKnown() bool { return it.Source.Kind != FromBuild }

// ResolvedTarget is a target and what it resolved to.
type ResolvedTarget struct {
	Spec TargetSpec
	// DrvPath is the target's derivation; zero for a target that is a
	// plain store path (an output named directly, or with no known
	// derivation).
	DrvPath storepath.Path
	// Outputs maps the wanted output names to their paths, for
	// derivation targets.
	Outputs map[string]storepath.Path
	// Path is the store path, for a target that named an output path
	// directly; zero otherwise.
	Path storepath.Path
}

// Paths returns the target's output paths (or Path), sorted.
func (rt *ResolvedTarget) Paths() []storepath.Path {
	var out []storepath.Path
	if rt.Path != (storepath.Path{}) {
		out = append(out, rt.Path)
	}
	for _, p := range rt.Outputs {
		out = append(out, p)
	}
	sortPaths(out)
	return out
}

// RegistryEntry maps an indirect flake reference (a flake registry id,
// such as "nixpkgs") used by a target's flake to the source packed for
// it. pack writes these into the bundle's flake-registry.json, which
// has the same from/to shape.
type RegistryEntry struct {
	// From is the indirect reference as the flake wrote it:
	// {"type": "indirect", "id": ID} and, if given, "ref" or "rev".
	From nixcli.FlakeRef
	// To is what the registry should resolve it to: {"type": "path",
	// "path": SOURCE, "narHash": "sha256-…"} (plus "lastModified" when
	// locked), so that offline Nix substitutes SOURCE from the bundle.
	To nixcli.FlakeRef
	// Locked is the reference as the lock file pinned it, for reports.
	Locked nixcli.FlakeRef
	// Source is the source's store path, the path in To.
	Source storepath.Path
}

// Plan is the outcome of Planner.Plan.
type Plan struct {
	StoreDir    storepath.Dir
	Mode        role.Mode
	Derivations bool
	// Targets are in the order given.
	Targets []ResolvedTarget
	// Items are sorted by path.
	Items []Item
	// FlakeRegistry maps the flakes' indirect references to their
	// packed sources, sorted by id; empty without flake targets.
	FlakeRegistry []RegistryEntry
	// Upstreams are the URLs of Planner.Upstreams, by index.
	Upstreams []string
	// Since is what the bases of a delta change (plan --since), when
	// asked.
	Since *Since

	// groups hold per-target roles for Summary.
	groups []*group
}

// Since is what a delta's bases (plan --since) change about a plan:
// the paths a site that imported them holds are left out, and paths similar to theirs travel
// as binary deltas when that is smaller (measured by making each one).
type Since struct {
	Bases []string `json:"bases"`
	// InBases counts the plan's paths a site that imported the bases
	// holds, InBasesNarSize their NAR bytes: pack leaves them out.
	// InBasesNotCarried counts those no base carries itself: held
	// through what the bases carry refer to, or their own bases.
	InBases           int    `json:"inBases"`
	InBasesNarSize    uint64 `json:"inBasesNarBytes"`
	InBasesNotCarried int    `json:"inBasesNotCarried"`
	// DeltaPaths would travel as binary deltas, saving DeltaSaved bytes
	// of their compressed NARs; DeltaTried were tried, DeltaNoBase had a
	// similar base path whose NAR is not at hand.
	DeltaPaths  int    `json:"deltaPaths"`
	DeltaSaved  uint64 `json:"deltaSavedBytes"`
	DeltaTried  int    `json:"deltaTried"`
	DeltaNoBase int    `json:"deltaNoBase"`
}

// Item returns the item for p, or nil.
func (pl *Plan) Item(p storepath.Path) *Item {
	lo, hi := 0, len(pl.Items)
	for lo < hi {
		mid := (lo + hi) / 2
		if c := storepath.Compare(pl.Items[mid].Path, p); c == 0 {
			return &pl.Items[mid]
		} else if c < 0 {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return nil
}

// References are p's references as the plan knows them: nil for a path
// the plan lacks or one left to build. It is the plan's reference graph,
// over which pack --since takes the closure of what its bases hold
// (bundle.Bases.Known).
func (pl *Plan) References(p storepath.Path) []storepath.Path {
	if it := pl.Item(p); it != nil && it.ReferencesKnown() {
		return it.References
	}
	return nil
}

// ToBuild returns the items that must be realised with Nix, sorted by
// path.
func (pl *Plan) ToBuild() []*Item {
	var out []*Item
	for i := range pl.Items {
		if pl.Items[i].Source.Kind == FromBuild {
			out = append(out, &pl.Items[i])
		}
	}
	return out
}

// ErrMissing reports paths that would have to be built when building was
// not allowed (Options.NoBuild). The error is a *MissingError.
var ErrMissing = errors.New("paths are neither in the store nor on an upstream cache")

// MissingError lists the paths that must be built but may not be.
type MissingError struct {
	Items []*Item
}

func (e *MissingError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "plan: %s must be built, but building is off (--no-build): %v:", progress.Plural(len(e.Items), "path"), ErrMissing)
	for _, it := range e.Items {
		b.WriteString("\n  ")
		b.WriteString(it.Path.String())
		if it.DrvPath != (storepath.Path{}) {
			b.WriteString(" (from ")
			b.WriteString(it.DrvPath.String())
			b.WriteString(")")
		}
	}
	return b.String()
}

func (e *MissingError) Unwrap() error { return ErrMissing }

// errNoSuchPath reports a target store path that is not valid in the
// store, that no upstream cache has, and that no known derivation makes:
// mistyped, or garbage-collected. It wraps nixcli.ErrInvalidPath.
var errNoSuchPath = fmt.Errorf("%w, no upstream cache has it, and no known derivation makes it", nixcli.ErrInvalidPath)

// CheckTargetPaths returns an error naming the targets given as output
// paths (not .drv files) that nothing can provide (errNoSuchPath):
// realising them would only say that the build of a path with no
// derivation failed.
func (pl *Plan) CheckTargetPaths() error {
	var bad []string
	for _, t := range pl.Targets {
		if t.Spec.Kind != TargetPath || t.Path.IsDerivation() {
			continue
		}
		if it := pl.Item(t.Path); it != nil && it.Source.Kind == FromBuild && it.DrvPath == (storepath.Path{}) {
			bad = append(bad, t.Path.String())
		}
	}
	switch len(bad) {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("plan target %s: %w (mistyped?)", bad[0], errNoSuchPath)
	}
	return fmt.Errorf("plan targets %s: %w (mistyped?)", strings.Join(bad, ", "), errNoSuchPath)
}

func sortPaths(ps []storepath.Path) { slices.SortFunc(ps, storepath.Compare) }
