// Package gc collects the garbage of a long-lived cache: it keeps the
// closures of the last bundles imported, each in its bundle's mode, or of
// given root paths, and removes everything else, as attic and Cachix do
// for theirs.
//
// Removal keeps the cache consistent at every moment, so that a kill
// anywhere leaves a cache that serves and verifies, and a second run
// finishes the job:
//
//  1. narinfos, each before the narinfos it refers to, so that no
//     reference ever dangles, synced as they go, so that none comes
//     back once its NAR is gone;
//  2. the NAR files no narinfo left names (several narinfos may share
//     one), each cache.RemovalGrace after the narinfos that named it are
//     durably gone, so that a running serve has stopped answering them
//     and a client that got one has fetched its NAR, and build logs no
//     path left needs; this overlaps step 1, which syncs as it goes;
//  3. the entries of the flake registry that lock a removed path; the
//     channels that no bundle left installed and no kept bundle needs
//     (each record before its tarball, so that an inventory never lists
//     a channel the cache lacks), and tarballs no record names; and the
//     records of bundles none of whose paths is left.
//
// It runs under the cache's exclusive lock, so no import runs meanwhile,
// and works through the cache's storage.Backend, a directory or an object
// store alike, in that order.
package gc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Options configure Collect. Roots is required.
type Options struct {
	Roots Roots
	// DryRun reports what would go and changes nothing.
	DryRun bool
	// Grace is how long NAR files outlive the narinfos that named them;
	// 0 means cache.RemovalGrace, a negative value none (nothing serves
	// the cache).
	Grace time.Duration
	// Jobs is how many files are read or removed at once; 0 means 8 per
	// CPU, as most of the time is spent waiting for the file system.
	Jobs int
	// Log receives progress at debug level; nil discards it.
	Log *slog.Logger
	// Progress, when set, hears how far gc has got.
	Progress Progress
}

// Progress hears how far gc has got, as bundle.Progress does.
type Progress interface {
	Phase(name string, paths int, bytes int64)
	Step(path, source string, bytes int64)
}

// The phases Progress hears.
const (
	PhaseRead   = "read"
	PhaseRemove = "remove"
)

type nopProgress struct{}

func (nopProgress) Phase(string, int, int64)   {}
func (nopProgress) Step(string, string, int64) {}

// Report is what gc removed or, for a dry run, would remove.
type Report struct {
	Cache  string `json:"cache"`
	DryRun bool   `json:"dryRun"`
	// Roots says what was kept, in words.
	Roots       string      `json:"roots"`
	KeptBundles []BundleRef `json:"keptBundles"`
	Kept        Count       `json:"kept"`
	Removed     Removed     `json:"removed"`
	// RemovedPaths are the store paths whose narinfos went, sorted.
	RemovedPaths []string `json:"removedPaths"`
	// MissingRoots are root paths the cache has no narinfo for.
	MissingRoots []string      `json:"missingRoots,omitempty"`
	Warnings     []string      `json:"warnings"`
	Elapsed      time.Duration `json:"elapsedNs"`
}

// Count is a number of store paths and the bytes of their files.
type Count struct {
	Paths int   `json:"paths"`
	Bytes int64 `json:"bytes"`
}

// Removed counts what went: Paths narinfos, and Bytes of every file
// removed (narinfos, NAR files, logs and records).
type Removed struct {
	Count
	NarFiles        int `json:"narFiles"`
	Logs            int `json:"logs"`
	Records         int `json:"records"`
	RegistryEntries int `json:"registryEntries"`
	// Channels are the channels removed with the bundles that installed
	// them, by name.
	Channels []string `json:"channels,omitempty"`
}

// BundleRef names a kept bundle.
type BundleRef struct {
	ID       string    `json:"id"`
	Created  time.Time `json:"created"`
	Imported time.Time `json:"imported"`
	Mode     string    `json:"mode"`
	Targets  []string  `json:"targets"`
	Paths    int       `json:"paths"`
}

// ErrDamaged reports narinfos gc cannot read whose paths it must keep:
// their references are unknown, so collecting could remove what they
// need. import --repair mends them.
var ErrDamaged = errors.New("damaged narinfos")

// Collect collects the garbage of the cache at location, a directory or
// an object store URL, as the package doc says.
func Collect(ctx context.Context, location string, opts Options) (*Report, error) {
	start := time.Now()
	if opts.Roots.Paths == nil && opts.Roots.KeepBundles < 1 {
		return nil, fmt.Errorf("gc %s: keep at least one bundle, or give root paths", location)
	}
	if opts.Jobs <= 0 {
		opts.Jobs = 8 * runtime.GOMAXPROCS(0)
	}
	if opts.Grace == 0 {
		opts.Grace = cache.RemovalGrace
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Progress == nil {
		opts.Progress = nopProgress{}
	}
	b, err := storage.Open(ctx, location)
	if err != nil {
		return nil, fmt.Errorf("gc %s: %w", location, err)
	}
	defer b.Close()
	unlock, err := storage.Lock(ctx, b, storage.LockOptions{
		Exclusive: !opts.DryRun,
		Holder:    fmt.Sprintf("pid %d (nix-airgap gc)", os.Getpid()),
		Waiting: func(holder string) {
			if holder == "" {
				holder = "another process"
			}
			opts.Log.Warn(fmt.Sprintf("%s is locked by %s; waiting for it to finish", b, holder))
		},
	})
	if err != nil {
		return nil, fmt.Errorf("gc %s: %w", b, err)
	}
	defer unlock()
	c, err := cache.OpenBackend(ctx, b)
	if err != nil {
		return nil, fmt.Errorf("gc %s: %w", b, err)
	}
	defer c.Close()

	g := &collector{ctx: ctx, b: b, c: c, opts: opts, rep: &Report{Cache: b.String(), DryRun: opts.DryRun, Roots: opts.Roots.String()}}
	if err := g.plan(); err != nil {
		return nil, fmt.Errorf("gc %s: %w", b, err)
	}
	if !opts.DryRun {
		if err := g.remove(); err != nil {
			return nil, fmt.Errorf("gc %s: %w", b, err)
		}
	}
	g.rep.Elapsed = time.Since(start)
	return g.rep, nil
}

// collector is one run of gc.
type collector struct {
	ctx  context.Context
	b    storage.Backend
	c    *cache.Cache
	opts Options
	rep  *Report

	graph   graph
	records []*record
	sigs    []string // record signatures, by name
	keep    map[string]bool

	// What goes, in order.
	narinfos     [][]string     // hash parts, level by level: referrers first
	files        []storage.Info // NAR files and logs
	recordFiles  []string
	channelFiles []string // records before tarballs
	registry     []byte   // the new flake-registry.json, or nil
}

// plan reads the cache and decides what goes.
func (g *collector) plan() error {
	// The records and the narinfos are read at once: parsing the
	// records' manifests is CPU, reading narinfos mostly system calls.
	var eg errgroup.Group
	eg.Go(g.readRecords)
	eg.Go(g.readGraph)
	if err := eg.Wait(); err != nil {
		return err
	}
	seeds, kept, conservative := g.opts.Roots.seeds(g.records)
	for _, r := range conservative {
		g.rep.Warnings = append(g.rep.Warnings, fmt.Sprintf("bundle %s is a delta whose manifest does not say which of its bases' paths it needs: everything imported before it is kept", r.name))
	}
	for _, r := range kept {
		g.rep.KeptBundles = append(g.rep.KeptBundles, bundleRef(r))
	}
	if g.opts.Roots.Paths != nil {
		for _, p := range seeds {
			if n, ok := g.graph[p.Hash]; !ok || n.err == nil && n.path != p {
				g.rep.MissingRoots = append(g.rep.MissingRoots, p.String())
			}
		}
	}
	var unreadable []string
	g.keep, unreadable = g.graph.closure(seeds)
	if len(unreadable) > 0 {
		var names []string
		for _, h := range unreadable {
			names = append(names, cache.NarInfoFile(h)+" ("+g.graph[h].err.Error()+")")
		}
		return fmt.Errorf("%w: the kept paths need %s; mend them with import --repair first", ErrDamaged, strings.Join(names, ", "))
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
	slices.Sort(g.rep.RemovedPaths)
	g.narinfos = g.graph.removalLevels(remove)
	if err := g.planFiles(cache.NarDir, func(name string) bool { return keptURLs[name] }, &g.rep.Removed.NarFiles); err != nil {
		return err
	}
	if err := g.planFiles(cache.LogDir, func(name string) bool { return keptLogs[path.Base(name)] }, &g.rep.Removed.Logs); err != nil {
		return err
	}
	removed := g.planRecords()
	if err := g.planChannels(removed, kept); err != nil {
		return err
	}
	return g.planRegistry()
}

func bundleRef(r *record) BundleRef {
	ref := BundleRef{ID: bundle.ID(r.data).String(), Created: r.m.Created, Imported: r.imported, Mode: r.m.Mode.String(), Paths: len(r.m.Paths)}
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
			g.recordFiles = append(g.recordFiles, path.Join(bundle.RecordDir, r.name), path.Join(bundle.RecordDir, r.name+".sig"))
			g.rep.Removed.Records++
			g.rep.Removed.Bytes += int64(len(r.data))
			removed[bundle.ID(r.data).String()] = true
		}
	}
	for _, s := range g.sigs {
		if !have[strings.TrimSuffix(s, ".sig")] {
			g.recordFiles = append(g.recordFiles, path.Join(bundle.RecordDir, s))
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
			g.channelFiles = append(g.channelFiles, c.Record)
		}
		if c.File != "" {
			g.channelFiles = append(g.channelFiles, c.File)
			g.rep.Removed.Bytes += c.Size
		}
		g.rep.Removed.Channels = append(g.rep.Removed.Channels, c.Name)
	}
	return nil
}

// planRegistry drops the flake registry's entries for removed paths.
func (g *collector) planRegistry() error {
	data, _, err := storage.ReadFile(g.ctx, g.b, bundle.RegistryName, 16<<20)
	if storage.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	out, dropped, err := pruneRegistry(data, g.c.StoreDir(), func(h string) bool { return !g.keep[h] })
	if err != nil {
		g.rep.Warnings = append(g.rep.Warnings, fmt.Sprintf("%s: %v: left as it is", bundle.RegistryName, err))
		return nil
	}
	if dropped > 0 {
		g.registry = out
		g.rep.Removed.RegistryEntries = dropped
	}
	return nil
}

// readRecords reads every bundle record. One that cannot be read stops
// gc: what it needs is unknown.
func (g *collector) readRecords() error {
	var names []string
	for info, err := range g.b.List(g.ctx, bundle.RecordDir) {
		if err != nil {
			return err
		}
		base := path.Base(info.Name)
		switch {
		case info.Dir:
		case strings.HasSuffix(base, ".json"):
			names = append(names, base)
			g.records = append(g.records, &record{name: base, imported: info.ModTime})
		case strings.HasSuffix(base, ".json.sig"):
			g.sigs = append(g.sigs, base)
		}
	}
	return g.each(len(g.records), func(ctx context.Context, i int) error {
		r := g.records[i]
		data, _, err := storage.ReadFile(ctx, g.b, path.Join(bundle.RecordDir, r.name), bundle.MaxManifestSize)
		if err != nil {
			return err
		}
		m, err := bundle.ParseManifest(data)
		if err != nil {
			return fmt.Errorf("record %s: %w: mend or remove it first", r.name, err)
		}
		r.data, r.m = data, m
		return nil
	})
}

// readGraph reads every narinfo, many at once. One that cannot be read
// or parsed is a node with its error: garbage unless a kept path needs
// it.
func (g *collector) readGraph() error {
	var names []storage.Info
	for info, err := range g.b.List(g.ctx, "") {
		if err != nil {
			return err
		}
		if h, ok := cache.NarInfoHashPart(info.Name); ok && !info.Dir && storepath.IsHashPart(h) {
			names = append(names, info)
		}
	}
	g.opts.Progress.Phase(PhaseRead, len(names), 0)
	g.graph = make(graph, len(names))
	nodes := make([]*node, len(names))
	err := g.each(len(names), func(ctx context.Context, i int) error {
		h, _ := cache.NarInfoHashPart(names[i].Name)
		n := &node{size: names[i].Size}
		ni, err := g.c.NarInfo(ctx, h)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, cache.ErrNotFound):
			return nil // removed since the listing
		case err != nil:
			n.err = err
		default:
			fill(n, ni)
		}
		nodes[i] = n
		g.opts.Progress.Step("", "", 0)
		return nil
	})
	if err != nil {
		return err
	}
	for i, n := range nodes {
		if n != nil {
			h, _ := cache.NarInfoHashPart(names[i].Name)
			g.graph[h] = n
		}
	}
	return nil
}

func fill(n *node, ni *narinfo.NarInfo) {
	n.path, n.url = ni.StorePath, ni.URL
	if ni.Deriver != (storepath.Path{}) {
		n.deriver = ni.Deriver.Base()
	}
	for _, r := range ni.References {
		if r.Hash != ni.StorePath.Hash {
			n.refs = append(n.refs, r.Hash)
		}
	}
}

// remove carries the plan out, in the order the package doc gives.
func (g *collector) remove() error {
	g.opts.Progress.Phase(PhaseRemove, g.rep.Removed.Paths, g.rep.Removed.Bytes)
	if err := g.removeNarInfosAndFiles(); err != nil {
		return err
	}
	if err := storage.Sync(g.ctx, g.b); err != nil {
		return err
	}
	if g.registry != nil {
		if err := g.c.WriteFile(g.ctx, bundle.RegistryName, g.registry); err != nil {
			return err
		}
	}
	for _, name := range g.channelFiles {
		if err := g.b.Remove(g.ctx, name); err != nil {
			return err
		}
	}
	// A record before its signature, as import writes them the other way.
	for _, name := range g.recordFiles {
		if err := g.b.Remove(g.ctx, name); err != nil {
			return err
		}
	}
	return storage.Sync(g.ctx, g.b)
}

// syncEvery is how often, at most, the removal of narinfos is synced
// while it goes on: each sync lets the NAR files of the narinfos removed
// before it go a grace period later.
const syncEvery = 250 * time.Millisecond

// removeNarInfosAndFiles removes the narinfos level by level and, at the
// same time, the NAR files and logs: each file once the narinfos that
// name it have been gone, durably, for the grace period. The grace then
// overlaps the removal of later narinfos instead of following all of
// it, and the two directories' removals run side by side.
func (g *collector) removeNarInfosAndFiles() error {
	prog := g.opts.Progress
	// File i may go once level after[i] is synced: the last level whose
	// narinfos name it, or, for logs and files no narinfo removed names,
	// the last level.
	last := map[string]int{}
	for k, level := range g.narinfos {
		for _, h := range level {
			last[g.graph[h].url] = k
		}
	}
	levels := max(len(g.narinfos), 1)
	after := make([]int, len(g.files))
	for i, f := range g.files {
		k, ok := last[f.Name]
		if !ok {
			k = levels - 1
		}
		after[i] = k
	}
	order := make([]int, len(g.files))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return after[a] - after[b] })
	// synced[k] is closed once level k's removal is durable, at
	// syncedAt[k].
	synced := make([]chan struct{}, levels)
	syncedAt := make([]time.Time, levels)
	for k := range synced {
		synced[k] = make(chan struct{})
	}
	eg, ctx := errgroup.WithContext(g.ctx)
	eg.Go(func() error {
		done, lastSync := 0, time.Now()
		for k := range levels {
			if k < len(g.narinfos) {
				level := g.narinfos[k]
				// Progress in bytes only: a line per path of
				// 100,000 would drown what matters.
				err := g.eachCtx(ctx, len(level), func(ctx context.Context, i int) error {
					if err := g.b.Remove(ctx, cache.NarInfoFile(level[i])); err != nil {
						return err
					}
					prog.Step("", "", g.graph[level[i]].size)
					return nil
				})
				if err != nil {
					return err
				}
			}
			if k < levels-1 && time.Since(lastSync) < syncEvery {
				continue
			}
			if err := storage.Sync(ctx, g.b); err != nil {
				return err
			}
			lastSync = time.Now()
			for ; done <= k; done++ {
				syncedAt[done] = lastSync
				close(synced[done])
			}
		}
		return nil
	})
	eg.Go(func() error {
		return g.eachCtx(ctx, len(order), func(ctx context.Context, i int) error {
			f, k := g.files[order[i]], after[order[i]]
			select {
			case <-synced[k]:
			case <-ctx.Done():
				return ctx.Err()
			}
			if wait := time.Until(syncedAt[k].Add(g.opts.Grace)); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return ctx.Err()
				}
			}
			if err := g.b.Remove(ctx, f.Name); err != nil {
				return err
			}
			prog.Step("", "", f.Size)
			return nil
		})
	})
	return eg.Wait()
}

// each runs f for 0..n-1 on Jobs workers, which take the next index
// as they finish one: a goroutine each for 100,000 narinfos would cost
// more than reading them. The first error stops them and is returned.
func (g *collector) each(n int, f func(ctx context.Context, i int) error) error {
	return g.eachCtx(g.ctx, n, f)
}

// eachCtx is each under ctx.
func (g *collector) eachCtx(ctx context.Context, n int, f func(ctx context.Context, i int) error) error {
	eg, ctx := errgroup.WithContext(ctx)
	var next atomic.Int64
	for range min(g.opts.Jobs, n) {
		eg.Go(func() error {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return ctx.Err()
				}
				if err := f(ctx, i); err != nil {
					return err
				}
			}
		})
	}
	return eg.Wait()
}
