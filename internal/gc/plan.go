package gc

import (
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/flakeregistry"
	"github.com/nix-airgap/nix-airgap/internal/progress"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/storage"
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
		if b.Provides == nil && m.Mode != role.ModeRuntime {
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

// unreadableError says why gc cannot keep the paths whose narinfos, of
// hashes, it could not read. Damage, which import --repair mends, is
// ErrDamaged; a narinfo gc was not given (a permission, a store's
// refusal) is not damage, and a repair could not mend it. Each error
// names its narinfo.
func (g graph) unreadableError(hashes []string) error {
	var damaged, failed []error
	for _, h := range hashes {
		if err := g[h].err; errors.Is(err, cache.ErrCorrupt) {
			damaged = append(damaged, err)
		} else {
			failed = append(failed, err)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("read the narinfos the kept paths need: %w", errorList(failed))
	}
	return fmt.Errorf("%w the kept paths need: %w; mend them with import --repair first", ErrDamaged, errorList(damaged))
}

// errorList is errors in one line, "; " between them.
type errorList []error

func (l errorList) Error() string {
	msgs := make([]string, len(l))
	for i, err := range l {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (l errorList) Unwrap() []error { return l }

// Roots says what gc keeps: the closures of the last KeepBundles bundles
// imported, each in its mode, or of the store paths Paths lists.
type Roots struct {
	KeepBundles int
	Paths       []storepath.Path
}

func (r Roots) String() string {
	if r.Paths != nil {
		return "the closures of " + progress.Plural(len(r.Paths), "root path")
	}
	if r.KeepBundles == 1 {
		return "the closure of the last imported bundle"
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

// plan reads the cache and decides what goes.
func (g *collector) plan() error {
	// The records and the narinfos are read at once: parsing the
	// records' manifests is CPU, reading narinfos mostly system calls.
	var eg errgroup.Group
	eg.Go(g.readRecords)
	eg.Go(g.readGraph)
	eg.Go(g.readSets)
	if err := eg.Wait(); err != nil {
		return err
	}
	seeds, kept, conservative := g.opts.Roots.seeds(g.records)
	setSeeds, setRecs, setConservative := g.halfImported()
	seeds = append(seeds, setSeeds...)
	conservative = append(conservative, setConservative...)
	for _, r := range conservative {
		g.rep.Warnings = append(g.rep.Warnings, fmt.Sprintf("bundle %s is a delta whose manifest does not say which of its bases' paths it needs (it was packed before manifests said so): everything imported before it is kept", bundle.ID(r.data)))
	}
	for _, r := range kept {
		g.rep.KeptBundles = append(g.rep.KeptBundles, bundleRef(r))
	}
	if g.opts.Roots.Paths == nil && len(g.records) == 0 && len(setSeeds) == 0 && len(g.graph) > 0 {
		// A binary cache nix-airgap did not make (nix copy --to file://…),
		// or one whose records are gone: nothing says what to keep.
		return fmt.Errorf("%w: no bundle was imported into it (%s has no records), so --keep-bundles would remove everything (%s); give --roots FILE to say what to keep", ErrNoRoots,
			bundle.RecordDir, progress.Plural(len(g.graph), "store path"))
	}
	if g.opts.Roots.Paths != nil {
		for _, p := range seeds {
			if n, ok := g.graph[p.Hash]; !ok || n.err == nil && n.path != p {
				g.rep.MissingRoots = append(g.rep.MissingRoots, p.String())
			}
		}
		if len(g.rep.MissingRoots) == len(g.opts.Roots.Paths) && len(setSeeds) == 0 && len(g.graph) > 0 {
			return fmt.Errorf("%w: none of the %s given is there: gc would remove everything (%s)", ErrNoRoots,
				progress.Plural(len(g.opts.Roots.Paths), "root path"), progress.Plural(len(g.graph), "store path"))
		}
	}
	var unreadable []string
	g.keep, unreadable = g.graph.closure(seeds)
	if len(unreadable) > 0 {
		return g.graph.unreadableError(unreadable)
	}
	if g.keepAll {
		for h := range g.graph {
			g.keep[h] = true
		}
	}
	remove := map[string]bool{}
	keptURLs := map[string]bool{}
	keptLogs := map[string]bool{}
	for h, n := range g.graph {
		if !g.keep[h] {
			remove[h] = true
			g.rep.Removed.Paths++
			g.rep.Removed.Bytes += n.size
			if n.err == nil {
				g.rep.RemovedPaths = append(g.rep.RemovedPaths, n.path.String())
			}
			continue
		}
		g.rep.Kept.Paths++
		g.rep.Kept.Bytes += n.size
		keptURLs[n.url] = true
		keptLogs[n.deriver] = true
		if n.path.IsDerivation() {
			keptLogs[n.path.Base()] = true
		}
	}
	maps.Copy(keptURLs, g.setURLs)
	slices.Sort(g.rep.RemovedPaths)
	g.narinfos = g.graph.removalLevels(remove)
	if err := g.planFiles(cache.NarDir, func(name string) bool { return g.keepAll || keptURLs[name] }, &g.rep.Removed.NarFiles); err != nil {
		return err
	}
	if err := g.planFiles(cache.LogDir, func(name string) bool { return g.keepAll || keptLogs[path.Base(name)] }, &g.rep.Removed.Logs); err != nil {
		return err
	}
	removed := g.planRecords()
	if err := g.planChannels(removed, append(kept, setRecs...)); err != nil {
		return err
	}
	return g.planRegistry()
}

// halfImported lists what the half-imported volume sets need, as the
// temp roots of a running build: what each set published already and
// the bases its kept delta files are rebuilt from, besides what needs
// says. A set whose manifest cannot be read keeps everything.
func (g *collector) halfImported() (seeds []storepath.Path, recs, conservative []*record) {
	for _, s := range g.sets {
		ref := HalfImportedRef{ID: s.ID, Volumes: s.Count, Imported: s.Imported}
		if s.ImportedErr != nil {
			ref.Unknown = s.ImportedErr.Error()
		}
		g.rep.HalfImported = append(g.rep.HalfImported, ref)
		if s.Err != nil {
			g.keepAll = true
			g.rep.Warnings = append(g.rep.Warnings, fmt.Sprintf("half-imported volume set %s: %v: everything is kept", s.ID, s.Err))
			continue
		}
		r := &record{name: s.ID, m: s.Manifest}
		for _, e := range s.Manifest.Paths {
			// A killed import may have left a NAR file of the set
			// without its narinfo; the set's next import takes it up.
			g.setURLs[e.URL] = true
		}
		ps, ok := needs(r, g.records)
		seeds = append(seeds, ps...)
		for _, e := range s.Manifest.Paths {
			if e.Delta != nil {
				seeds = append(seeds, e.Delta.Base)
			}
		}
		recs = append(recs, r)
		if !ok {
			conservative = append(conservative, r)
		}
	}
	return seeds, recs, conservative
}

func bundleRef(r *record) BundleRef {
	ref := BundleRef{ID: bundle.ID(r.data).String(), Created: r.m.Created, Imported: r.imported, Mode: r.m.Mode.String(), Paths: len(r.m.Paths), Targets: []string{}}
	for _, t := range r.m.Targets {
		ref.Targets = append(ref.Targets, t.Spec)
	}
	return ref
}

// planFiles lists the files under dir that keep does not want.
func (g *collector) planFiles(dir string, keep func(name string) bool, n *int) error {
	for info, err := range g.b.List(g.ctx, dir) {
		if err != nil {
			return err
		}
		if info.Dir || keep(info.Name) {
			g.rep.Kept.Bytes += info.Size
			continue
		}
		g.files = append(g.files, info)
		*n++
		g.rep.Removed.Bytes += info.Size
	}
	return nil
}

// planRecords removes the records of bundles none of whose paths is
// left, and signatures whose record is gone; the records of bundles
// with paths left stay, for the hashed mirror and for history. It returns
// the ids of the bundles whose records go.
func (g *collector) planRecords() map[string]bool {
	removed := map[string]bool{}
	have := map[string]bool{}
	for _, r := range g.records {
		have[r.name] = true
		left := false
		for _, e := range r.m.Paths {
			if g.keep[e.Path.Hash] {
				left = true
				break
			}
		}
		if !left && !slices.ContainsFunc(g.rep.KeptBundles, func(k BundleRef) bool { return k.ID == bundle.ID(r.data).String() }) {
			g.recordFiles = append(g.recordFiles, path.Join(bundle.RecordDir, r.name))
			g.sigFiles = append(g.sigFiles, path.Join(bundle.RecordDir, r.name+".sig"))
			g.rep.Removed.Records++
			g.rep.Removed.Bytes += int64(len(r.data))
			removed[bundle.ID(r.data).String()] = true
		}
	}
	for _, s := range g.sigs {
		if !have[strings.TrimSuffix(s, ".sig")] {
			g.sigFiles = append(g.sigFiles, path.Join(bundle.RecordDir, s))
		}
	}
	return removed
}

// planChannels removes the channels that no bundle left installed and
// no kept bundle needs, and tarballs no record names: a channel lives as
// long as the record of the bundle that brought it, or a kept bundle
// carries it or leaves it out as unchanged since a base (a delta's
// bases[].channels), whichever bundle installed it.
func (g *collector) planChannels(removed map[string]bool, kept []*record) error {
	chans, err := bundle.CacheChannels(g.ctx, g.b)
	if err != nil {
		return err
	}
	left := map[string]bool{}
	for _, r := range g.records {
		if id := bundle.ID(r.data).String(); !removed[id] {
			left[id] = true
		}
	}
	needed := map[string]bool{}
	for _, r := range kept {
		for _, c := range r.m.Channels {
			needed[c.Name] = true
		}
		for _, b := range r.m.Bases {
			for _, name := range b.Channels {
				needed[name] = true
			}
		}
	}
	for _, c := range chans {
		if c.Bundle != "" && (left[c.Bundle] || needed[c.Name]) {
			continue
		}
		if c.Record != "" {
			g.channelRecords = append(g.channelRecords, c.Record)
		}
		if c.File != "" {
			g.channelFiles = append(g.channelFiles, c.File)
			g.rep.Removed.Bytes += c.Size
			// Clients that follow it see a 404 from now on: said,
			// not only counted in the summary.
			verb, will := "removed", "will"
			if g.rep.DryRun {
				verb, will = "would remove", "would"
			}
			g.rep.Warnings = append(g.rep.Warnings, fmt.Sprintf("%s channel %s, which no kept bundle carries: clients' nix-channel --update %s fail until a bundle carrying it is imported", verb, c.Name, will))
		}
		g.rep.Removed.Channels = append(g.rep.Removed.Channels, c.Name)
	}
	return nil
}

// planRegistry drops the flake registry's entries for removed paths. A
// registry it cannot read it leaves as it is, with a warning.
func (g *collector) planRegistry() error {
	reg, err := flakeregistry.Read(g.ctx, g.b, bundle.RegistryName)
	switch {
	case storage.IsNotExist(err):
		return nil
	case errors.Is(err, flakeregistry.ErrInvalid):
		g.rep.Warnings = append(g.rep.Warnings, fmt.Sprintf("%v: left as it is", err))
		return nil
	case err != nil:
		return err
	}
	if dropped := reg.Prune(g.c.StoreDir(), func(h string) bool { return !g.keep[h] }); dropped > 0 {
		if g.registry, err = reg.Marshal(); err != nil {
			return err
		}
		g.rep.Removed.RegistryEntries = dropped
	}
	return nil
}
