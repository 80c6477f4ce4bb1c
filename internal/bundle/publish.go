package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"slices"
	"sync"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/channel"
	"github.com/nix-airgap/nix-airgap/internal/flakeregistry"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
	"golang.org/x/sync/errgroup"
)

// publish moves a verified bundle's staged files into the cache d: NAR
// files and logs first, all durable before any narinfo, then narinfos
// (references first), flake-registry.json, the channels, and the bundle's
// record last.
func publish(ctx context.Context, c *checker, st *staging, d *cache.Cache, rep *ImportReport) error {
	var todo []*PathEntry
	for i := range c.manifest.Paths {
		e := &c.manifest.Paths[i]
		has, err := st.hasNarInfo(d, e.Path.Hash)
		if err != nil {
			return err
		}
		if !has {
			todo = append(todo, e)
		}
	}
	if err := publishPaths(ctx, c, st, d, rep, todo); err != nil {
		return err
	}
	return publishFiles(ctx, c, st, d, rep)
}

// publishPaths moves the NAR files of the paths todo in, and the extra
// files staged, makes them durable, then writes the narinfos, references
// first.
func publishPaths(ctx context.Context, c *checker, st *staging, d *cache.Cache, rep *ImportReport, todo []*PathEntry) error {
	m := c.manifest
	prog := c.opts.Progress
	rep.Skipped = len(m.Paths) - len(todo) - len(c.held)
	publishing := map[string]bool{}
	for _, e := range todo {
		publishing[e.Path.Hash] = true
	}
	nars := make(map[string]move, len(todo)) // by path hash
	for _, e := range todo {
		if e.Delta != nil {
			// A NAR rebuilt from a delta: published under its own name.
			rf := c.seen[e.URL].rebuilt
			c.narinfos[e.Path.Hash] = e.rebuiltNarInfo(rf)
			nars[e.Path.Hash] = move{rf.staged, rf.url, rf.url + " rebuilt from " + e.URL}
			continue
		}
		nars[e.Path.Hash] = move{e.URL, e.URL, e.URL}
	}
	var extra []move
	for _, f := range m.Files {
		if _, isChannel := channel.NameOf(f.Name); f.Name == RegistryName || isChannel || !st.staged(f.Name) {
			continue // merged and installed by publishFiles; a volume set's may wait
		}
		extra = append(extra, move{f.Name, f.Name, f.Name})
	}
	for _, e := range todo {
		if c.narinfos[e.Path.Hash] == nil {
			return fmt.Errorf("no narinfo for %s", e.Path)
		}
	}
	// The bytes to move in, which progress counts as each file is in:
	// into an object store that is an upload, and the paths count only
	// once every NAR file is in.
	var size int64
	counted := map[string]bool{}
	for _, f := range slices.Concat(slices.Collect(maps.Values(nars)), extra) {
		if !counted[f.rel] {
			counted[f.rel] = true
			size += st.toMove(f.staged, f.rel)
		}
	}
	prog.Phase(PhaseImport, len(m.Paths), size)
	for i := range m.Paths {
		if e := &m.Paths[i]; !publishing[e.Path.Hash] && !c.held[e.Path.Hash] {
			prog.Step(e.Path.String(), "already there", 0)
		}
	}
	p := &publisher{st: st, rep: rep, prog: prog, sizes: map[string]int64{}}
	batched, err := d.Batched()
	if err != nil {
		return err
	}
	if batched != nil {
		defer batched.Close()
		return p.batched(ctx, c, batched, todo, nars, extra)
	}
	return p.each(ctx, c, d, todo, nars, extra)
}

// move is a staged file to publish, and how errors name it.
type move struct{ staged, rel, what string }

// publisher moves a bundle's staged files into a cache and writes its
// narinfos, counting what it adds.
type publisher struct {
	st   *staging
	rep  *ImportReport
	prog Progress
	mu   sync.Mutex
	// sizes are those of the files moved in, by name.
	sizes map[string]int64
}

// moveIn publishes f through the backend into.
func (p *publisher) moveIn(ctx context.Context, into storage.Backend, f move) error {
	n, err := p.st.moveInAs(ctx, into, f.staged, f.rel, p.step)
	if err != nil {
		return fmt.Errorf("%s: %w", f.what, err)
	}
	p.mu.Lock()
	p.rep.AddedBytes += n
	if n > 0 {
		p.sizes[f.rel] = n
	}
	p.mu.Unlock()
	return nil
}

// step counts n bytes moved in.
func (p *publisher) step(n int64) { p.prog.Step("", "", n) }

// size is that of the cache's file rel as this import knows it, moved in
// or listed, or -1.
func (p *publisher) size(rel string) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n, ok := p.sizes[rel]; ok {
		return n
	}
	return p.st.listedSize(rel)
}

func (p *publisher) added(e *PathEntry) {
	p.mu.Lock()
	p.rep.Added++
	p.prog.Step(e.Path.String(), "added", 0)
	p.mu.Unlock()
}

// batched publishes into a directory cache in group commits (d is
// cache.Cache.Batched's): one sync makes every staged file durable, then
// each path's NAR file is renamed in and its narinfo queued, references
// first, and a batch of narinfos is renamed in after the sync that makes
// its NAR files durable, about every second. A crash leaves NAR files
// whole, some perhaps without narinfos, and narinfos whole; the order of
// the renames within a batch, kept by the file system's journal, keeps
// each path's references before it.
func (p *publisher) batched(ctx context.Context, c *checker, d *cache.Cache, todo []*PathEntry, nars map[string]move, extra []move) error {
	if err := d.Sync(ctx); err != nil {
		return err
	}
	into := d.Backend()
	for _, f := range extra {
		if err := p.moveIn(ctx, into, f); err != nil {
			return err
		}
	}
	moved := map[string]bool{}
	for _, e := range referencesFirst(todo) {
		if f := nars[e.Path.Hash]; !moved[f.rel] {
			moved[f.rel] = true
			if err := p.moveIn(ctx, into, f); err != nil {
				return err
			}
		}
		if err := d.PutNarInfo(ctx, c.narinfos[e.Path.Hash]); err != nil {
			return err
		}
		p.added(e)
	}
	return d.Sync(ctx)
}

// each publishes into a cache whose writes are durable one by one (an
// object store): the files, at once, then, after a sync, the narinfos in
// waves, each path after those it refers to.
func (p *publisher) each(ctx context.Context, c *checker, d *cache.Cache, todo []*PathEntry, nars map[string]move, extra []move) error {
	files := extra
	moved := map[string]bool{}
	for _, e := range todo {
		if f := nars[e.Path.Hash]; !moved[f.rel] {
			moved[f.rel] = true
			files = append(files, f)
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.st.jobs)
	for _, f := range files {
		g.Go(func() error { return p.moveIn(gctx, d.Backend(), f) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := d.Sync(ctx); err != nil {
		return err
	}
	for _, wave := range referenceWaves(todo) {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(p.st.jobs)
		for _, e := range wave {
			g.Go(func() error {
				ni := c.narinfos[e.Path.Hash]
				// Each NAR file went up, or was listed, above: no
				// request to look it up again.
				if err := d.PutNarInfoOf(gctx, ni, p.size(ni.URL)); err != nil {
					return err
				}
				p.added(e)
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
	}
	return nil
}

// publishFiles merges the bundle's flake registry, installs its channels
// and writes its record, last: its presence means the import finished.
func publishFiles(ctx context.Context, c *checker, st *staging, d *cache.Cache, rep *ImportReport) error {
	if c.registry != nil {
		if err := mergeRegistry(ctx, d, c.registry); err != nil {
			return err
		}
	}
	if err := installChannels(ctx, c, st, d, rep); err != nil {
		return err
	}
	b := d.Backend()
	rec := path.Join(RecordDir, RecordName(rep.ID))
	if ok, err := recorded(ctx, b, rec, rep.ID); ok || err != nil {
		return err
	}
	if err := putManifest(ctx, c, d, rec); err != nil {
		return err
	}
	rep.Recorded = true
	return nil
}

// putManifest writes the manifest as it was checked to name in the
// cache, after its signature, name.sig.
func putManifest(ctx context.Context, c *checker, d *cache.Cache, name string) error {
	b := d.Backend()
	if len(c.sig) > 0 {
		if err := d.WriteFile(ctx, name+".sig", c.sig); err != nil {
			return err
		}
	}
	var r io.Reader = bytes.NewReader(c.data)
	size := int64(len(c.data))
	if c.dataFile != "" {
		f, err := os.Open(c.dataFile)
		if err != nil {
			return fmt.Errorf("write %s: %w", storage.Where(b, name), err)
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return fmt.Errorf("write %s: %w", storage.Where(b, name), err)
		}
		r, size = f, fi.Size()
	}
	if err := b.Put(ctx, name, r, size); err != nil {
		return fmt.Errorf("write %s: %w", storage.Where(b, name), err)
	}
	return nil
}

// recorded reports whether the cache has the record rec of the bundle id,
// whole: its bytes hash to the id. A record it cannot read is an error,
// not a missing one: writing it again would hide the fault and report
// the bundle as newly recorded.
func recorded(ctx context.Context, b storage.Backend, rec string, id storepath.Hash) (bool, error) {
	f, err := b.Open(ctx, rec)
	if storage.IsNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(f, MaxManifestSize+1)); err != nil {
		return false, fmt.Errorf("read %s: %w", storage.Where(b, rec), err)
	}
	return bytes.Equal(h.Sum(nil), id.Digest), nil
}

// referenceWaves groups paths so that each comes in a later wave than
// those it refers to, in referencesFirst's order within a wave: the paths
// of a wave can go up at once.
func referenceWaves(todo []*PathEntry) [][]*PathEntry {
	depth := make(map[string]int, len(todo))
	var waves [][]*PathEntry
	for _, e := range referencesFirst(todo) {
		d := 0
		for _, r := range e.References {
			if rd, ok := depth[r.Hash]; ok && r.Hash != e.Path.Hash {
				d = max(d, rd+1)
			}
		}
		depth[e.Path.Hash] = d
		if d == len(waves) {
			waves = append(waves, nil)
		}
		waves[d] = append(waves[d], e)
	}
	return waves
}

// referencesFirst orders paths so that each comes after those it refers
// to, as nix copy uploads them: a crash between two narinfos then leaves
// the closure of every published path in the cache.
func referencesFirst(todo []*PathEntry) []*PathEntry {
	byHash := make(map[string]*PathEntry, len(todo))
	for _, e := range todo {
		byHash[e.Path.Hash] = e
	}
	out := make([]*PathEntry, 0, len(todo))
	done := make(map[string]bool, len(todo))
	var visit func(e *PathEntry)
	visit = func(e *PathEntry) {
		if done[e.Path.Hash] {
			return
		}
		done[e.Path.Hash] = true
		for _, r := range e.References {
			if d, ok := byHash[r.Hash]; ok {
				visit(d)
			}
		}
		out = append(out, e)
	}
	for _, e := range todo {
		visit(e)
	}
	return out
}

// mergeRegistry adds the bundle's registry entries to the cache's
// (flakeregistry.Registry.Merge). The file is rewritten only when it
// changes, and an import running alongside never loses the other's
// entries (storage.Update).
func mergeRegistry(ctx context.Context, d *cache.Cache, bundleReg []byte) error {
	in, err := flakeregistry.Parse(bundleReg)
	if err != nil {
		return fmt.Errorf("%s in the bundle: %w: %w", RegistryName, ErrCorrupt, err)
	}
	return storage.Update(ctx, d.Backend(), RegistryName, flakeregistry.MaxSize, func(old []byte, exists bool) ([]byte, error) {
		out := &flakeregistry.Registry{}
		if exists {
			var err error
			if out, err = flakeregistry.Parse(old); err != nil {
				return nil, fmt.Errorf("%s: %w", storage.Where(d.Backend(), RegistryName), err)
			}
		}
		out.Merge(in)
		return out.Marshal()
	})
}
