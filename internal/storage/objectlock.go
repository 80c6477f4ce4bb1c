package storage

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path"
	"strings"
	"time"
)

// Locks in an object store, where nothing like flock exists: restic's
// model. Each holder puts an object of its own under LockDir, named
// shared-RANDOM or exclusive-RANDOM, then lists the others: a shared
// holder goes on unless an exclusive lock is there, an exclusive one only
// if no other lock is. A holder that finds a conflict removes its object
// and tries again later. Two that race both see each other and both back
// off, so two holders can never both go on (the store lists what was
// written before, as S3 has since 2020), though both may wait a round.
//
// A holder puts its object again every lockRefresh; an object whose
// last-modified time (the store's clock, compared with the store's time
// on the new object) is more than lockStale old belongs to a process that
// died, and is removed.

// LockDir is where lock objects live.
const LockDir = "nix-airgap/locks"

// Lock timing.
const (
	lockRefresh = time.Minute
	lockStale   = 5 * time.Minute
	lockPollMax = 2 * time.Second
)

func objectLock(ctx context.Context, b Backend, opts LockOptions) (func() error, error) {
	kind := "shared-"
	if opts.Exclusive {
		kind = "exclusive-"
	}
	name := path.Join(LockDir, kind+randomHex())
	data := newLockRecord(opts)
	put := func(ctx context.Context) error {
		return b.Put(ctx, name, strings.NewReader(string(data)), int64(len(data)))
	}
	told := false
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, lockPollMax) {
		if err := put(ctx); err != nil {
			// A request cut short may still have made the object.
			removeQuietly(b, name)
			return nil, fmt.Errorf("lock %s: %w", b, UnwrapPath(err))
		}
		holder, conflict, err := lockConflict(ctx, b, name, opts.Exclusive)
		if err != nil {
			removeQuietly(b, name)
			return nil, fmt.Errorf("lock %s: %w", b, UnwrapPath(err))
		}
		if !conflict {
			return refreshLock(b, name, put), nil
		}
		if err := removeQuietly(b, name); err != nil {
			return nil, fmt.Errorf("lock %s: %w", b, UnwrapPath(err))
		}
		// A holder not read because ctx ended is no holder to tell of.
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("lock %s: %w", b, UnwrapPath(err))
		}
		if !told && opts.Waiting != nil {
			told = true
			opts.Waiting(holder)
		}
		// Jitter, so that two that raced do not race again.
		d := wait/2 + rand.N(wait)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("lock %s: %w", b, ctx.Err())
		case <-time.After(d):
		}
	}
}

// removeQuietly removes a lock object even once the caller's context
// ended, within a minute.
func removeQuietly(b Backend, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return b.Remove(ctx, name)
}

// lockConflict reports whether a lock other than mine keeps me from
// going on, and who holds it. It removes stale locks.
func lockConflict(ctx context.Context, b Backend, mine string, exclusive bool) (holder string, conflict bool, err error) {
	me, err := b.Stat(ctx, mine)
	if err != nil {
		return "", false, err
	}
	for info, err := range b.List(ctx, LockDir) {
		if err != nil {
			return "", false, err
		}
		if info.Dir || info.Name == mine {
			continue
		}
		if me.ModTime.Sub(info.ModTime) > lockStale {
			b.Remove(ctx, info.Name)
			continue
		}
		if !exclusive && !strings.HasPrefix(path.Base(info.Name), "exclusive-") {
			continue
		}
		conflict = true
		if holder == "" {
			if data, _, err := ReadFile(ctx, b, info.Name, 64<<10); err == nil {
				holder = lockHolder(data)
			}
		}
	}
	return holder, conflict, nil
}

// refreshLock puts the lock object again every lockRefresh until the
// returned unlock removes it.
func refreshLock(b Backend, name string, put func(context.Context) error) func() error {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(lockRefresh)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				put(ctx)
			}
		}
	}()
	return func() error {
		cancel()
		<-done
		return removeQuietly(b, name)
	}
}
