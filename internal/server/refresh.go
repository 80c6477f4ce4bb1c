package server

import (
	"sync"
	"time"
)

// refresher holds a value built from files on disk and rebuilds it when
// their signature changes, checking at most once per interval: new imports
// show up within a second without a stat storm under load.
type refresher[T any] struct {
	now      func() time.Time
	interval time.Duration
	sign     func() string
	build    func() (T, error)

	mu      sync.Mutex
	checked time.Time
	built   bool
	sig     string
	val     T
}

func newRefresher[T any](now func() time.Time, interval time.Duration, sign func() string, build func() (T, error)) *refresher[T] {
	return &refresher[T]{now: now, interval: interval, sign: sign, build: build}
}

func (r *refresher[T]) get() (T, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if r.built && now.Sub(r.checked) < r.interval {
		return r.val, nil
	}
	r.checked = now
	sig := r.sign()
	if r.built && sig == r.sig {
		return r.val, nil
	}
	v, err := r.build()
	if err != nil {
		var zero T
		return zero, err
	}
	r.val, r.sig, r.built = v, sig, true
	return v, nil
}
