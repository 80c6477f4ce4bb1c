package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/cache"
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
//
// A layer whose store did not answer at start begins down (startDown),
// with what serve still has to read of it: the probe runs that first,
// and a store that answers it with anything but what serve needs (another
// store dir, no nix-cache-info, a refusal) leaves the layer out for good,
// a miss to every request, as a layer not configured at all.
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
	// admit, until it has succeeded, is run by a probe before its
	// request.
	admit func(context.Context) error
	out   error // what requests to a layer left out get: errLeftOut
}

// errLeftOut is what every request to a layer left out gets: a miss.
var errLeftOut = fmt.Errorf("left out: %w", fs.ErrNotExist)

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
	if b.out != nil {
		return false, b.out
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
		b.trip(err)
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

// trip takes the layer down, with mu held.
func (b *breaker) trip(err error) {
	now := b.now()
	b.down.Store(true)
	b.trips.Add(1)
	b.since, b.backoff, b.until, b.cause = now, minBackoff, now.Add(minBackoff), err
}

// startDown takes down a layer whose store did not answer at start with
// err; admit reads what serve still needs of it once it answers.
func (b *breaker) startDown(err error, admit func(context.Context) error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.trip(err)
	b.admit = admit
	b.log.Warn("layer down at start: serving the others, reading it once its store answers", "dir", b.dir, "retry_in", b.backoff, "err", err)
}

// probe sends a probe if the layer is down and its back-off is over, as
// a request would, so that /metrics, which calls it, tells a store come
// back without a client asking first. Anything the store answers brings
// the layer up; no answer within probeWait proves nothing.
func (b *breaker) probe(ctx context.Context) {
	if b.up() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, probeWait)
	defer cancel()
	guard(ctx, b, func() (storage.Info, error) { return b.Backend.Stat(ctx, cache.CacheInfoFile) })
}

// probeWait bounds a probe from /metrics, which a scraper gives ten
// seconds by default (Prometheus' scrape_timeout).
const probeWait = 3 * time.Second

// up reports whether the layer is up, for /metrics.
func (b *breaker) up() bool { return !b.down.Load() }

// The states /metrics tells apart: a layer down is tried again, one left
// out is not until serve restarts.
const (
	stateUp      = "up"
	stateDown    = "down"
	stateLeftOut = "left_out"
)

// state is the layer's state, for /metrics.
func (b *breaker) state() string {
	if b.up() {
		return stateUp
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.out != nil {
		return stateLeftOut
	}
	return stateDown
}

// start begins a request, as enter does, and runs admit in a probe if it
// has not succeeded yet. A store that does not answer admit fails the
// probe; any other failure leaves the layer out.
func (b *breaker) start(ctx context.Context) (probe bool, err error) {
	probe, err = b.enter()
	if !probe {
		return probe, err
	}
	b.mu.Lock()
	admit := b.admit
	b.mu.Unlock()
	if admit == nil {
		return probe, nil
	}
	err = admit(ctx)
	if err == nil {
		b.mu.Lock()
		b.admit = nil
		b.mu.Unlock()
		return probe, nil
	}
	if errors.Is(err, storage.ErrUnavailable) || ctx.Err() != nil {
		b.leave(ctx, probe, err)
		return false, err
	}
	out := fmt.Errorf("skip %s: %w", b.dir, errLeftOut)
	b.mu.Lock()
	b.probing, b.out = false, out
	b.mu.Unlock()
	b.log.Error("layer left out: restart serve once it is fixed", "dir", b.dir, "err", err)
	return false, out
}

// guard runs a request through the breaker.
func guard[T any](ctx context.Context, b *breaker, do func() (T, error)) (T, error) {
	probe, err := b.start(ctx)
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
		probe, err := b.start(ctx)
		if errors.Is(err, errLeftOut) {
			return // it has nothing
		}
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
