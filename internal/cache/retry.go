package cache

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/storage"
)

// RetryAttempts and RetryBackoff are the tries of a request to a binary
// cache over HTTP that failed transiently, unless its caller picks its
// own: OpenHTTP's of nix-cache-info, a planner's of narinfos and NARs
// (WithRetry), and check's of narinfos and hashed-mirror files. Nix
// retries them too.
const (
	RetryAttempts = 3
	RetryBackoff  = 500 * time.Millisecond
)

// WithRetry wraps src so that NarInfo and Open are tried up to attempts
// times (at least once) on transient errors: network failures and HTTP 5xx,
// 408 and 429. A connection refused, a host name that does not resolve,
// ErrNotFound, ErrCorrupt and anything else are returned at once. The
// wait starts at backoff and doubles; ctx ends it early. Open retries
// only the request, not a body that fails part way.
func WithRetry(src Source, attempts int, backoff time.Duration) Source {
	return &retrySource{src: src, attempts: max(attempts, 1), backoff: backoff}
}

type retrySource struct {
	src      Source
	attempts int
	backoff  time.Duration
}

func (r *retrySource) NarInfo(ctx context.Context, hashPart string) (*narinfo.NarInfo, error) {
	return Retry(ctx, r.attempts, r.backoff, func() (*narinfo.NarInfo, error) { return r.src.NarInfo(ctx, hashPart) })
}

func (r *retrySource) Open(ctx context.Context, url string) (io.ReadCloser, error) {
	return Retry(ctx, r.attempts, r.backoff, func() (io.ReadCloser, error) { return r.src.Open(ctx, url) })
}

// Retry calls f until it succeeds or fails for good, as WithRetry
// tries a Source's requests: for other requests to a binary cache.
func Retry[T any](ctx context.Context, attempts int, backoff time.Duration, f func() (T, error)) (T, error) {
	wait := backoff
	for i := 1; ; i++ {
		v, err := f()
		if err == nil || i >= attempts || !transient(err) {
			return v, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return v, err
		case <-t.C:
		}
		wait *= 2
	}
}

// transient reports whether err may go away on retry: a request that got
// no answer or an HTTP 5xx, 408 or 429, but never a miss, corruption or
// cancellation, nor a connection refused or a host name that does not
// resolve: nothing listening, or no such host, does not change in the
// seconds the tries take, and the retry policy of buckets
// (storage.Refused) does not try those again either.
func transient(err error) bool {
	if err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrCorrupt) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || storage.Refused(err) {
		return false
	}
	var se *StatusError
	if errors.As(err, &se) {
		return se.Code >= 500 || se.Code == http.StatusRequestTimeout || se.Code == http.StatusTooManyRequests
	}
	var ne *NetError
	var nerr net.Error
	return errors.As(err, &ne) || errors.As(err, &nerr) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}
