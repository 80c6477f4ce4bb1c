package check

import (
	"time"

	"github.com/nix-airgap/nix-airgap/internal/cache"
)

// WithBackoff is s with its HTTP requests (narinfos, hashed-mirror
// files) tried as often as the project's retry policy says, but backoff
// apart: a test of a source
// that stops answering need not wait seconds.
func (s Source) WithBackoff(backoff time.Duration) Source {
	if s.http != nil {
		s.NarInfos = cache.WithRetry(s.http, cache.RetryAttempts, backoff)
	}
	if m, ok := s.Mirror.(*httpMirror); ok {
		fast := *m
		fast.backoff = backoff
		s.Mirror = &fast
	}
	return s
}
