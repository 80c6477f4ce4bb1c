// Package nixstore serves the local Nix store as a binary cache, as
// harmonia and nix-serve do. It is the one part of the offline half that
// needs Nix on the machine.
//
// Narinfos come from the store's metadata, asked of Nix through
// internal/nixcli. Requests that arrive while a query runs wait for the
// next one, which asks about all of them at once and about their
// closures, since a client asks for every reference next; the answers
// are kept in memory, signed. NARs are dumped from the store on the fly
// (internal/nar), compressed with zstd or not at all, and streamed, never
// held whole. Flat fixed-output paths are found by the hash of their file,
// for a hashed mirror.
//
// Open also starts asking Nix about every path in the store, in the
// background, so that even the first request for a path is answered from
// memory once that is done. What is in memory stays true: a listing of
// the store directory, read again whenever the directory's modification
// time moves, tells which paths are still there, so a path Nix collected
// is a miss at once.
//
// A file each: narinfo.go answers narinfos (from memory, else a batched
// query), listing.go keeps the listing, nar.go dumps NARs and mirror.go
// finds flat files and runs the scan.
package nixstore

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Options configure Open. The zero value serves zstd NARs and unsigned
// narinfos (but for the signatures the store holds), asking the nix on
// PATH.
type Options struct {
	// Nix runs the nix programs; nil means a Runner with the process's
	// environment.
	Nix *nixcli.Runner
	// Compression is how NARs are served: compression.Zstd (or "") or
	// compression.None.
	Compression string
	// Key, if set, signs every narinfo, so that clients need to trust
	// only it.
	Key *signing.SecretKey
	// MemoryBytes bounds the narinfos kept in memory; 0 means 128 MiB,
	// about 200,000 of them.
	MemoryBytes int
	// Log receives warnings; nil discards them.
	Log *slog.Logger
}

const (
	defaultMemoryBytes = 128 << 20
	// queryTimeout bounds one nix query, which no request cancels: other
	// requests wait for the same answer.
	queryTimeout = 5 * time.Minute
	// racyWindow: a listing taken this soon after the directory last
	// changed may miss a change made within the same timestamp tick, so
	// it is read again (git's "racy" index entries).
	racyWindow = 100 * time.Millisecond
	// nixParallel is how many nix queries a scan of the store runs at once.
	nixParallel = 2
	// zstdChunk is the input per parallel zstd frame of a served NAR: a
	// few MiB in flight per request, for a ratio within a few percent of
	// one frame.
	zstdChunk = 2 << 20
)

// Store is the local Nix store as a binary cache. It is safe for
// concurrent use.
type Store struct {
	nix    *nixcli.Runner
	dir    storepath.Dir
	comp   string
	ext    string
	key    *signing.SecretKey
	log    *slog.Logger
	memMax int

	listMu sync.Mutex
	list   *listing // immutable once made

	mu      sync.Mutex
	entries map[string]*entry // by hash part
	mem     int
	flat    map[string]string // flat file hash (flatKey) -> hash part
	scanned map[string]bool   // hash parts whose CA the mirror knows
	scanGen uint64            // the listing the last scan covered

	batchMu sync.Mutex
	next    *batch
	running bool

	scanMu sync.Mutex

	stop   context.CancelFunc // stops the background scan
	warmed chan struct{}      // closed when it ends
}

// Open asks Nix for its store directory and readies the store to serve.
func Open(ctx context.Context, opts Options) (*Store, error) {
	s := &Store{
		nix:     opts.Nix,
		comp:    opts.Compression,
		key:     opts.Key,
		log:     opts.Log,
		memMax:  opts.MemoryBytes,
		entries: map[string]*entry{},
		flat:    map[string]string{},
		scanned: map[string]bool{},
	}
	if s.nix == nil {
		s.nix = &nixcli.Runner{}
	}
	if s.comp == "" {
		s.comp = compression.Zstd
	}
	if s.comp != compression.Zstd && s.comp != compression.None {
		return nil, fmt.Errorf("serve the nix store: compression %q: want %s or %s", s.comp, compression.Zstd, compression.None)
	}
	s.ext, _ = compression.Ext(s.comp)
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.memMax == 0 {
		s.memMax = defaultMemoryBytes
	}
	dir, err := s.nix.StoreDir(ctx)
	if err != nil {
		return nil, fmt.Errorf("serve the nix store: %w", err)
	}
	s.dir = dir
	if _, err := s.current(); err != nil {
		return nil, fmt.Errorf("serve the nix store: %w", err)
	}
	ctx, s.stop = context.WithCancel(context.WithoutCancel(ctx))
	s.warmed = make(chan struct{})
	go func() {
		defer close(s.warmed)
		if err := s.scan(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("cannot read the nix store's metadata ahead: paths are asked about as requested", "err", err)
		}
	}()
	return s, nil
}

// Ready is closed once the background scan Open started is done.
func (s *Store) Ready() <-chan struct{} { return s.warmed }

// Close stops the background scan Open started, and waits for it.
func (s *Store) Close() error {
	s.stop()
	<-s.warmed
	return nil
}

// Dir is the store directory.
func (s *Store) Dir() storepath.Dir { return s.dir }

// errNotFound wraps cache.ErrNotFound, which callers test for.
func errNotFound(what string) error { return fmt.Errorf("%s: %w", what, cache.ErrNotFound) }
