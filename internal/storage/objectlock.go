package storage

import (
	"context"
	"errors"
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
// A holder puts its object again every Refresh (lockTiming); an object
// whose last-modified time (the store's clock, compared with the store's
// time on the new object) is more than Stale old belongs to a process
// that died, and is removed. So a holder that cannot put its object again
// for that long loses its lock to the next that looks, and a gc could
// then run beside its import: it gives the lock up first, a Refresh short
// of Stale, ending the context its work runs under (restic's answer).

// LockDir is where lock objects live.
const LockDir = "nix-airgap/locks"

// lockPollMax is the longest wait between two tries to take a lock.
const lockPollMax = 2 * time.Second

// lockTiming is when a bucket's lock objects are put again and go stale.
type lockTiming struct {
	refresh, stale time.Duration
}

// giveUp is how long a holder goes on without putting its object again:
// a refresh interval short of stale, a margin for the clocks' and the
// store's time resolution, and for work in flight to stop.
func (t lockTiming) giveUp() time.Duration { return t.stale - t.refresh }

// LockLostError is the cause the context of a lock's holder ends with
// when its lock object could not be put again for so long that another
// process might take it as stale: the work under the lock stops before
// anything else could run beside it. It matches ErrUnavailable: nothing
// is wrong but the store's answer, and trying again later will do.
type LockLostError struct {
	// Lock names the lock object, s3://BUCKET/nix-airgap/locks/NAME.
	Lock string
	// For is how long it went without being put again.
	For time.Duration
	// Err is the last refresh's failure; nil if the process was
	// suspended past its time rather than refused.
	Err error
}

func (e *LockLostError) Error() string {
	s := fmt.Sprintf("lock %s: could not refresh for %v, so another process may take it as stale: gave it up and stopped", e.Lock, e.For.Round(time.Second))
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *LockLostError) Is(target error) bool { return target == ErrUnavailable }

// LockLost is why the context held, from Lock, ended, if its lock was
// lost (a *LockLostError), else nil: what the holder's work failed of
// then failed because its lock was lost, and should say that.
func LockLost(held context.Context) error {
	var lost *LockLostError
	if errors.As(context.Cause(held), &lost) {
		return lost
	}
	return nil
}

func objectLock(ctx context.Context, b Backend, opts LockOptions, timing lockTiming) (context.Context, func() error, error) {
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
		// The object is at most as old as this, by the store's clock.
		putAt := time.Now().Round(0)
		if err := put(ctx); err != nil {
			// A request cut short may still have made the object.
			removeQuietly(b, name)
			return nil, nil, fmt.Errorf("lock %s: %w", b, UnwrapPath(err))
		}
		holder, conflict, err := lockConflict(ctx, b, name, opts.Exclusive, timing.stale)
		if err != nil {
			removeQuietly(b, name)
			return nil, nil, fmt.Errorf("lock %s: %w", b, UnwrapPath(err))
		}
		if !conflict {
			held, unlock := refreshLock(ctx, b, name, put, putAt, timing)
			return held, unlock, nil
		}
		if err := removeQuietly(b, name); err != nil {
			return nil, nil, fmt.Errorf("lock %s: %w", b, UnwrapPath(err))
		}
		// A holder not read because ctx ended is no holder to tell of.
		if err := ctx.Err(); err != nil {
			return nil, nil, fmt.Errorf("lock %s: %w", b, UnwrapPath(err))
		}
		if !told && opts.Waiting != nil {
			told = true
			opts.Waiting(holder)
		}
		// Jitter, so that two that raced do not race again.
		d := wait/2 + rand.N(wait)
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("lock %s: %w", b, ctx.Err())
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
func lockConflict(ctx context.Context, b Backend, mine string, exclusive bool, stale time.Duration) (holder string, conflict bool, err error) {
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
		if me.ModTime.Sub(info.ModTime) > stale {
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

// refreshLock puts the lock object again every timing.refresh until the
// returned unlock removes it; putAt is when it was put first. held is
// ctx, ended with a *LockLostError when the object could not be put
// again for timing.giveUp (and is then put no more), or by unlock.
func refreshLock(ctx context.Context, b Backend, name string, put func(context.Context) error, putAt time.Time, timing lockTiming) (held context.Context, unlock func() error) {
	held, lose := context.WithCancelCause(ctx)
	stop, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Wall-clock times (Round(0)): the store's clock went on while
		// this host was suspended, the monotonic one may not have.
		last := putAt
		var lastErr error
		t := time.NewTimer(timing.refresh)
		defer t.Stop()
		for {
			select {
			case <-stop.Done():
				return
			case <-t.C:
			}
			start := time.Now().Round(0)
			deadline := last.Add(timing.giveUp())
			if !start.Before(deadline) {
				lose(&LockLostError{Lock: fmt.Sprintf("%s/%s", b, name), For: start.Sub(last), Err: lastErr})
				return
			}
			// No try outlasts the deadline, retries and all.
			try, end := context.WithDeadline(stop, deadline)
			err := put(try)
			end()
			if stop.Err() != nil {
				return
			}
			wait := timing.refresh
			if err == nil {
				last, lastErr = start, nil
			} else {
				// Tried again sooner, while there is time left.
				lastErr = UnwrapPath(err)
				wait = min(timing.refresh/4, time.Until(deadline))
			}
			t.Reset(wait)
		}
	}()
	return held, func() error {
		cancel()
		<-done
		lose(nil)
		return removeQuietly(b, name)
	}
}
