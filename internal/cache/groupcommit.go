package cache

import (
	"fmt"
	"os"
	"sync"
	"time"
)

// Group commit. Writing a bundle of hundreds of small NARs with an fsync
// per file (and per directory) spends more time in the journal than in
// compression: each fsync is a journal commit. With Dir.GroupCommit, NAR
// files are renamed into place unsynced and narinfos wait in a batch; Sync
// then makes every file written so far durable with one syncfs(2), and only
// then publishes the batch's narinfos. A narinfo thus still appears only
// after its NAR is durable, and a crash leaves at worst unsynced NAR files
// without narinfos, which the next write replaces.

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

func (d *Dir) queueNarInfo(name string, data []byte) error {
	b := &d.batch
	b.mu.Lock()
	if err := b.err; err != nil {
		b.mu.Unlock()
		return err
	}
	if b.timer == nil {
		b.timer = time.AfterFunc(batchDelay, func() { d.Sync() })
	}
	b.pending = append(b.pending, pendingFile{name, data})
	full := len(b.pending) >= batchMax
	b.mu.Unlock()
	if full {
		return d.Sync()
	}
	return nil
}

// Sync makes every file written so far durable and publishes the narinfos
// that GroupCommit held back, durably too. Without GroupCommit it has
// nothing to do. A writer must call it before it writes what vouches for
// the files (a manifest).
func (d *Dir) Sync() error {
	if !d.GroupCommit {
		return nil
	}
	b := &d.batch
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	if b.err == nil {
		b.err = d.publish(b.pending)
		b.pending = nil
	}
	return b.err
}

// publish makes every file written so far durable, then writes pending
// and makes it durable too.
func (d *Dir) publish(pending []pendingFile) error {
	if err := d.syncfs(); err != nil {
		return err
	}
	if len(pending) == 0 {
		return nil
	}
	for _, p := range pending {
		if err := d.writeFile(p.name, p.data, false); err != nil {
			return err
		}
	}
	return d.syncfs()
}

// syncfs flushes the file system that holds the cache.
func (d *Dir) syncfs() error {
	f, err := d.root.Open(".")
	if err != nil {
		return fmt.Errorf("sync %s: %w", d.path, err)
	}
	defer f.Close()
	if err := syncFS(f); err != nil {
		return fmt.Errorf("sync %s: %w", d.path, &os.PathError{Op: "syncfs", Path: d.path, Err: err})
	}
	return nil
}
