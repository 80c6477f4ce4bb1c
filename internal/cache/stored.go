package cache

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"strings"
	"sync"

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
		return nil, err // it names path
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
		return nil, err // it names path
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
		return nil, err // it names path
	}
	// nix-cache-info is put durably even so: a power cut before the
	// first Sync must not leave it empty, which makes the directory a
	// bundle that the next pack into it cannot open.
	b.NoSync = scratch
	b.Scratch = scratch
	c, err := CreateBackend(context.Background(), b, storeDir, priority)
	if err != nil {
		b.Close()
		return nil, err
	}
	b.NoSync = true
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
	var pe *fs.PathError
	switch {
	case errors.As(err, &pe), errors.Is(err, ErrNoCacheInfo):
		return nil, err // "open FILE: problem", the store's, or "LOCATION: problem" already
	case err != nil:
		return nil, fmt.Errorf("open cache: %w", err) // it names the file in b
	}
	typeUploads(b)
	return &Cache{b: b, info: info}, nil
}

// typeUploads makes a bucket give each file it is sent Nix's
// Content-Type (ContentType).
func typeUploads(b storage.Backend) {
	if s, ok := b.(*storage.S3); ok {
		s.SetContentType(ContentType)
	}
}

// ErrNoCacheInfo reports a location without nix-cache-info: every
// command says it in these words, naming the location as "CMD LOCATION:
// problem" (bundle.CacheOpenError). It matches ErrNotFound: a file is
// missing (exit 5).
var ErrNoCacheInfo error = noCacheInfo{}

type noCacheInfo struct{}

func (noCacheInfo) Error() string        { return "no " + CacheInfoFile + ", which every binary cache has" }
func (noCacheInfo) Is(target error) bool { return target == ErrNotFound }

// readCacheInfo's errors name the file, as storage.Where does, or, for
// ErrNoCacheInfo, b.
func readCacheInfo(ctx context.Context, b storage.Backend) (CacheInfo, error) {
	name := storage.Where(b, CacheInfoFile)
	data, _, err := storage.ReadFile(ctx, b, CacheInfoFile, maxCacheInfo)
	if storage.IsNotExist(err) {
		return CacheInfo{}, fmt.Errorf("%s: %w", b, ErrNoCacheInfo)
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
	typeUploads(b)
	info, err := readCacheInfo(ctx, b)
	switch {
	case err == nil:
		if info.StoreDir != storeDir {
			return nil, fmt.Errorf("create cache %s: %w: it is for store %s, not %s", b, storepath.ErrWrongDir, info.StoreDir, storeDir)
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
