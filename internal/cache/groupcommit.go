package cache

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/storage"
)

// Group commit. Writing a bundle of hundreds of small NARs with an fsync
// per file (and per directory) spends more time in the journal than in
// compression: each fsync is a journal commit. With Cache.GroupCommit on a
// backend that defers durability to Sync (storage.Dir.NoSync), NAR files
// are renamed into place unsynced and narinfos (and files WriteFile
// writes, such as the manifest) wait in a batch; Sync then makes every
// file written so far durable with one sync (the batch's files, spooled,
// too), and only then renames the batch's files in and syncs again. A
// narinfo thus still appears only after its NAR is durable, a manifest
// after what it lists, each whole after a power cut, and a crash leaves
// at worst unsynced NAR files without narinfos, which the next write
// replaces, or a resumed pack adopts once they verify (Adopt). An import
// (Batched) spools its NAR files and syncs them before it moves them in,
// so that a NAR file it finds in place is whole.

// Batch limits: a batch is synced once it holds this many files or its
// first has waited this long, so that a long pack shows, and a resumed one
// reuses, all but its last second of work.
const (
	batchMax   = 256
	batchDelay = time.Second
)

type batch struct {
	mu      sync.Mutex // held across a Sync, so that Syncs run one at a time
	pending []pendingFile
	timer   *time.Timer // syncs the batch batchDelay after its first file
	err     error       // from a timer's Sync, for the next Sync to return
}

type pendingFile struct {
	name string
	data []byte
}

// queue adds the file name, with data, to the batch.
func (c *Cache) queue(name string, data []byte) error {
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
// and files that GroupCommit held back, durably too. Without GroupCommit
// it makes the backend's deferred writes durable. A writer must call it before it
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

// publish makes every file written so far durable, then publishes pending
// and makes it durable too. Each file is spooled, made durable with the
// rest, and only then renamed in: a narinfo or manifest that is there
// after a power cut is whole, which matters to an import or pack run
// again, since it keeps the narinfos it finds.
func (c *Cache) publish(ctx context.Context, pending []pendingFile) error {
	if len(pending) == 0 {
		return storage.Sync(ctx, c.b)
	}
	sp, err := c.spoolDir()
	if err != nil {
		return err
	}
	spooled := make([]string, len(pending))
	for i, p := range pending {
		f, err := sp.CreateTemp()
		if err != nil {
			return err
		}
		_, err = f.Write(p.data)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		spooled[i] = f.Name()
	}
	if err := storage.Sync(ctx, c.b); err != nil {
		return err
	}
	for i, p := range pending {
		if err := sp.Commit(ctx, spooled[i], p.name); err != nil {
			return fmt.Errorf("publish %s: %w", c.name(p.name), err)
		}
	}
	return storage.Sync(ctx, c.b)
}
