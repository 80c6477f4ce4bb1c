package inventory

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/progress"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// The kinds of PackageChange, by the first that applies.
const (
	Added   = "added"   // a package name OLD lacks
	Removed = "removed" // a package name NEW lacks
	Updated = "version" // versions came or went
	Builds  = "builds"  // the same versions; of one, more or fewer builds
	Outputs = "outputs" // the same versions and builds; outputs came or went
	Rebuilt = "rebuild" // the same versions, builds and outputs; other store paths
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
	// OldSignatures and NewSignatures are each side's bundles'
	// signatures, when they were checked against keys (Open's keys); nil
	// when they were not.
	OldSignatures []BundleSignature `json:"oldSignatures,omitempty"`
	NewSignatures []BundleSignature `json:"newSignatures,omitempty"`

	// newIsDelta says that NEW was read as the closure of a delta of
	// OLD: what only OLD holds is what NEW no longer needs, which
	// importing NEW does not remove.
	newIsDelta bool
}

// BundleSignature is who signed one bundle of a side of a diff.
type BundleSignature struct {
	ID string `json:"id"`
	Signature
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
	// Builds are, for each of Versions whose paths differ, how its
	// builds and outputs changed.
	Builds []VersionChange `json:"builds"`
	// OldPaths and NewPaths are the paths only one side has.
	OldPaths []string `json:"oldPaths"`
	NewPaths []string `json:"newPaths"`
	// SizeDelta is NEW's NAR size minus OLD's, in bytes; 0 when
	// SizeUnknown.
	SizeDelta int64 `json:"narBytesChange"`
	// SizeUnknown says that the NAR size of a path only one side has is
	// not known (one a delta OLD's bases provide), so neither is
	// SizeDelta.
	SizeUnknown bool `json:"narBytesUnknown,omitempty"`
}

// VersionChange is how the paths of one version both sides have differ.
// A build is one path of each output: a side's builds of a version are
// the most paths it has of any one output ("out" and "man" of one build
// are one, two paths of "out" are two).
type VersionChange struct {
	Version   string `json:"version"`
	OldBuilds int    `json:"oldBuilds"`
	NewBuilds int    `json:"newBuilds"`
	// Rebuilt counts the builds one side has in place of the other's:
	// of an output both have, the paths only OLD has matched one to one
	// with those only NEW has.
	Rebuilt int `json:"rebuilt"`
	// OutputsAdded and OutputsRemoved are the output names only NEW, or
	// only OLD, has paths of ("" when no deriver tells).
	OutputsAdded   []string `json:"outputsAdded"`
	OutputsRemoved []string `json:"outputsRemoved"`
}

// Compare says what changed from old to new.
//
// A delta bundle (one packed with --since) carries only what changed and
// names, of each base, the paths it needs from it (bases[].provides). So
// when new is a delta whose bases old holds, or whose provided paths old
// holds (a delta of a cache's inventory, against that cache), new is
// read as what it stands for: its own paths and the paths old provides
// for it. What old holds beyond that is what new no longer needs, which
// importing new does not remove (gc does). A delta whose manifest
// predates provides is read as old with new's packages replacing theirs
// of the same name and output. A delta whose bases old does not hold is
// compared as it is, with a note. An old that is a delta (or, for pack
// --since, a Merge of bundles one of which is) is read likewise as its
// own paths and those its bases provide, known by name alone, so that an
// upgrade of what it left to its bases shows as one; one whose manifest
// predates provides is compared as it is, with a note: what it leaves to
// its bases shows as added. A cache (or its inventory) holds every path
// it has, whatever its records extend, and is compared as it is: gc may
// have removed what an old record brought.
func Compare(old, new *Inventory) *Diff {
	d := &Diff{Old: old.Source, New: new.Source, Packages: []PackageChange{}, SourcesAdded: []Source{}, SourcesRemoved: []Source{}, Notes: []string{}}
	d.OldSignatures, d.NewSignatures = old.signatures(), new.signatures()
	oldPaths := old.paths
	if old.Kind == KindBundle || old.Kind == KindManifest || old.merged {
		oldPaths = d.readOldDelta(old)
	}
	newPaths := new.paths
	if new.Kind == KindBundle || new.Kind == KindManifest {
		newPaths = d.readDelta(old, oldPaths, new)
	}
	knowFrom(oldPaths, newPaths)
	if old.emptyCache() {
		d.Notes = append(d.Notes, "OLD is "+emptyCacheText)
	}
	if new.emptyCache() {
		d.Notes = append(d.Notes, "NEW is "+emptyCacheText)
	}

	oldSet, newSet := pathSet(oldPaths), pathSet(newPaths)
	d.PathsAdded, d.PathsRemoved = totals(newPaths, oldSet), totals(oldPaths, newSet)

	byName := map[string]*[2][]*Path{}
	add := func(paths []Path, i int) {
		for j := range paths {
			p := &paths[j]
			if p.IsDerivation() || p.IsSource() {
				continue
			}
			s := byName[p.Package.Name]
			if s == nil {
				s = &[2][]*Path{}
				byName[p.Package.Name] = s
			}
			s[i] = append(s[i], p)
		}
	}
	add(oldPaths, 0)
	add(newPaths, 1)
	for name, s := range byName {
		if c, changed := comparePackage(name, s[0], s[1]); changed {
			d.Packages = append(d.Packages, c)
		}
	}
	slices.SortFunc(d.Packages, func(a, b PackageChange) int { return strings.Compare(a.Name, b.Name) })

	for i := range newPaths {
		if p := &newPaths[i]; p.IsSource() && !oldSet[p.Path] {
			d.SourcesAdded = append(d.SourcesAdded, newSource(p))
		}
	}
	for i := range oldPaths {
		if p := &oldPaths[i]; p.IsSource() && !newSet[p.Path] {
			d.SourcesRemoved = append(d.SourcesRemoved, newSource(p))
		}
	}
	bySourceName := func(a, b Source) int { return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.Path, b.Path)) }
	slices.SortFunc(d.SourcesAdded, bySourceName)
	slices.SortFunc(d.SourcesRemoved, bySourceName)
	return d
}

// comparePackage says how the paths of one package name differ, and
// whether they do.
func comparePackage(name string, old, new []*Path) (PackageChange, bool) {
	c := PackageChange{Name: name, Old: []string{}, New: []string{}, Versions: []string{}, Builds: []VersionChange{}, OldPaths: []string{}, NewPaths: []string{}}
	oldV, newV := byVersion(old), byVersion(new)
	for v := range oldV {
		if newV[v] == nil {
			c.Old = append(c.Old, v)
		} else {
			c.Versions = append(c.Versions, v)
		}
	}
	for v := range newV {
		if oldV[v] == nil {
			c.New = append(c.New, v)
		}
	}
	for _, l := range [][]string{c.Old, c.New, c.Versions} {
		slices.Sort(l)
	}
	inOld, inNew := pointerSet(old), pointerSet(new)
	for _, p := range old {
		if !inNew[p.Path] {
			c.OldPaths = append(c.OldPaths, p.Path.String())
			c.SizeDelta -= int64(p.NarSize)
			c.SizeUnknown = c.SizeUnknown || p.sizeUnknown
		}
	}
	for _, p := range new {
		if !inOld[p.Path] {
			c.NewPaths = append(c.NewPaths, p.Path.String())
			c.SizeDelta += int64(p.NarSize)
			c.SizeUnknown = c.SizeUnknown || p.sizeUnknown
		}
	}
	if c.SizeUnknown {
		c.SizeDelta = 0
	}
	slices.Sort(c.OldPaths)
	slices.Sort(c.NewPaths)
	var builds, outputs bool // of a version both have, builds or outputs came or went
	for _, v := range c.Versions {
		if vc, changed := compareVersion(v, oldV[v], newV[v]); changed {
			c.Builds = append(c.Builds, vc)
			builds = builds || vc.OldBuilds != vc.NewBuilds
			outputs = outputs || len(vc.OutputsAdded)+len(vc.OutputsRemoved) > 0
		}
	}
	switch {
	case len(old) == 0:
		c.Change = Added
	case len(new) == 0:
		c.Change = Removed
	case len(c.Old) > 0 || len(c.New) > 0:
		c.Change = Updated
	case builds:
		c.Change = Builds
	case outputs:
		c.Change = Outputs
	case len(c.Builds) > 0:
		c.Change = Rebuilt
	default:
		return c, false
	}
	return c, true
}

// compareVersion says how the paths one version has on each side differ,
// output by output, and whether they do.
func compareVersion(v string, old, new []*Path) (VersionChange, bool) {
	type count struct{ old, new, shared int }
	outs := map[string]*count{}
	of := func(o string) *count {
		if outs[o] == nil {
			outs[o] = &count{}
		}
		return outs[o]
	}
	inOld := pointerSet(old)
	for _, p := range old {
		of(p.Output).old++
	}
	for _, p := range new {
		n := of(p.Output)
		n.new++
		if inOld[p.Path] {
			n.shared++
		}
	}
	vc := VersionChange{Version: v, OutputsAdded: []string{}, OutputsRemoved: []string{}}
	changed := false
	for o, n := range outs {
		vc.OldBuilds, vc.NewBuilds = max(vc.OldBuilds, n.old), max(vc.NewBuilds, n.new)
		switch {
		case n.old == 0:
			vc.OutputsAdded = append(vc.OutputsAdded, o)
		case n.new == 0:
			vc.OutputsRemoved = append(vc.OutputsRemoved, o)
		default:
			vc.Rebuilt = max(vc.Rebuilt, min(n.old-n.shared, n.new-n.shared))
		}
		changed = changed || n.old != n.shared || n.new != n.shared
	}
	slices.Sort(vc.OutputsAdded)
	slices.Sort(vc.OutputsRemoved)
	return vc, changed
}

func byVersion(paths []*Path) map[string][]*Path {
	m := map[string][]*Path{}
	for _, p := range paths {
		m[p.Package.Version] = append(m[p.Package.Version], p)
	}
	return m
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

// readOldDelta returns the paths old stands for, and notes how it read
// them: when old is a delta whose manifest says what its bases provide,
// its own and those; else its own.
func (d *Diff) readOldDelta(old *Inventory) []Path {
	bases := old.bases()
	if len(bases) == 0 {
		return old.paths
	}
	if _, said := old.provides(); !said {
		if !old.merged {
			d.Notes = append(d.Notes, "OLD is a delta of bundles ("+strings.Join(bases, ", ")+") whose manifest does not say what they provide: compared as it is, so what it leaves to its bases shows as added")
		}
		return old.paths
	}
	have := pathSet(old.paths)
	out := slices.Clone(old.paths)
	for _, b := range old.Bundles {
		for _, base := range b.manifest.Bases {
			for _, p := range base.Provides {
				if !have[p] {
					have[p] = true
					// Only the store path is known: name and version by
					// its name, no output, no size.
					np := newPath(bundle.PathEntry{Path: p}, base.ID.String())
					np.sizeUnknown = true
					out = append(out, np)
				}
			}
		}
	}
	if n := len(out) - len(old.paths); n > 0 {
		d.Notes = append(d.Notes, fmt.Sprintf("OLD is a delta of bundles (%s): it is read as its own paths and the %s its bases provide for it, whose sizes its manifest does not say (size changes of their packages are unknown, and totals leave them out)", strings.Join(bases, ", "), progress.Plural(n, "path")))
	}
	slices.SortFunc(out, func(a, b Path) int { return storepath.Compare(a.Path, b.Path) })
	return out
}

// knowFrom fills in the paths of old known by name alone (those a delta's
// bases provide) from new: a path new holds too is the same output and
// NAR; one new holds a path of the same name of (a rebuild) is the same
// package and output, as its deriver names them.
func knowFrom(old, new []Path) {
	var byPath map[storepath.Path]*Path
	var byName map[string]*Path
	for i := range old {
		if !old[i].sizeUnknown {
			continue
		}
		if byPath == nil {
			byPath, byName = make(map[storepath.Path]*Path, len(new)), map[string]*Path{}
			for j := range new {
				byPath[new[j].Path] = &new[j]
				if new[j].Output != "" {
					byName[new[j].Path.Name] = &new[j]
				}
			}
		}
		if p := byPath[old[i].Path]; p != nil {
			old[i] = *p
		} else if p := byName[old[i].Path.Name]; p != nil {
			old[i].Package, old[i].Output = p.Package, p.Output
		}
	}
}

// readDelta returns the paths new stands for against old, whose paths
// are oldPaths, and notes how it read them: new's own when new is no
// delta or one of bundles old does not hold.
func (d *Diff) readDelta(old *Inventory, oldPaths []Path, new *Inventory) []Path {
	bases := new.bases()
	if len(bases) == 0 {
		return new.paths
	}
	missing := old.lacks(bases)
	provides, said := new.provides()
	var held []Path // of provides, those old holds
	for _, p := range oldPaths {
		if provides[p.Path] {
			held = append(held, p)
		}
	}
	switch {
	case said && (len(missing) == 0 || len(provides) > 0 && len(held) == len(provides)):
		d.newIsDelta = true
		note := fmt.Sprintf("NEW is a delta of OLD: it is read as its own paths and the %s of OLD its bases provide for it; what else OLD holds is what NEW no longer needs, which importing NEW does not remove", progress.Plural(len(provides), "path"))
		if len(provides) == 0 {
			note = "NEW is a delta of OLD that needs none of its paths: it is read as its own paths, and what OLD holds is what NEW no longer needs, which importing NEW does not remove"
		}
		if n := len(provides) - len(held); n > 0 {
			note += fmt.Sprintf(" (OLD lacks %s of those", progress.Plural(n, "path"))
			if ob := old.bases(); len(ob) > 0 {
				// pack --since a delta: its bases' paths are held too.
				note += ": OLD is itself a delta, and its bases (" + strings.Join(ob, ", ") + ") hold what it leaves to them"
			}
			note += ")"
		}
		d.Notes = append(d.Notes, note)
		out := slices.Concat(new.paths, held)
		slices.SortFunc(out, func(a, b Path) int { return storepath.Compare(a.Path, b.Path) })
		return slices.CompactFunc(out, func(a, b Path) bool { return a.Path == b.Path })
	case !said && len(missing) == 0:
		d.Notes = append(d.Notes, "NEW is a delta of OLD whose manifest does not say what its bases provide: it is read as OLD with NEW's packages replacing theirs, so no package shows as removed (the paths it replaces do)")
		return complete(oldPaths, new.paths)
	}
	d.Notes = append(d.Notes, "NEW is a delta of bundles OLD does not hold ("+strings.Join(missing, ", ")+"): compared as it is, so what it leaves to its bases shows as removed")
	return new.paths
}

// provides returns the paths inv's bundles' bases provide, and whether
// every base says (a manifest that predates provides does not).
func (inv *Inventory) provides() (map[storepath.Path]bool, bool) {
	out := map[storepath.Path]bool{}
	for _, b := range inv.Bundles {
		if b.manifest == nil {
			return nil, false
		}
		for _, base := range b.manifest.Bases {
			if base.Provides == nil {
				return nil, false
			}
			for _, p := range base.Provides {
				out[p] = true
			}
		}
	}
	return out, true
}

// signatures returns inv's bundles' signatures, or nil when they were
// not checked.
func (inv *Inventory) signatures() []BundleSignature {
	var out []BundleSignature
	for _, b := range inv.Bundles {
		if b.Signature.Checked {
			out = append(out, BundleSignature{ID: b.ID, Signature: b.Signature})
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

func pointerSet(paths []*Path) map[storepath.Path]bool {
	m := make(map[storepath.Path]bool, len(paths))
	for _, p := range paths {
		m[p.Path] = true
	}
	return m
}

// totals counts the paths of ps not in except. A NAR file several paths
// share (their NARs are the same bytes) counts once.
func totals(ps []Path, except map[storepath.Path]bool) Totals {
	t := Totals{Roles: map[string]int{}, Origins: map[string]int{}}
	files := map[string]bool{}
	for _, p := range ps {
		if except[p.Path] {
			continue
		}
		t.Paths++
		if p.IsDerivation() {
			t.Derivations++
		}
		t.NarSize += p.NarSize
		if p.URL == "" || !files[p.URL] { // an inventory file's paths have no URL
			files[p.URL] = true
			t.FileSize += p.FileSize
		}
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
	inv := &Inventory{Source: source, Kind: KindCache, merged: true}
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
	inv.addPaths(ms, ids, nil, nil)
	return inv
}
