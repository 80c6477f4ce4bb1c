package inventory

import (
	"cmp"
	"slices"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// The kinds of PackageChange.
const (
	Added   = "added"   // a package name OLD lacks
	Removed = "removed" // a package name NEW lacks
	Updated = "version" // versions came or went
	Rebuilt = "rebuild" // the same versions, other store paths
)

// Diff is what changed from one inventory to another, package by
// package, as `nix store diff-closures` reports closures.
type Diff struct {
	Old string `json:"old"`
	New string `json:"new"`
	// Packages are the package names whose versions or paths differ,
	// sorted by name.
	Packages []PackageChange `json:"packages"`
	// SourcesAdded and SourcesRemoved are the fixed-output paths only
	// one side holds.
	SourcesAdded   []Source `json:"sourcesAdded"`
	SourcesRemoved []Source `json:"sourcesRemoved"`
	// PathsAdded and PathsRemoved count every path only one side holds,
	// .drv files included, with their sizes.
	PathsAdded   Totals `json:"pathsAdded"`
	PathsRemoved Totals `json:"pathsRemoved"`
	// Notes say how the sides were read: how a delta was completed, or
	// why it could not be.
	Notes []string `json:"notes"`
}

// PackageChange is one package name whose paths differ.
type PackageChange struct {
	Name   string `json:"name"`
	Change string `json:"change"`
	// Old are the versions only OLD has, New those only NEW has, as
	// diff-closures shows them; Versions are those both have.
	Old      []string `json:"old"`
	New      []string `json:"new"`
	Versions []string `json:"versions"`
	// OldPaths and NewPaths are the paths only one side has.
	OldPaths []string `json:"oldPaths"`
	NewPaths []string `json:"newPaths"`
	// SizeDelta is NEW's NAR size minus OLD's, in bytes.
	SizeDelta int64 `json:"narBytesChange"`
}

// Compare says what changed from old to new.
//
// A delta bundle (one packed with --since) carries only what changed, so
// when new is one whose bases old holds, new is completed from old first:
// a package new carries replaces old's paths of the same package name and
// output, and everything else old holds counts as still there. A delta
// therefore never shows a package as removed. A delta whose bases old
// does not hold is compared as it is, with a note. A cache (or its
// inventory) holds every path it has, whatever its records extend, and
// is compared as it is: gc may have removed what an old record brought.
func Compare(old, new *Inventory) *Diff {
	d := &Diff{Old: old.Source, New: new.Source, Packages: []PackageChange{}, SourcesAdded: []Source{}, SourcesRemoved: []Source{}, Notes: []string{}}
	newPaths := new.paths
	if bases := new.bases(); len(bases) > 0 && (new.Kind == KindBundle || new.Kind == KindManifest) {
		if missing := old.lacks(bases); len(missing) == 0 {
			newPaths = complete(old.paths, new.paths)
			d.Notes = append(d.Notes, "NEW is a delta of OLD: it is read as OLD with NEW's packages replacing theirs, so no package shows as removed (the paths it replaces do)")
		} else {
			d.Notes = append(d.Notes, "NEW is a delta of bundles OLD does not hold ("+strings.Join(missing, ", ")+"): compared as it is, so what it leaves to its bases shows as removed")
		}
	}

	oldSet, newSet := pathSet(old.paths), pathSet(newPaths)
	d.PathsAdded, d.PathsRemoved = totals(newPaths, oldSet), totals(old.paths, newSet)

	type side struct {
		versions map[string]bool
		paths    map[storepath.Path]*Path
	}
	byName := map[string]*[2]side{}
	add := func(paths []Path, i int) {
		for j := range paths {
			p := &paths[j]
			if p.IsDerivation() || p.IsSource() {
				continue
			}
			s := byName[p.Package.Name]
			if s == nil {
				s = &[2]side{{map[string]bool{}, map[storepath.Path]*Path{}}, {map[string]bool{}, map[storepath.Path]*Path{}}}
				byName[p.Package.Name] = s
			}
			s[i].versions[p.Package.Version] = true
			s[i].paths[p.Path] = p
		}
	}
	add(old.paths, 0)
	add(newPaths, 1)
	for name, s := range byName {
		c := PackageChange{Name: name, Old: []string{}, New: []string{}, Versions: []string{}, OldPaths: []string{}, NewPaths: []string{}}
		for v := range s[0].versions {
			if s[1].versions[v] {
				c.Versions = append(c.Versions, v)
			} else {
				c.Old = append(c.Old, v)
			}
		}
		for v := range s[1].versions {
			if !s[0].versions[v] {
				c.New = append(c.New, v)
			}
		}
		for q, p := range s[0].paths {
			if s[1].paths[q] == nil {
				c.OldPaths = append(c.OldPaths, q.String())
				c.SizeDelta -= int64(p.NarSize)
			}
		}
		for q, p := range s[1].paths {
			if s[0].paths[q] == nil {
				c.NewPaths = append(c.NewPaths, q.String())
				c.SizeDelta += int64(p.NarSize)
			}
		}
		switch {
		case len(s[0].paths) == 0:
			c.Change = Added
		case len(s[1].paths) == 0:
			c.Change = Removed
		case len(c.Old) > 0 || len(c.New) > 0:
			c.Change = Updated
		case len(c.OldPaths) > 0 || len(c.NewPaths) > 0:
			c.Change = Rebuilt
		default:
			continue
		}
		for _, l := range [][]string{c.Old, c.New, c.Versions, c.OldPaths, c.NewPaths} {
			slices.Sort(l)
		}
		d.Packages = append(d.Packages, c)
	}
	slices.SortFunc(d.Packages, func(a, b PackageChange) int { return strings.Compare(a.Name, b.Name) })

	for i := range newPaths {
		if p := &newPaths[i]; p.IsSource() && !oldSet[p.Path] {
			d.SourcesAdded = append(d.SourcesAdded, newSource(p))
		}
	}
	for i := range old.paths {
		if p := &old.paths[i]; p.IsSource() && !newSet[p.Path] {
			d.SourcesRemoved = append(d.SourcesRemoved, newSource(p))
		}
	}
	bySourceName := func(a, b Source) int { return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.Path, b.Path)) }
	slices.SortFunc(d.SourcesAdded, bySourceName)
	slices.SortFunc(d.SourcesRemoved, bySourceName)
	return d
}

// bases are the ids of the bundles new's bundles extend and new itself
// does not hold.
func (inv *Inventory) bases() []string {
	have := map[string]bool{}
	for _, b := range inv.Bundles {
		have[b.ID] = true
	}
	var out []string
	for _, b := range inv.Bundles {
		for _, id := range b.Bases {
			if !have[id] {
				out = append(out, id)
			}
		}
	}
	return sortedSet(out)
}

// lacks returns the ids of ids that inv holds neither as a bundle nor as
// a base of one of its bundles (a delta's bases are part of what it
// stands for).
func (inv *Inventory) lacks(ids []string) []string {
	have := map[string]bool{}
	for _, id := range inv.alsoIDs {
		have[id] = true
	}
	for _, b := range inv.Bundles {
		have[b.ID] = true
		for _, id := range b.Bases {
			have[id] = true
		}
	}
	var out []string
	for _, id := range ids {
		if !have[id] {
			out = append(out, id)
		}
	}
	return out
}

// complete returns delta's paths plus every path of old whose package
// (name and output) no package path of delta replaces, sorted.
func complete(old, delta []Path) []Path {
	type key struct{ name, output string }
	replaced := map[key]bool{}
	for _, p := range delta {
		if !p.IsDerivation() && !p.IsSource() {
			replaced[key{p.Package.Name, p.Output}] = true
		}
	}
	out := slices.Clone(delta)
	in := pathSet(delta)
	for _, p := range old {
		if in[p.Path] || !p.IsDerivation() && !p.IsSource() && replaced[key{p.Package.Name, p.Output}] {
			continue
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Path) int { return storepath.Compare(a.Path, b.Path) })
	return out
}

func pathSet(paths []Path) map[storepath.Path]bool {
	m := make(map[storepath.Path]bool, len(paths))
	for _, p := range paths {
		m[p.Path] = true
	}
	return m
}

// totals counts the paths of ps not in except.
func totals(ps []Path, except map[storepath.Path]bool) Totals {
	t := Totals{Roles: map[string]int{}, Origins: map[string]int{}}
	for _, p := range ps {
		if except[p.Path] {
			continue
		}
		t.Paths++
		if p.IsDerivation() {
			t.Derivations++
		}
		t.NarSize += p.NarSize
		t.FileSize += p.FileSize
		for _, r := range p.Roles.Names() {
			t.Roles[r]++
		}
		t.Origins[OriginString(p.Origin)]++
	}
	return t
}

// Merge makes one inventory of several, as a cache that imported them
// all would hold: `pack --since` compares with every base at once.
func Merge(source string, invs ...*Inventory) *Inventory {
	inv := &Inventory{Source: source, Kind: KindCache}
	var ms []*bundle.Manifest
	var ids []string
	for _, in := range invs {
		if inv.StoreDir == "" {
			inv.StoreDir = in.StoreDir
		}
		for _, b := range in.Bundles {
			inv.Bundles = append(inv.Bundles, b)
			ms, ids = append(ms, b.manifest), append(ids, b.ID)
		}
		inv.alsoIDs = append(inv.alsoIDs, in.alsoIDs...)
	}
	inv.addPaths(ms, ids, nil)
	return inv
}
