package bundle

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
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

// RecordDir is where a cache keeps the manifests of the bundles imported
// into it.
const RecordDir = "nix-airgap/bundles"

// ImportOptions configure Import. The zero value trusts no key and so
// refuses every bundle.
type ImportOptions struct {
	Keys          *signing.Keyring
	AllowUnsigned bool
	// Jobs is how many files are checked at once; 0 means GOMAXPROCS.
	Jobs int
	// Stdin is read when the source is "-".
	Stdin io.Reader
	// Log receives progress; nil discards it.
	Log *slog.Logger
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
// hashed, and only once the whole bundle verified, its signature is
// trusted and its bases are recorded in the cache are they moved in: NAR
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
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("import %s: %w", src, err)
	}
	unlock, err := lockCache(cacheDir)
	if err != nil {
		return nil, fmt.Errorf("import %s into %s: %w", src, cacheDir, err)
	}
	defer unlock()
	removeStaleStaging(cacheDir, log)

	st, err := newStaging(cacheDir)
	if err != nil {
		return nil, fmt.Errorf("import %s into %s: %w", src, cacheDir, err)
	}
	defer st.remove()

	// The cache as it is, to resolve references and skip what it has.
	var existing *cache.Dir
	if d, err := cache.OpenDir(cacheDir); err == nil {
		existing = d
		defer d.Close()
	}
	// Deep: what goes into a long-lived cache is checked as Nix
	// will check it.
	vopts := VerifyOptions{Keys: opts.Keys, AllowUnsigned: opts.AllowUnsigned, Deep: true, Jobs: opts.Jobs, Stdin: opts.Stdin, Log: log}
	if existing != nil {
		vopts.Against = []cache.Source{existing}
		st.existing = existing
	}
	c, err := check(ctx, src, vopts, st)
	failed := func(err error) (*ImportReport, error) {
		st.remove()
		if created {
			os.Remove(cacheDir) // only if nothing else appeared in it
		}
		return nil, err
	}
	// A delta needs its bases in the cache; without them its references
	// cannot resolve either, so say that first.
	if c != nil && c.manifest != nil {
		var missing []string
		for _, b := range c.manifest.Bases {
			if _, err := os.Stat(filepath.Join(cacheDir, RecordDir, RecordName(b.ID))); err != nil {
				missing = append(missing, b.ID.String())
			}
		}
		if len(missing) > 0 {
			return failed(fmt.Errorf("import %s: %w: base bundles not imported into %s yet: %s (import them first)", src, ErrMissing, cacheDir, strings.Join(missing, ", ")))
		}
	}
	if err != nil {
		if c != nil {
			return failed(fmt.Errorf("import: %w", err))
		}
		return failed(fmt.Errorf("import %s: %w", src, err))
	}
	m := c.manifest
	rep := &ImportReport{ID: c.report.ID, Verify: c.report}

	d, err := cache.CreateDir(cacheDir, m.StoreDir, Priority)
	if err != nil {
		return failed(fmt.Errorf("import %s: %w", src, err))
	}
	defer d.Close()
	// The record dir marks the directory as a long-lived cache from the
	// start, so that verify checks an interrupted first import as one.
	if err := os.MkdirAll(filepath.Join(cacheDir, filepath.FromSlash(RecordDir)), 0o755); err != nil {
		return failed(fmt.Errorf("import %s: %w", src, err))
	}

	// NAR files first, all of them durable before any narinfo.
	var todo []*PathEntry
	moved := map[string]bool{}
	for i := range m.Paths {
		e := &m.Paths[i]
		if d.Has(e.Path.Hash) {
			rep.Skipped++
			continue
		}
		todo = append(todo, e)
		if moved[e.URL] {
			continue
		}
		moved[e.URL] = true
		n, err := st.moveIn(e.URL)
		if err != nil {
			return nil, fmt.Errorf("import %s: %s: %w", src, e.URL, err)
		}
		rep.AddedBytes += n
	}
	for _, f := range m.Files {
		if f.Name == RegistryName {
			continue
		}
		if _, err := st.moveIn(f.Name); err != nil {
			return nil, fmt.Errorf("import %s: %s: %w", src, f.Name, err)
		}
	}
	if err := st.syncDirs(); err != nil {
		return nil, fmt.Errorf("import %s: %w", src, err)
	}
	for _, e := range referencesFirst(todo) {
		ni := c.narinfos[e.Path.Hash]
		if ni == nil {
			return nil, fmt.Errorf("import %s: no narinfo for %s", src, e.Path)
		}
		if err := d.PutNarInfo(ni); err != nil {
			return nil, fmt.Errorf("import %s: %w", src, err)
		}
		rep.Added++
	}
	if c.registry != nil {
		if err := mergeRegistry(d, cacheDir, c.registry); err != nil {
			return nil, fmt.Errorf("import %s: %w", src, err)
		}
	}
	// The record, last: its presence means the import finished.
	rec := path.Join(RecordDir, RecordName(rep.ID))
	if old, err := os.ReadFile(filepath.Join(cacheDir, rec)); err != nil || !bytes.Equal(old, c.data) {
		if len(c.sig) > 0 {
			if err := d.WriteFile(rec+".sig", c.sig); err != nil {
				return nil, fmt.Errorf("import %s: %w", src, err)
			}
		}
		if err := d.WriteFile(rec, c.data); err != nil {
			return nil, fmt.Errorf("import %s: %w", src, err)
		}
		rep.Recorded = true
	}
	log.Info("imported bundle", "bundle", src, "id", rep.ID.String(), "added", rep.Added, "skipped", rep.Skipped)
	return rep, nil
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

// staging holds verified-to-be copies of a bundle's files inside the
// cache directory, under a name readers skip.
type staging struct {
	cacheDir string
	dir      string
	existing *cache.Dir
	dirty    map[string]bool // cache subdirectories that got renames
}

func newStaging(cacheDir string) (*staging, error) {
	var b [8]byte
	rand.Read(b[:])
	dir := filepath.Join(cacheDir, ".staging-"+hex.EncodeToString(b[:]))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	return &staging{cacheDir: cacheDir, dir: dir, dirty: map[string]bool{}}, nil
}

// stage copies a NAR file or log unless the cache has a file of that name:
// NAR files are named by their hash, logs by their derivation. The
// manifest, its signature and narinfos are kept in memory instead.
func (s *staging) stage(rel string) (io.WriteCloser, error) {
	if isNarInfoName(rel) || rel == RegistryName {
		return nil, nil
	}
	if fi, err := os.Lstat(filepath.Join(s.cacheDir, filepath.FromSlash(rel))); err == nil && fi.Mode().IsRegular() {
		return nil, nil
	}
	name := filepath.Join(s.dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return nil, fmt.Errorf("%w: %w", errStage, err)
	}
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errStage, err)
	}
	return syncCloser{f}, nil
}

// syncCloser fsyncs a staged file as it closes it, so that a rename can
// publish it at once.
type syncCloser struct{ f *os.File }

func (s syncCloser) Write(p []byte) (int, error) { return s.f.Write(p) }
func (s syncCloser) Close() error {
	err := s.f.Sync()
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// moveIn renames a staged file into the cache, unless the cache has it
// already, and returns its size when it moved.
func (s *staging) moveIn(rel string) (int64, error) {
	dst := filepath.Join(s.cacheDir, filepath.FromSlash(rel))
	if fi, err := os.Lstat(dst); err == nil && fi.Mode().IsRegular() {
		return 0, nil
	}
	src := filepath.Join(s.dir, filepath.FromSlash(rel))
	fi, err := os.Stat(src)
	if err != nil {
		return 0, fmt.Errorf("not staged: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return 0, err
	}
	if err := os.Rename(src, dst); err != nil {
		return 0, err
	}
	s.dirty[filepath.Dir(dst)] = true
	return fi.Size(), nil
}

func (s *staging) syncDirs() error {
	for _, dir := range slices.Sorted(maps.Keys(s.dirty)) {
		if err := atomicfile.SyncDir(dir); err != nil {
			return err
		}
	}
	return nil
}

func (s *staging) remove() { os.RemoveAll(s.dir) }

// lockCache takes an exclusive lock on CACHE/.lock, so that two imports do
// not interleave and stale staging directories can be removed safely.
func lockCache(cacheDir string) (func(), error) {
	f, err := atomicfile.Lock(filepath.Join(cacheDir, ".lock"), os.O_RDWR|os.O_CREATE, syscall.LOCK_EX)
	if err != nil {
		return nil, err
	}
	return func() { f.Close() }, nil
}

// removeStaleStaging removes staging directories an interrupted import
// left; the caller holds the lock, so none is in use.
func removeStaleStaging(cacheDir string, log *slog.Logger) {
	ents, _ := os.ReadDir(cacheDir)
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), ".staging-") {
			log.Debug("removing an interrupted import's staging directory", "dir", e.Name())
			os.RemoveAll(filepath.Join(cacheDir, e.Name()))
		}
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
