package bundle

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/nix-airgap/nix-airgap/internal/atomicfile"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// ImportOptions configure Import. The zero value trusts no key and so
// refuses every bundle.
type ImportOptions struct {
	Keys          *signing.Keyring
	AllowUnsigned bool
	// Jobs is how many files are checked at once; 0 means GOMAXPROCS.
	Jobs int
	// Stdin is read when the source is "-".
	Stdin io.Reader
	// Log receives progress, and a warning while another import holds
	// the cache's lock; nil discards them.
	Log *slog.Logger
	// Progress, when set, hears how far verification has got.
	Progress Progress
}

// ImportReport is what Import did.
type ImportReport struct {
	ID     storepath.Hash
	Verify *Report
	// Added paths were new to the cache; Skipped were there already.
	Added, Skipped int
	// AddedBytes is the size of the NAR files added.
	AddedBytes int64
	// Recorded is false when the bundle had been imported before.
	Recorded bool
}

// Import verifies the bundle at src (a directory, a .tar file, or "-" for
// opts.Stdin) and merges it into the cache at cacheDir, creating the
// cache if needed, as docs/bundle-format.md §6 says.
//
// Everything is verified before the cache changes: the bundle's files are
// copied into CACHE/.staging-RANDOM/ (ignored by readers) as they are
// hashed, and only once the whole bundle verified (its signature trusted,
// every path it refers to in the bundle or the cache, whichever bundle
// brought it: a delta's bases are information) are they moved in: NAR
// files first (fsynced, renamed, directory fsynced), then narinfos, then
// flake-registry.json, then the bundle's record. A bad bundle leaves the
// cache as it was; a crash leaves every narinfo's NAR complete, and
// importing again finishes the job. Paths the cache has are left alone,
// so importing a bundle twice changes nothing.
func Import(ctx context.Context, src, cacheDir string, opts ImportOptions) (*ImportReport, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	_, statErr := os.Stat(cacheDir)
	created := errors.Is(statErr, fs.ErrNotExist)
	unlock, err := lockCache(cacheDir, src, log)
	if err != nil {
		return nil, fmt.Errorf("import %s into %s: %w", src, cacheDir, err)
	}
	defer func() { unlock() }()
	removeStaleStaging(cacheDir, log)

	st, err := newStaging(cacheDir)
	if err != nil {
		return nil, fmt.Errorf("import %s into %s: %w", src, cacheDir, err)
	}
	defer st.remove()

	c, err := checkImport(ctx, src, cacheDir, opts, log, st)
	var d *cache.Dir
	if err == nil {
		d, err = openImportCache(cacheDir, c.manifest.StoreDir)
		if err != nil {
			err = fmt.Errorf("import %s: %w", src, err)
		}
	}
	if err != nil {
		st.remove()
		if created {
			// Leave no trace of the cache this import would have
			// made: its lock file last (another import waiting for
			// it starts afresh), then the directory, if nothing else
			// appeared in it.
			os.Remove(filepath.Join(cacheDir, lockName))
			unlock()
			unlock = func() {}
			os.Remove(cacheDir)
		}
		return nil, err
	}
	defer d.Close()
	rep := &ImportReport{ID: c.report.ID, Verify: c.report}
	if err := publish(c, st, d, rep); err != nil {
		return nil, fmt.Errorf("import %s: %w", src, err)
	}
	log.Info("imported bundle", "bundle", src, "id", rep.ID.String(), "added", rep.Added, "skipped", rep.Skipped)
	return rep, nil
}

// checkImport verifies the bundle at src as import must, staging its
// files in st: deeply, with references resolving in the cache, and its
// bases imported before it.
func checkImport(ctx context.Context, src, cacheDir string, opts ImportOptions, log *slog.Logger, st *staging) (*checker, error) {
	// Deep: what goes into a long-lived cache is checked as Nix will
	// check it.
	vopts := VerifyOptions{Keys: opts.Keys, AllowUnsigned: opts.AllowUnsigned, Deep: true, Jobs: opts.Jobs, Stdin: opts.Stdin, Log: log, Progress: opts.Progress}
	// The cache as it is, to resolve references.
	if existing, err := cache.OpenDir(cacheDir); err == nil {
		defer existing.Close()
		vopts.Against = []cache.Source{existing}
	}
	vopts.into = cacheDir
	c, err := check(ctx, src, vopts, st)
	if err == nil {
		// Bases are information: the references resolved.
		for _, b := range c.manifest.Bases {
			if _, serr := os.Stat(filepath.Join(cacheDir, RecordDir, RecordName(b.ID))); serr != nil {
				log.Info("a base of the bundle was never imported here; every path the bundle refers to is in the cache or the bundle all the same", "base", b.ID.String(), "packed", b.Created)
			}
		}
	}
	switch {
	case err != nil && c != nil:
		return nil, fmt.Errorf("import: %w", err)
	case err != nil:
		return nil, fmt.Errorf("import %s: %w", src, err)
	}
	return c, nil
}

// openImportCache creates the cache, or opens it, for a bundle's store.
func openImportCache(cacheDir string, storeDir storepath.Dir) (*cache.Dir, error) {
	d, err := cache.CreateDir(cacheDir, storeDir, Priority)
	if err != nil {
		return nil, err
	}
	// The record dir marks the directory as a long-lived cache from the
	// start, so that verify checks an interrupted first import as one.
	if err := os.MkdirAll(filepath.Join(cacheDir, filepath.FromSlash(RecordDir)), 0o755); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// publish moves a verified bundle's staged files into the cache d: NAR
// files and logs first, all durable before any narinfo, then narinfos
// (references first), flake-registry.json, and the bundle's record last.
func publish(c *checker, st *staging, d *cache.Dir, rep *ImportReport) error {
	m := c.manifest
	prog := c.opts.Progress
	prog.Phase(PhaseImport, len(m.Paths), 0)
	var todo []*PathEntry
	moved := map[string]bool{}
	for i := range m.Paths {
		e := &m.Paths[i]
		if d.Has(e.Path.Hash) {
			rep.Skipped++
			prog.Step(e.Path.String(), "already there", 0)
			continue
		}
		todo = append(todo, e)
		if moved[e.URL] {
			continue
		}
		moved[e.URL] = true
		n, err := st.moveIn(e.URL)
		if err != nil {
			return fmt.Errorf("%s: %w", e.URL, err)
		}
		rep.AddedBytes += n
	}
	for _, f := range m.Files {
		if f.Name == RegistryName {
			continue
		}
		if _, err := st.moveIn(f.Name); err != nil {
			return fmt.Errorf("%s: %w", f.Name, err)
		}
	}
	if err := st.syncDirs(); err != nil {
		return err
	}
	for _, e := range referencesFirst(todo) {
		ni := c.narinfos[e.Path.Hash]
		if ni == nil {
			return fmt.Errorf("no narinfo for %s", e.Path)
		}
		if err := d.PutNarInfo(ni); err != nil {
			return err
		}
		rep.Added++
		prog.Step(e.Path.String(), "added", 0)
	}
	if c.registry != nil {
		if err := mergeRegistry(d, d.Path(), c.registry); err != nil {
			return err
		}
	}
	// The record, last: its presence means the import finished.
	rec := path.Join(RecordDir, RecordName(rep.ID))
	if old, err := os.ReadFile(filepath.Join(d.Path(), rec)); err == nil && bytes.Equal(old, c.data) {
		return nil
	}
	if len(c.sig) > 0 {
		if err := d.WriteFile(rec+".sig", c.sig); err != nil {
			return err
		}
	}
	if err := d.WriteFile(rec, c.data); err != nil {
		return err
	}
	rep.Recorded = true
	return nil
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

// lockName is the cache's lock file, which also says who holds it.
const lockName = ".lock"

// lockCache creates cacheDir if needed and takes an exclusive lock on its
// lock file, so that two imports do not interleave and stale staging
// directories can be removed safely. While another import holds it, a
// warning says who (the holder writes its pid and what it imports into
// the file) and lockCache waits. A lock file that was removed while it
// waited (a refused import removing the cache it had created) is taken
// afresh.
func lockCache(cacheDir, src string, log *slog.Logger) (func(), error) {
	name := filepath.Join(cacheDir, lockName)
	for {
		if err := os.MkdirAll(cacheDir, 0o755); err != nil {
			return nil, err
		}
		f, err := atomicfile.Lock(name, os.O_RDWR|os.O_CREATE, syscall.LOCK_EX|syscall.LOCK_NB)
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder, _ := os.ReadFile(name)
			who := strings.TrimSpace(string(holder))
			if who == "" {
				who = "another import"
			}
			log.Warn(fmt.Sprintf("%s is locked by %s; waiting for it to finish", cacheDir, who))
			f, err = atomicfile.Lock(name, os.O_RDWR|os.O_CREATE, syscall.LOCK_EX)
		}
		if err != nil {
			return nil, err
		}
		if held, err := f.Stat(); err == nil {
			if now, err := os.Stat(name); err != nil || !os.SameFile(held, now) {
				f.Close()
				continue
			}
		}
		f.Truncate(0)
		fmt.Fprintf(f, "pid %d (nix-airgap import %s)\n", os.Getpid(), src)
		return func() {
			f.Truncate(0)
			f.Close()
		}, nil
	}
}

// registry is a flake registry, version 2.
type registry struct {
	Version int               `json:"version"`
	Flakes  []json.RawMessage `json:"flakes"`
}

// mergeRegistry adds the bundle's registry entries to the cache's. An
// entry replaces one with the same "from"; the file is rewritten only when
// it changes.
func mergeRegistry(d *cache.Dir, cacheDir string, bundleReg []byte) error {
	var in registry
	if err := json.Unmarshal(bundleReg, &in); err != nil || in.Version != 2 {
		return fmt.Errorf("%s in the bundle: %w: not a version 2 flake registry", RegistryName, ErrCorrupt)
	}
	out := registry{Version: 2}
	old, err := os.ReadFile(filepath.Join(cacheDir, RegistryName))
	if err == nil {
		if err := json.Unmarshal(old, &out); err != nil {
			return fmt.Errorf("%s: %w", filepath.Join(cacheDir, RegistryName), err)
		}
	}
	from := func(raw json.RawMessage) string {
		var e struct {
			From json.RawMessage `json:"from"`
		}
		json.Unmarshal(raw, &e)
		var v any
		json.Unmarshal(e.From, &v)
		b, _ := json.Marshal(v) // canonical: sorted keys
		return string(b)
	}
	for _, f := range in.Flakes {
		k := from(f)
		if i := slices.IndexFunc(out.Flakes, func(o json.RawMessage) bool { return from(o) == k }); i >= 0 {
			out.Flakes[i] = f
		} else {
			out.Flakes = append(out.Flakes, f)
		}
	}
	data, err := json.Marshal(out)
	if err != nil {
		return err
	}
	data = append(data, '\n')
	if bytes.Equal(data, old) {
		return nil
	}
	return d.WriteFile(RegistryName, data)
}
