package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// serveNarInfo answers /HASHPART.narinfo from the first layer that has it.
// Each request costs one stat per layer tried: a narinfo is read, checked
// and signed once per file version (layer, name, storage.Info.Version) and
// then served from memory, while a new import is seen at once.
func (s *Server) serveNarInfo(w http.ResponseWriter, r *http.Request) error {
	return s.serveNarInfoFile(w, r, r.PathValue("file"))
}

func (s *Server) serveNarInfoFile(w http.ResponseWriter, r *http.Request, name string) error {
	hash, ok := cache.NarInfoHashPart(name)
	if !ok {
		return cache.ErrNotFound
	}
	if !storepath.IsHashPart(hash) {
		return badRequest("invalid store path hash")
	}
	// A layer that cannot be read (a bucket whose store is down) does
	// not stop the others answering, but if none has the narinfo the
	// answer is that failure, not a miss: a client would remember a miss
	// and build what the unreadable layer may hold.
	var m misses
	for i, l := range s.layers {
		body, err := s.narinfo(r.Context(), i, l, name, hash)
		if err != nil {
			m.add(err)
			continue
		}
		s.metrics.narinfos.Add(1)
		writeBytes(w, r, cache.NarInfoType, body)
		return nil
	}
	failed := m.err()
	if s.cfg.NixStore == nil {
		return failed
	}
	body, err := s.cfg.NixStore.NarInfo(r.Context(), hash)
	if isMiss(err) {
		return failed
	}
	if err != nil {
		return err
	}
	s.metrics.narinfos.Add(1)
	writeBytes(w, r, cache.NarInfoType, body)
	return nil
}

// narinfo returns the body to serve for layer i's narinfo file name.
func (s *Server) narinfo(ctx context.Context, i int, l *layer, name, hash string) ([]byte, error) {
	key := narinfoKey{layer: i, name: name}
	now := s.cfg.Now().UnixNano()
	// A body checked against its file within RescanInterval is served
	// without a stat: a hot narinfo costs no syscall. gc waits
	// cache.RemovalGrace before it removes the NAR of a narinfo it
	// removed, so a removed narinfo must be a miss well within that.
	recheck := min(s.cfg.RescanInterval, cache.RemovalGrace/2)
	if body, ok := s.narinfos.fresh(key, now-int64(recheck)); ok {
		if body == nil {
			return nil, cache.ErrNotFound // a remote miss, remembered
		}
		return body, nil
	}
	if l.remote {
		return s.remoteNarInfo(ctx, key, l, name, hash, now)
	}
	fi, err := l.b.Stat(ctx, name)
	if err != nil {
		return nil, err
	}
	if body, ok := s.narinfos.get(key, fi.Version, now); ok {
		return body, nil
	}
	raw, fi, err := storage.ReadFile(ctx, l.b, name, narinfo.MaxSize)
	return s.readNarInfo(key, l, name, hash, raw, fi, err, now)
}

// remoteNarInfo reads a narinfo from an object store: one GET, whose
// answer (the narinfo, or that there is none) is trusted for the recheck
// interval, as a directory's stat is.
func (s *Server) remoteNarInfo(ctx context.Context, key narinfoKey, l *layer, name, hash string, now int64) ([]byte, error) {
	raw, fi, err := storage.ReadFile(ctx, l.b, name, narinfo.MaxSize)
	if isMiss(err) {
		s.narinfos.put(key, "", nil, now)
		return nil, err
	}
	if err == nil {
		if body, ok := s.narinfos.get(key, fi.Version, now); ok {
			return body, nil
		}
	}
	return s.readNarInfo(key, l, name, hash, raw, fi, err, now)
}

// readNarInfo checks and prepares a narinfo read, and keeps it.
func (s *Server) readNarInfo(key narinfoKey, l *layer, name, hash string, raw []byte, fi storage.Info, err error, now int64) ([]byte, error) {
	if errors.Is(err, storage.ErrTooLarge) {
		s.log.Warn("skipping bad narinfo", "dir", l.dir, "file", name, "err", err)
		return nil, cache.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	body, err := s.prepareNarInfo(raw, hash)
	if err != nil {
		// A broken narinfo is a miss for this layer: the client can
		// still get the path elsewhere or build it, while a 5xx would
		// fail its build.
		s.log.Warn("skipping bad narinfo", "dir", l.dir, "file", name, "err", err)
		return nil, cache.ErrNotFound
	}
	s.narinfos.put(key, fi.Version, body, now)
	return body, nil
}

// prepareNarInfo checks a narinfo read from disk and, with a site key,
// adds the site's signature.
func (s *Server) prepareNarInfo(raw []byte, hash string) ([]byte, error) {
	ni, err := narinfo.Parse(bytes.NewReader(raw), s.storeDir)
	if err != nil {
		return nil, err
	}
	if ni.StorePath.Hash != hash {
		return nil, fmt.Errorf("describes %s, not %s", ni.StorePath, hash)
	}
	if s.cfg.Key == nil {
		return raw, nil
	}
	ni.Sign(*s.cfg.Key)
	return ni.MarshalText()
}

type narinfoKey struct {
	layer int
	name  string
}

type narinfoEntry struct {
	version string       // the file's storage.Info.Version when read
	body    []byte       // nil: a bucket's miss, remembered (remoteNarInfo)
	checked atomic.Int64 // when version was last compared with the file's, in Unix ns
}

// narinfoCache holds prepared narinfo bodies up to a byte budget. When full
// it drops arbitrary entries: narinfos are cheap to prepare again, and a
// cache of recently-read ones would need a lock on every hit.
type narinfoCache struct {
	mu      sync.RWMutex
	entries map[narinfoKey]*narinfoEntry
	size    int
	max     int
}

func newNarinfoCache(max int) *narinfoCache {
	return &narinfoCache{entries: make(map[narinfoKey]*narinfoEntry), max: max}
}

// fresh returns k's body if it was checked against its file after since.
func (c *narinfoCache) fresh(k narinfoKey, since int64) ([]byte, bool) {
	c.mu.RLock()
	e, ok := c.entries[k]
	c.mu.RUnlock()
	if !ok || e.checked.Load() <= since {
		return nil, false
	}
	return e.body, true
}

// get returns k's body if its file is still at version, noting that it
// was checked at now.
func (c *narinfoCache) get(k narinfoKey, version string, now int64) ([]byte, bool) {
	c.mu.RLock()
	e, ok := c.entries[k]
	c.mu.RUnlock()
	if !ok || e.body == nil || e.version != version {
		return nil, false
	}
	e.checked.Store(now)
	return e.body, true
}

func (c *narinfoCache) put(k narinfoKey, version string, body []byte, now int64) {
	cost := len(body) + len(k.name) + 64
	if cost > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.entries[k]; ok {
		c.size -= len(old.body) + len(k.name) + 64
	}
	for key, e := range c.entries {
		if c.size+cost <= c.max {
			break
		}
		delete(c.entries, key)
		c.size -= len(e.body) + len(key.name) + 64
	}
	e := &narinfoEntry{version: version, body: body}
	e.checked.Store(now)
	c.entries[k] = e
	c.size += cost
}
