package cache

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/storage"
)

// Group commit. Writing a bundle of hundreds of small NARs with an fsync
// per file (and per directory) spends more time in the journal than in
// compression: each fsync is a journal commit. With Cache.GroupCommit on a
// backend that defers durability to Sync (storage.Dir.NoSync), NAR files
// are renamed into place unsynced and narinfos wait in a batch; Sync then
// makes every file written so far durable with one sync, and only then
// publishes the batch's narinfos. A narinfo thus still appears only after
// its NAR is durable, and a crash leaves at worst unsynced NAR files
// without narinfos, which the next write replaces, or a resumed pack
// adopts once they verify (Adopt).

// Batch limits: a batch is synced once it holds this many narinfos or its
// first has waited this long, so that a long pack shows, and a resumed one
// reuses, all but its last second of work.
const (
	batchMax   = 256
	batchDelay = time.Second
)

type batch struct {
	mu      sync.Mutex // held across a Sync, so that Syncs run one at a time
	pending []pendingFile
	timer   *time.Timer // syncs the batch batchDelay after its first narinfo
	err     error       // from a timer's Sync, for the next Sync to return
}

type pendingFile struct {
	name string
	data []byte
}

func (c *Cache) queueNarInfo(name string, data []byte) error {
	b := &c.batch
	b.mu.Lock()
	if err := b.err; err != nil {
		b.mu.Unlock()
		return err
	}
	if b.timer == nil {
		b.timer = time.AfterFunc(batchDelay, func() { c.Sync(context.Background()) })
	}
	b.pending = append(b.pending, pendingFile{name, data})
	full := len(b.pending) >= batchMax
	b.mu.Unlock()
	if full {
		return c.Sync(context.Background())
	}
	return nil
}

// Sync makes every file written so far durable and publishes the narinfos
// that GroupCommit held back, durably too. Without GroupCommit it makes
// the backend's deferred writes durable. A writer must call it before it
// writes what vouches for the files (a manifest).
func (c *Cache) Sync(ctx context.Context) error {
	if !c.GroupCommit {
		return storage.Sync(ctx, c.b)
	}
	b := &c.batch
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	if b.err == nil {
		b.err = c.publish(ctx, b.pending)
		b.pending = nil
	}
	return b.err
}

// publish makes every file written so far durable, then writes pending
// and makes it durable too.
func (c *Cache) publish(ctx context.Context, pending []pendingFile) error {
	if err := storage.Sync(ctx, c.b); err != nil {
		return err
	}
	if len(pending) == 0 {
		return nil
	}
	for _, p := range pending {
		if err := c.b.Put(ctx, p.name, strings.NewReader(string(p.data)), int64(len(p.data))); err != nil {
			return err
		}
	}
	return storage.Sync(ctx, c.b)
}
