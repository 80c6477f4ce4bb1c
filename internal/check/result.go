package check

import (
	"fmt"
	"maps"
	"slices"

	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

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

func (r *run) via(n *node) string {
	switch {
	case n.class != Available:
		return ""
	case n.local:
		return "local"
	case n.subst == decidedYes && n.ni != nil:
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
			case n.subst == decidedYes:
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
