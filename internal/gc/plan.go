package gc

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// record is one imported bundle, as the cache recorded it.
type record struct {
	name     string // the record's base name, ID.json
	imported time.Time
	data     []byte
	m        *bundle.Manifest
}

// node is one narinfo of the cache: what gc needs of it.
type node struct {
	path    storepath.Path
	refs    []string // hash parts, self excluded
	url     string
	deriver string // the deriver's base name, "" if unknown
	size    int64  // the narinfo file's
	err     error  // the narinfo could not be read
}

// graph is the cache's narinfos by hash part.
type graph map[string]*node

// newestFirst orders records by when they were imported (their record's
// modification time: import writes the record last), newest first; ties
// by creation time, then name.
func newestFirst(recs []*record) {
	slices.SortFunc(recs, func(a, b *record) int {
		if c := b.imported.Compare(a.imported); c != 0 {
			return c
		}
		if c := b.m.Created.Compare(a.m.Created); c != 0 {
			return c
		}
		return strings.Compare(b.name, a.name)
	})
}

// needs lists what a bundle's targets need in its mode, before the
// closure over references is taken: the paths it carries, its targets'
// outputs (and derivations, when it carries them), and, for a delta, the
// paths of its bases that it left out because they were there already.
//
// In runtime mode those are the targets' outputs' closure, which
// references give. In sources and build mode the build closure's
// outputs are not referenced by the targets: a delta's manifest names
// the ones its bases provide (bases[].provides). One that predates
// provides cannot say: then every path of every bundle imported before it
// is needed too (ok is false), keeping too much rather than too little.
func needs(r *record, older []*record) (paths []storepath.Path, ok bool) {
	m := r.m
	for _, e := range m.Paths {
		paths = append(paths, e.Path)
	}
	for _, t := range m.Targets {
		for _, o := range t.Outputs {
			paths = append(paths, o)
		}
		if m.Derivations && t.DrvPath != (storepath.Path{}) {
			paths = append(paths, t.DrvPath)
		}
	}
	ok = true
	for _, b := range m.Bases {
		if len(b.Provides) == 0 && m.Mode != role.ModeRuntime {
			ok = false
		}
		paths = append(paths, b.Provides...)
	}
	if !ok {
		for _, o := range older {
			for _, e := range o.m.Paths {
				paths = append(paths, e.Path)
			}
		}
	}
	return paths, ok
}

// closure returns the hash parts of seeds that have narinfos and of
// everything they refer to, and the hash parts among them whose narinfo
// could not be read, whose references are unknown.
func (g graph) closure(seeds []storepath.Path) (keep map[string]bool, unreadable []string) {
	keep = make(map[string]bool, len(g))
	var stack []string
	for _, p := range seeds {
		if n, ok := g[p.Hash]; ok && (n.err != nil || n.path == p) && !keep[p.Hash] {
			keep[p.Hash] = true
			stack = append(stack, p.Hash)
		}
	}
	for len(stack) > 0 {
		h := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		n := g[h]
		if n.err != nil {
			unreadable = append(unreadable, h)
			continue
		}
		for _, r := range n.refs {
			if _, ok := g[r]; ok && !keep[r] {
				keep[r] = true
				stack = append(stack, r)
			}
		}
	}
	slices.Sort(unreadable)
	return keep, unreadable
}

// removalLevels orders the hash parts to remove in levels: each narinfo
// in a level before every narinfo it refers to, so that the narinfos left
// at any moment refer only to narinfos that are there, as after import.
// The narinfos of one level may go in any order, or at once.
func (g graph) removalLevels(remove map[string]bool) [][]string {
	referrers := make(map[string]int, len(remove)) // removed referrers not yet removed
	for h := range remove {
		for _, r := range g[h].refs {
			if remove[r] {
				referrers[r]++
			}
		}
	}
	var level []string
	for h := range remove {
		if referrers[h] == 0 {
			level = append(level, h)
		}
	}
	var levels [][]string
	done := 0
	for len(level) > 0 {
		slices.Sort(level)
		levels = append(levels, level)
		done += len(level)
		var next []string
		for _, h := range level {
			for _, r := range g[h].refs {
				if remove[r] {
					if referrers[r]--; referrers[r] == 0 {
						next = append(next, r)
					}
				}
			}
		}
		level = next
	}
	if done < len(remove) {
		// A cycle, which Nix never makes: last, in any order.
		var rest []string
		for h := range remove {
			if referrers[h] > 0 {
				rest = append(rest, h)
			}
		}
		slices.Sort(rest)
		levels = append(levels, rest)
	}
	return levels
}

// Roots says what gc keeps: the closures of the last KeepBundles bundles
// imported, each in its mode, or of the store paths Paths lists.
type Roots struct {
	KeepBundles int
	Paths       []storepath.Path
}

func (r Roots) String() string {
	if r.Paths != nil {
		return fmt.Sprintf("the closures of %d root paths", len(r.Paths))
	}
	return fmt.Sprintf("the closures of the last %d imported bundles", r.KeepBundles)
}

// seeds are the paths whose closures gc keeps, and the bundles kept.
func (r Roots) seeds(recs []*record) (seeds []storepath.Path, kept []*record, conservative []*record) {
	if r.Paths != nil {
		return r.Paths, nil, nil
	}
	newestFirst(recs)
	kept = recs[:min(r.KeepBundles, len(recs))]
	for i, rec := range kept {
		ps, ok := needs(rec, recs[i+1:])
		seeds = append(seeds, ps...)
		if !ok {
			conservative = append(conservative, rec)
		}
	}
	return seeds, kept, conservative
}
