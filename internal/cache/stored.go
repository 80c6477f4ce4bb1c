package cache

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"

	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Cache is a binary cache kept in a storage.Backend: a local directory
// (bundles and long-lived caches) or an object store. Names are checked
// before they reach the backend, so no URL leaves the cache. A file is
// always complete, and durable, before a narinfo names it. A Cache is safe
// for concurrent use.
type Cache struct {
	// GroupCommit holds narinfos back and publishes them in batches,
	// each after one Sync of the backend, so that a backend whose
	// writes wait for Sync (storage.Dir.NoSync) spends one sync per
	// batch instead of two fsyncs per file; see Sync. Set it before the
	// first write. The zero value publishes each narinfo as it comes,
	// after syncing what came before.
	GroupCommit bool
	// TempDir is where files for a backend that cannot rename them in
	// (an object store) are spooled; "" means os.TempDir().
	TempDir string

	b     storage.Backend
	owned bool // Close closes b
	info  CacheInfo

	spoolOnce sync.Once
	spool     *storage.Spool
	spoolErr  error

	batch batch // narinfos waiting for Sync, with GroupCommit
}

// OpenDir opens the binary cache in the directory path, which must have a
// valid nix-cache-info.
func OpenDir(path string) (*Cache, error) {
	b, err := storage.OpenDir(path)
	if err != nil {
		return nil, fmt.Errorf("open cache %s: %w", path, err)
	}
	c, err := OpenBackend(context.Background(), b)
	if err != nil {
		b.Close()
	}
	return own(c, err)
}

// own makes a Cache opened by path the owner of its backend.
func own(c *Cache, err error) (*Cache, error) {
	if err != nil {
		return nil, err
	}
	c.owned = true
	return c, nil
}

// CreateDir creates a binary cache in the directory path, as
// CreateBackend does.
func CreateDir(path string, storeDir storepath.Dir, priority int) (*Cache, error) {
	b, err := storage.CreateDir(path)
	if err != nil {
		return nil, fmt.Errorf("create cache %s: %w", path, err)
	}
	c, err := CreateBackend(context.Background(), b, storeDir, priority)
	if err != nil {
		b.Close()
	}
	return own(c, err)
}

// CreateBatchedDir is CreateDir for a writer of many files, such as a
// bundle writer: the directory's writes wait for Sync (storage.Dir.NoSync)
// and narinfos are published in batches (GroupCommit).
func CreateBatchedDir(path string, storeDir storepath.Dir, priority int) (*Cache, error) {
	return createBatchedDir(path, storeDir, priority, false)
}

// CreateSpoolDir is CreateBatchedDir for a spool, which a crash discards:
// nothing in it is ever made durable (storage.Dir.Scratch).
func CreateSpoolDir(path string, storeDir storepath.Dir, priority int) (*Cache, error) {
	return createBatchedDir(path, storeDir, priority, true)
}

func createBatchedDir(path string, storeDir storepath.Dir, priority int, scratch bool) (*Cache, error) {
	b, err := storage.CreateDir(path)
	if err != nil {
		return nil, fmt.Errorf("create cache %s: %w", path, err)
	}
	b.NoSync = true
	b.Scratch = scratch
	c, err := CreateBackend(context.Background(), b, storeDir, priority)
	if err != nil {
		b.Close()
		return nil, err
	}
	c.GroupCommit = true
	return own(c, nil)
}

// Batched returns, for a cache in a storage.Dir, a second Cache on the
// same directory for a writer of many files into it (an import): its
// writes wait for its Sync (storage.Dir.NoSync: one syncfs(2)), and its
// narinfos are published in batches (GroupCommit), each at most a second
// after it was put. A file moved in through its backend (storage.Mover)
// is renamed without an fsync, so it must have been written before a
// Sync. For any other backend, whose writes are durable as they return,
// Batched returns nil. The caller calls Sync, then Close.
func (c *Cache) Batched() (*Cache, error) {
	dir, ok := c.b.(*storage.Dir)
	if !ok {
		return nil, nil
	}
	b, err := storage.OpenDir(dir.Path())
	if err != nil {
		return nil, err
	}
	b.NoSync = true
	return &Cache{GroupCommit: true, b: b, owned: true, info: c.info}, nil
}

// OpenBackend opens the binary cache in b, which must have a valid
// nix-cache-info. The caller closes b after the Cache.
func OpenBackend(ctx context.Context, b storage.Backend) (*Cache, error) {
	info, err := readCacheInfo(ctx, b)
	if err != nil {
		return nil, fmt.Errorf("open cache %s: %w", b, err)
	}
	return &Cache{b: b, info: info}, nil
}

func readCacheInfo(ctx context.Context, b storage.Backend) (CacheInfo, error) {
	name := storage.Where(b, CacheInfoFile)
	data, _, err := storage.ReadFile(ctx, b, CacheInfoFile, maxCacheInfo)
	if storage.IsNotExist(err) {
		return CacheInfo{}, fmt.Errorf("%s: missing, not a binary cache: %w", name, ErrNotFound)
	}
	if err != nil {
		return CacheInfo{}, err
	}
	info, err := ParseCacheInfo(strings.NewReader(string(data)))
	if err != nil {
		return CacheInfo{}, fmt.Errorf("%s: %w", name, err)
	}
	return info, nil
}

// CreateBackend creates a binary cache in b for stores in storeDir, with
// WantMassQuery set and the given priority, or opens the one already
// there. It refuses an existing cache for another store dir; an existing
// cache's priority is left as it is. The caller closes b after the Cache.
func CreateBackend(ctx context.Context, b storage.Backend, storeDir storepath.Dir, priority int) (*Cache, error) {
	if _, err := storepath.ParseDir(string(storeDir)); err != nil {
		return nil, fmt.Errorf("create cache %s: %w", b, err)
	}
	info, err := readCacheInfo(ctx, b)
	switch {
	case err == nil:
		if info.StoreDir != storeDir {
			return nil, fmt.Errorf("create cache %s: it exists for store %s, not %s", b, info.StoreDir, storeDir)
		}
	case errors.Is(err, ErrNotFound):
		info = CacheInfo{StoreDir: storeDir, WantMassQuery: true, Priority: priority}
		data, _ := info.MarshalText()
		if err := b.Put(ctx, CacheInfoFile, strings.NewReader(string(data)), int64(len(data))); err != nil {
			return nil, fmt.Errorf("create cache %s: %w", b, err)
		}
	default:
		return nil, fmt.Errorf("create cache %s: %w", b, err)
	}
	return &Cache{b: b, info: info}, nil
}

// Close releases the cache, and its backend if it opened it (OpenDir,
// CreateDir). What GroupCommit still held back is not published: call
// Sync first.
func (c *Cache) Close() error {
	c.batch.mu.Lock()
	if c.batch.timer != nil {
		c.batch.timer.Stop()
	}
	c.batch.mu.Unlock()
	if c.spool != nil {
		c.spool.Close()
	}
	if c.owned {
		return c.b.Close()
	}
	return nil
}

// Backend is where the cache keeps its files.
func (c *Cache) Backend() storage.Backend { return c.b }

// String names the cache in messages: its directory or URL.
func (c *Cache) String() string { return c.b.String() }

// StoreDir is the store dir nix-cache-info names.
func (c *Cache) StoreDir() storepath.Dir { return c.info.StoreDir }

// Info is the parsed nix-cache-info.
func (c *Cache) Info() CacheInfo { return c.info }

// name is how errors name a file in the cache.
func (c *Cache) name(rel string) string { return storage.Where(c.b, rel) }

// NarInfo reads HASHPART.narinfo. A missing file gives ErrNotFound; one that
// does not parse, or describes another path, gives ErrCorrupt.
func (c *Cache) NarInfo(ctx context.Context, hashPart string) (*narinfo.NarInfo, error) {
	if err := checkHashPart(hashPart); err != nil {
		return nil, fmt.Errorf("narinfo %q in %s: %w", hashPart, c.b, err)
	}
	rel := NarInfoFile(hashPart)
	f, err := c.b.Open(ctx, rel)
	if err != nil {
		if storage.IsNotExist(err) {
			err = ErrNotFound
		}
		return nil, &NarInfoError{Name: c.name(rel), File: rel, Err: err}
	}
	defer f.Close()
	return parseNarInfo(f, c.info.StoreDir, hashPart, c.name(rel))
}

// NarInfoError is a narinfo that cannot be had: missing, unreadable, or
// corrupt.
type NarInfoError struct {
	// Name is the narinfo as messages show it: a path or a URL.
	Name string
	// File is its name in the cache, HASHPART.narinfo.
	File string
	Err  error
}

func (e *NarInfoError) Error() string { return "narinfo " + e.Name + ": " + e.Err.Error() }
func (e *NarInfoError) Unwrap() error { return e.Err }

func parseNarInfo(r io.Reader, storeDir storepath.Dir, hashPart, name string) (*narinfo.NarInfo, error) {
	ni, err := narinfo.Parse(r, storeDir)
	if err != nil {
		if errors.Is(err, narinfo.ErrCorrupt) || errors.Is(err, narinfo.ErrTooLarge) {
			err = corrupt{err}
		}
		return nil, &NarInfoError{Name: name, File: NarInfoFile(hashPart), Err: err}
	}
	if ni.StorePath.Hash != hashPart {
		return nil, &NarInfoError{Name: name, File: NarInfoFile(hashPart), Err: fmt.Errorf("describes %s: %w", ni.StorePath, ErrCorrupt)}
	}
	return ni, nil
}

// corrupt marks an error from a parser as ErrCorrupt too, keeping its text.
type corrupt struct{ err error }

func (c corrupt) Error() string   { return c.err.Error() }
func (c corrupt) Unwrap() []error { return []error{c.err, ErrCorrupt} }

// checkHashPart accepts exactly the 32 nix32 characters of a store path's
// hash part, which also keeps a name from leaving the cache.
func checkHashPart(h string) error {
	if !storepath.IsHashPart(h) {
		return fmt.Errorf("not a store path hash part: %w", ErrNotFound)
	}
	return nil
}

// Has reports whether HASHPART.narinfo exists.
func (c *Cache) Has(ctx context.Context, hashPart string) bool {
	if !storepath.IsHashPart(hashPart) {
		return false
	}
	_, err := c.b.Stat(ctx, NarInfoFile(hashPart))
	return err == nil
}

// localURL checks that url is a relative name inside the cache.
func localURL(url string) (string, error) {
	switch {
	case url == "":
		return "", errors.New("empty URL")
	case strings.Contains(url, "://"), strings.HasPrefix(url, "/"):
		return "", errors.New("absolute URL, not a file of this cache")
	case strings.ContainsRune(url, '\\'), !filepath.IsLocal(url), path.Clean(url) != url:
		return "", errors.New("URL leaves the cache directory or is not clean")
	case strings.HasPrefix(url, ".") || strings.Contains(url, "/."):
		return "", errors.New("URL names a hidden or temporary file")
	}
	return url, storage.CheckName(url)
}

// Open opens the file url names, relative to the cache. It refuses
// absolute URLs and any name leading outside the cache. The result is a
// storage.File (use OpenFile to get one typed so).
func (c *Cache) Open(ctx context.Context, url string) (io.ReadCloser, error) {
	f, err := c.OpenFile(ctx, url)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// OpenFile is Open returning the storage.File, for callers that seek or
// want its size.
func (c *Cache) OpenFile(ctx context.Context, url string) (storage.File, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rel, err := localURL(url)
	if err != nil {
		return nil, fmt.Errorf("open %q in cache %s: %w", url, c.b, err)
	}
	f, err := c.b.Open(ctx, rel)
	if err != nil {
		if storage.IsNotExist(err) {
			return nil, fmt.Errorf("open %s: %w", c.name(rel), ErrNotFound)
		}
		return nil, fmt.Errorf("open %s: %w", c.name(rel), err)
	}
	return f, nil
}

// NarInfos yields every narinfo at the top of the cache in name order, and
// an error naming the file for each one that cannot be read; the caller
// decides whether to go on. Where each read is a request (an object
// store), narinfoReaders are read at once.
func (c *Cache) NarInfos(ctx context.Context) iter.Seq2[*narinfo.NarInfo, error] {
	return func(yield func(*narinfo.NarInfo, error) bool) {
		var hashes []string
		for info, err := range c.b.List(ctx, "") {
			if err != nil {
				if !yield(nil, fmt.Errorf("list cache %s: %w", c.b, err)) {
					return
				}
				continue
			}
			if hashPart, ok := NarInfoHashPart(info.Name); ok && !info.Dir {
				hashes = append(hashes, hashPart)
			}
		}
		readers := 1
		if _, local := c.b.(storage.Mover); !local {
			readers = narinfoReaders
		}
		type result struct {
			ni  *narinfo.NarInfo
			err error
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		// A window of readers ahead of the one yielded, in order.
		slots := make(chan chan result, readers)
		go func() {
			defer close(slots)
			for _, h := range hashes {
				ch := make(chan result, 1)
				select {
				case slots <- ch:
				case <-ctx.Done():
					return
				}
				go func() {
					ni, err := c.NarInfo(ctx, h)
					ch <- result{ni, err}
				}()
			}
		}()
		for ch := range slots {
			r := <-ch
			if !yield(r.ni, r.err) {
				return
			}
		}
	}
}

// narinfoReaders is how many narinfos NarInfos reads at once from an
// object store.
const narinfoReaders = 32

// WriteFile atomically and durably writes an extra file such as
// manifest.json or nix-airgap/bundles/ID.json. name is relative to the
// cache and must stay inside it.
func (c *Cache) WriteFile(ctx context.Context, name string, data []byte) error {
	rel, err := localURL(name)
	if err != nil {
		return fmt.Errorf("write %q in cache %s: %w", name, c.b, err)
	}
	if err := c.b.Put(ctx, rel, strings.NewReader(string(data)), int64(len(data))); err != nil {
		return fmt.Errorf("write %s: %w", c.name(rel), err)
	}
	return nil
}

// PutNarInfo atomically writes ni as HASHPART.narinfo, replacing any
// earlier one. It refuses a narinfo for another store dir, one whose URL is
// not a file of this cache, and one whose file is missing (ErrNotFound) or
// has another size than FileSize (ErrCorrupt): a narinfo never appears
// before its NAR, which the backend is synced for first. With GroupCommit
// the narinfo appears with its batch (see Sync), not before PutNarInfo
// returns.
func (c *Cache) PutNarInfo(ctx context.Context, ni *narinfo.NarInfo) error {
	if ni.StorePath.Dir != c.info.StoreDir {
		return fmt.Errorf("put narinfo %s in %s: cache is for store %s", ni.StorePath, c.b, c.info.StoreDir)
	}
	data, err := ni.MarshalText()
	if err != nil {
		return fmt.Errorf("put narinfo %s in %s: %w", ni.StorePath, c.b, err)
	}
	rel, err := localURL(ni.URL)
	if err != nil {
		return fmt.Errorf("put narinfo %s: URL %q: %w", ni.StorePath, ni.URL, err)
	}
	st, err := c.b.Stat(ctx, rel)
	switch {
	case storage.IsNotExist(err):
		return fmt.Errorf("put narinfo %s: its file %s is missing: %w", ni.StorePath, c.name(rel), ErrNotFound)
	case err != nil:
		return fmt.Errorf("put narinfo %s: %w", ni.StorePath, err)
	case ni.FileSize != 0 && uint64(st.Size) != ni.FileSize:
		return fmt.Errorf("put narinfo %s: %s has %d bytes, narinfo says %d: %w", ni.StorePath, c.name(rel), st.Size, ni.FileSize, ErrCorrupt)
	}
	name := NarInfoFile(ni.StorePath.Hash)
	if c.GroupCommit {
		return c.queueNarInfo(name, data)
	}
	if err := storage.Sync(ctx, c.b); err != nil {
		return fmt.Errorf("put narinfo %s: %w", ni.StorePath, err)
	}
	if err := c.b.Put(ctx, name, strings.NewReader(string(data)), int64(len(data))); err != nil {
		return fmt.Errorf("put narinfo %s: %w", ni.StorePath, err)
	}
	return nil
}

// AddFile stores r's bytes as nar/NIX32(sha256).nar + ext (such as
// ".zst"), durably, and returns its URL, hash and size. If that file exists
// already with the same size, it is left alone.
func (c *Cache) AddFile(ctx context.Context, r io.Reader, ext string) (File, error) {
	return c.store(ctx, ext, func(w io.Writer) error {
		_, err := storage.Copy(ctx, w, r)
		return err
	})
}

// AddNAR compresses the NAR nar reads with the named compression and
// stores it as AddFile does, hashing the NAR and the compressed file in the
// same pass. It does not check that nar is a valid NAR. If want is not
// zero, it is what the NAR must hash to (the store's record, say): a NAR
// that differs is refused, wrapping ErrCorrupt, and nothing is left behind.
func (c *Cache) AddNAR(ctx context.Context, narR io.Reader, comp string, opts compression.WriterOptions, want NarStats) (File, NarStats, error) {
	ext, err := compression.Ext(comp)
	if err != nil {
		return File{}, NarStats{}, fmt.Errorf("add NAR to %s: %w", c.b, err)
	}
	var stats NarStats
	f, err := c.store(ctx, ext, func(w io.Writer) error {
		cw, err := compression.NewWriter(w, comp, opts)
		if err != nil {
			return err
		}
		hw := nar.NewHashWriter(cw)
		// A NAR source that writes itself out (a nar.DumpReader) skips
		// the copy through a buffer.
		if wt, ok := narR.(io.WriterTo); ok {
			_, err = wt.WriteTo(ctxWriter{ctx, hw})
		} else {
			_, err = storage.Copy(ctx, hw, narR)
		}
		if err != nil {
			cw.Close()
			return err
		}
		if err := cw.Close(); err != nil {
			return fmt.Errorf("compress: %w", err)
		}
		stats = NarStats{NarHash: hw.Sum(), NarSize: hw.Size()}
		if !want.NarHash.IsZero() && (!stats.NarHash.Equal(want.NarHash) || stats.NarSize != want.NarSize) {
			return fmt.Errorf("%w: NAR hashes to %s (%d bytes), want %s (%d bytes)", ErrCorrupt, stats.NarHash, stats.NarSize, want.NarHash, want.NarSize)
		}
		return nil
	})
	if err != nil {
		return File{}, NarStats{}, err
	}
	return f, stats, nil
}

var errExt = errors.New("extension must be empty or a dot and up to 8 lower-case letters or digits")

func checkExt(ext string) error {
	if ext == "" {
		return nil
	}
	if len(ext) < 2 || len(ext) > 9 || ext[0] != '.' {
		return errExt
	}
	for _, c := range ext[1:] {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return errExt
		}
	}
	return nil
}

// spoolDir returns the cache's spool, made on first use.
func (c *Cache) spoolDir() (*storage.Spool, error) {
	c.spoolOnce.Do(func() { c.spool, c.spoolErr = storage.NewSpool(c.b, c.TempDir) })
	return c.spool, c.spoolErr
}

// store writes a file with write into the spool, hashing what it writes,
// then commits it under its hash. Any error leaves nothing behind.
func (c *Cache) store(ctx context.Context, ext string, write func(io.Writer) error) (File, error) {
	if err := checkExt(ext); err != nil {
		return File{}, fmt.Errorf("add file to %s: %q: %w", c.b, ext, err)
	}
	sp, err := c.spoolDir()
	if err != nil {
		return File{}, fmt.Errorf("add file to %s: %w", c.b, err)
	}
	tmp, err := sp.CreateTemp()
	if err != nil {
		return File{}, fmt.Errorf("add file to %s: %w", c.b, err)
	}
	defer func() {
		if tmp != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(tmp, h)}
	bw, done := storage.BufferedWriter(cw)
	defer done()
	if err := write(bw); err != nil {
		return File{}, fmt.Errorf("add file to %s: %w", c.b, err)
	}
	if err := bw.Flush(); err != nil {
		return File{}, fmt.Errorf("add file to %s: %w", c.b, err)
	}
	sum, _ := storepath.NewHash(storepath.SHA256, h.Sum(nil))
	file := File{URL: NarURL(sum, ext), Hash: sum, Size: cw.n}
	// A file of the same size is the same file, unless a crash left
	// it unsynced: with GroupCommit it is replaced.
	if st, err := c.b.Stat(ctx, file.URL); err == nil && st.Size == file.Size && !c.GroupCommit {
		return file, nil
	}
	name := tmp.Name()
	err = tmp.Close()
	tmp = nil
	if err == nil {
		err = sp.Commit(ctx, name, file.URL)
	}
	if err != nil {
		os.Remove(name)
		return File{}, fmt.Errorf("add file %s: %w", c.name(file.URL), err)
	}
	return file, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// ContextReader returns a reader of r that fails with ctx's error once
// ctx is done, so that a long copy stops when its command is cancelled.
func ContextReader(ctx context.Context, r io.Reader) io.Reader { return storage.ContextReader(ctx, r) }

// ctxWriter stops a copy when ctx is done.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}
