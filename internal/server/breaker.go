package server

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/storage"
)

// A layer whose store stops answering is skipped for a while, so that a
// dead store costs one request's timeout, not one per request.
const (
	minBackoff = time.Second
	maxBackoff = 30 * time.Second
)

// breaker is a remote layer's backend that, after a request its store
// did not answer (storage.ErrUnavailable: refused, timed out, not
// resolved, or a 502, 503 or 504), takes the layer down: for a back-off
// of minBackoff, doubling after each failed probe up to maxBackoff,
// requests fail at once with that error. After the back-off one request
// at a time goes through as a probe (the others still fail at once), and
// the first probe the store answers, whatever it says (a miss and a
// refusal are answers), brings the layer back up. A request whose client
// went away proves nothing either way.
type breaker struct {
	storage.Backend
	dir string // as configured, for messages
	now func() time.Time
	log *slog.Logger

	down  atomic.Bool   // read without mu by every request
	trips atomic.Uint64 // times it went down, for /metrics

	mu      sync.Mutex
	since   time.Time     // when it went down
	backoff time.Duration // the current back-off
	until   time.Time     // no probe before then
	probing bool          // a probe is under way
	cause   error         // the failure that took it down
}

func newBreaker(b storage.Backend, dir string, now func() time.Time, log *slog.Logger) *breaker {
	return &breaker{Backend: b, dir: dir, now: now, log: log}
}

// enter lets a request through, as a probe if the layer is down, or
// fails it at once.
func (b *breaker) enter() (probe bool, err error) {
	if !b.down.Load() {
		return false, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.down.Load() {
		return false, nil
	}
	if b.probing || b.now().Before(b.until) {
		return false, fmt.Errorf("skip %s: down since %s: %w", b.dir, b.since.Format(time.TimeOnly), b.cause)
	}
	b.probing = true
	return true, nil
}

// leave records how a request that enter let through ended.
func (b *breaker) leave(ctx context.Context, probe bool, err error) {
	failed := errors.Is(err, storage.ErrUnavailable)
	if !probe && !failed {
		return // the common case: up, and it answered
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if probe {
		b.probing = false
	}
	now := b.now()
	switch {
	case ctx.Err() != nil:
		// The client went away: the next request probes.
	case failed && !b.down.Load():
		b.down.Store(true)
		b.trips.Add(1)
		b.since, b.backoff, b.until, b.cause = now, minBackoff, now.Add(minBackoff), err
		b.log.Warn("layer down: skipping it", "dir", b.dir, "retry_in", b.backoff, "err", err)
	case failed && probe:
		b.backoff = min(2*b.backoff, maxBackoff)
		b.until, b.cause = now.Add(b.backoff), err
		b.log.Debug("layer still down", "dir", b.dir, "retry_in", b.backoff, "err", err)
	case probe:
		b.down.Store(false)
		b.cause = nil
		b.log.Warn("layer back up", "dir", b.dir, "down_for", now.Sub(b.since).Round(time.Millisecond))
	}
	// Otherwise a request begun before the layer went down ended: it
	// is down already, and an answer from before proves nothing.
}

// up reports whether the layer is up, for /metrics.
func (b *breaker) up() bool { return !b.down.Load() }

// guard runs a request through the breaker.
func guard[T any](ctx context.Context, b *breaker, do func() (T, error)) (T, error) {
	probe, err := b.enter()
	if err != nil {
		var zero T
		return zero, err
	}
	v, err := do()
	b.leave(ctx, probe, err)
	return v, err
}

func (b *breaker) Open(ctx context.Context, name string) (storage.File, error) {
	return guard(ctx, b, func() (storage.File, error) { return b.Backend.Open(ctx, name) })
}

func (b *breaker) Stat(ctx context.Context, name string) (storage.Info, error) {
	return guard(ctx, b, func() (storage.Info, error) { return b.Backend.Stat(ctx, name) })
}

func (b *breaker) List(ctx context.Context, dir string) iter.Seq2[storage.Info, error] {
	return func(yield func(storage.Info, error) bool) {
		probe, err := b.enter()
		if err != nil {
			yield(storage.Info{}, err)
			return
		}
		var failed error
		defer func() { b.leave(ctx, probe, failed) }()
		for fi, err := range b.Backend.List(ctx, dir) {
			if err != nil {
				failed = err
			}
			if !yield(fi, err) {
				return
			}
		}
	}
}
