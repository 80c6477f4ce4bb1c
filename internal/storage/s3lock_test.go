package storage_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storage/s3test"
)

// TestS3LockLost: a holder cut off from its bucket gives its lock up
// before another process may take it as stale. Its context ends with a
// LockLostError naming the lock, a temporary failure; nothing it does
// writes afterwards, and its lock object is put no more. A shorter
// outage costs nothing.
func TestS3LockLost(t *testing.T) {
	const refresh, stale = time.Second, 4 * time.Second
	giveUp := stale - refresh
	srv := s3test.Start(t)
	bucket := srv.Bucket(t)
	// The holder's requests go through p, which cuts it off.
	p := s3test.StartProxy(t, srv.Endpoint)
	open := func(url string) *storage.S3 {
		b, err := storage.Open(t.Context(), url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		s := b.(*storage.S3)
		s.LockRefresh, s.LockStale = refresh, stale
		return s
	}
	direct := open(bucket)
	holder := open(p.Via(bucket))

	held, unlock, err := holder.Lock(t.Context(), storage.LockOptions{Command: "import b.tar"})
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	defer p.Restore(t, false) // for unlock, if the test fails while cut
	var doneAt atomic.Pointer[time.Time]
	go func() {
		<-held.Done()
		now := time.Now()
		doneAt.Store(&now)
	}()
	// The holder's work: a write every 50ms while it holds the lock.
	var wrote atomic.Int64
	worked := make(chan struct{})
	go func() {
		defer close(worked)
		for i := 0; held.Err() == nil; i++ {
			if holder.Put(held, fmt.Sprintf("w/%d", i), strings.NewReader("x"), 1) == nil {
				wrote.Add(1)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	list := func(dir string) []string {
		var names []string
		for info, err := range direct.List(t.Context(), dir) {
			if err != nil {
				t.Fatal(err)
			}
			names = append(names, info.Name)
		}
		return names
	}

	// Cut for less than giveUp: refreshed again once mended.
	p.Blackhole(t)
	time.Sleep(giveUp / 2)
	p.Restore(t, false)
	time.Sleep(2 * refresh)
	if err := context.Cause(held); err != nil {
		t.Fatalf("held after an outage of %v, with %v to go stale: ended: %v", giveUp/2, stale, err)
	}
	if wrote.Load() == 0 {
		t.Fatal("the holder wrote nothing while it held the lock")
	}

	// Cut for good: another process's gc waits for the holder's lock to
	// go stale and takes it.
	p.Blackhole(t)
	cut := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, unlockGC, err := direct.Lock(ctx, storage.LockOptions{Exclusive: true, Command: "gc"})
	if err != nil {
		t.Fatalf("gc's lock once the cut-off holder's went stale: %v", err)
	}
	defer unlockGC()
	took := time.Since(cut)
	at := doneAt.Load()
	if at == nil {
		t.Fatalf("gc took the lock %v after the cut, while the holder's context went on", took)
	}
	t.Logf("the holder's context ended %v after the cut, gc took the lock %v after it", at.Sub(cut), took)
	if ended := at.Sub(cut); ended > giveUp+time.Second || ended < giveUp-refresh-time.Second/2 {
		t.Errorf("holder's context ended %v after the cut; want about %v (%v less the last refresh's age)", ended, giveUp, giveUp)
	}
	lost := storage.LockLost(held)
	var le *storage.LockLostError
	if !errors.As(lost, &le) || !errors.Is(context.Cause(held), lost) {
		t.Fatalf("held ended with %v; want a *LockLostError", context.Cause(held))
	}
	if prefix := holder.String() + "/" + storage.LockDir + "/shared-"; !strings.HasPrefix(le.Lock, prefix) || le.For < giveUp || le.Err == nil {
		t.Errorf("LockLostError{Lock: %q, For: %v, Err: %v}; want the lock %s..., for %v or more, with the last refresh's failure", le.Lock, le.For, le.Err, prefix, giveUp)
	}
	if msg := lost.Error(); !strings.HasPrefix(msg, "lock "+le.Lock+": could not refresh for ") {
		t.Errorf("error %q; want it to name the lock and say it could not be refreshed", msg)
	}
	if !errors.Is(lost, storage.ErrUnavailable) || errors.Is(lost, context.Canceled) {
		t.Errorf("%v: want it to match ErrUnavailable (exit 75), and not context.Canceled (130)", lost)
	}

	// Nothing the holder started writes once mended, and its lock
	// object is not put again: gc's alone is there.
	<-worked
	before := list("w")
	p.Restore(t, false)
	if err := holder.Put(held, "w/after", strings.NewReader("x"), 1); err == nil {
		t.Error("a put with the lost lock's context: no error")
	}
	time.Sleep(2 * refresh)
	if after := list("w"); !slices.Equal(after, before) {
		t.Errorf("the holder's writes once its lock was lost and the network mended: %q, were %q", after, before)
	}
	if locks := list(storage.LockDir); len(locks) != 1 || !strings.Contains(locks[0], "/exclusive-") {
		t.Errorf("lock objects after the holder lost its lock: %q; want gc's alone", locks)
	}
}
