// Package gc collects the garbage of a long-lived cache: it keeps the
// closures of the last bundles imported, each in its bundle's mode, or of
// given root paths, and what half-imported volume sets need, as Nix keeps
// a running build's temp roots, and removes everything else, as attic and
// Cachix do for theirs.
//
// Removal keeps the cache consistent at every moment, so that a kill
// anywhere leaves a cache that serves and verifies, and a second run
// finishes the job:
//
//  1. narinfos, each before the narinfos it refers to, so that no
//     reference ever dangles, synced as they go, so that none comes
//     back once its NAR is gone;
//  2. the NAR files no narinfo left names (several narinfos may share
//     one), each cache.RemovalGrace after the narinfos that named it are
//     durably gone, so that a running serve has stopped answering them
//     and a client that got one has fetched its NAR, and build logs no
//     path left needs; this overlaps step 1, which syncs as it goes;
//  3. the entries of the flake registry that lock a removed path; the
//     channels that no bundle left installed and no kept bundle needs
//     (each record before its tarball, so that an inventory never lists
//     a channel the cache lacks), and tarballs no record names; and the
//     records of bundles none of whose paths is left, each before its
//     signature; each kind's removal synced before the next begins;
//  4. the temp files writers killed before they renamed them left
//     (storage.Sweeper), which only the exclusive lock tells from a live
//     writer's, synced too.
//
// It runs under the cache's exclusive lock, so no import runs meanwhile,
// and works through the cache's storage.Backend, a directory or an object
// store alike, in that order.
//
// Collect reads the cache (read.go), decides what goes (plan.go) and
// removes it (remove.go).
package gc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/progress"
	"github.com/nix-airgap/nix-airgap/internal/storage"
)

// Options configure Collect. Roots is required.
type Options struct {
	Roots Roots
	// DryRun reports what would go and changes nothing.
	DryRun bool
	// Grace is how long NAR files outlive the narinfos that named them;
	// 0 means cache.RemovalGrace, a negative value none (nothing serves
	// the cache).
	Grace time.Duration
	// Jobs is how many files are read or removed at once; 0 means 8 per
	// CPU, as most of the time is spent waiting for the file system.
	Jobs int
	// Log receives progress at debug level; nil discards it.
	Log *slog.Logger
	// Progress, when set, hears how far gc has got.
	Progress Progress
}

// Progress hears how far gc has got, as bundle.Progress does.
type Progress interface {
	Phase(name string, paths int, bytes int64)
	Step(path, source string, bytes int64)
}

// The phases Progress hears.
const (
	PhaseLock   = bundle.PhaseLock
	PhaseRead   = "read"
	PhaseRemove = "remove"
)

type nopProgress struct{}

func (nopProgress) Phase(string, int, int64)   {}
func (nopProgress) Step(string, string, int64) {}

// Report is what gc removed or, for a dry run, would remove.
type Report struct {
	Cache  string `json:"cache"`
	DryRun bool   `json:"dryRun"`
	// Roots says what was kept, in words.
	Roots       string      `json:"roots"`
	KeptBundles []BundleRef `json:"keptBundles"`
	Kept        Count       `json:"kept"`
	Removed     Removed     `json:"removed"`
	// RemovedPaths are the store paths whose narinfos went, sorted.
	RemovedPaths []string `json:"removedPaths"`
	// HalfImported are the volume sets some of whose volumes the cache
	// has imported: gc keeps what they need besides its roots.
	HalfImported []HalfImportedRef `json:"halfImportedSets,omitempty"`
	// MissingRoots are root paths the cache has no narinfo for.
	MissingRoots []string         `json:"missingRoots,omitempty"`
	Warnings     []string         `json:"warnings"`
	Elapsed      progress.Seconds `json:"seconds"`
}

// Count is a number of store paths and the bytes of their files.
type Count struct {
	Paths int   `json:"paths"`
	Bytes int64 `json:"bytes"`
}

// Removed counts what went: Paths narinfos, and Bytes of every file
// removed (narinfos, NAR files, logs, records and temp files).
type Removed struct {
	Count
	NarFiles        int `json:"narFiles"`
	Logs            int `json:"logs"`
	Records         int `json:"records"`
	RegistryEntries int `json:"registryEntries"`
	// TempFiles are the hidden temp files, of TempBytes, that writers
	// killed before they renamed them left (in an object store, the
	// incomplete multipart uploads of killed writers).
	TempFiles int   `json:"tempFiles"`
	TempBytes int64 `json:"tempBytes"`
	// Channels are the channels removed with the bundles that installed
	// them, by name.
	Channels []string `json:"channels,omitempty"`
}

// BundleRef names a kept bundle.
type BundleRef struct {
	ID       string    `json:"id"`
	Created  time.Time `json:"created"`
	Imported time.Time `json:"imported"`
	Mode     string    `json:"mode"`
	Targets  []string  `json:"targets"`
	Paths    int       `json:"paths"`
}

// HalfImportedRef names a volume set whose import is under way.
type HalfImportedRef struct {
	ID       string `json:"id"`
	Volumes  int    `json:"volumes"` // 0 when its manifest cannot be read
	Imported []int  `json:"imported"`
	// Unknown, if set, says why the volumes imported so far are not
	// known.
	Unknown string `json:"unknown,omitempty"`
}

// ErrDamaged reports corrupt narinfos whose paths gc must keep: their
// references are unknown, so collecting could remove what they need.
// import --repair mends them. A narinfo gc could not read at all is no
// damage, and no ErrDamaged.
var ErrDamaged = errors.New("damaged narinfos")

// ErrNoRoots reports root paths of which the cache has none, where gc
// would remove everything: a roots file that is empty, or of another
// cache, is more likely a mistake than a wish.
var ErrNoRoots = errors.New("no root path in the cache")

// Collect collects the garbage of the cache at location, a directory or
// an object store URL, as the package doc says.
func Collect(ctx context.Context, location string, opts Options) (*Report, error) {
	start := time.Now()
	if opts.Roots.Paths == nil && opts.Roots.KeepBundles < 1 {
		return nil, fmt.Errorf("gc %s: keep at least one bundle, or give root paths", location)
	}
	if opts.Jobs <= 0 {
		opts.Jobs = 8 * runtime.GOMAXPROCS(0)
	}
	if opts.Grace == 0 {
		opts.Grace = cache.RemovalGrace
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Progress == nil {
		opts.Progress = nopProgress{}
	}
	if err := bundle.CheckCache(location, bundle.CacheOnly); err != nil {
		// Refused before the lock file is written into it.
		return nil, fmt.Errorf("gc %s: %w", location, err)
	}
	b, err := storage.Open(ctx, location)
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err) // it names location
	}
	defer b.Close()
	// Read before the lock is taken: a location without nix-cache-info
	// is no cache to write a lock object into.
	c, err := cache.OpenBackend(ctx, b)
	if err != nil {
		return nil, bundle.CacheOpenError("gc", location, err)
	}
	defer c.Close()
	// Only the exclusive lock keeps writers out: what gc removes
	// depends on it.
	exclusive := !opts.DryRun
	held, unlock, err := storage.Lock(ctx, b, storage.LockOptions{
		Exclusive: exclusive,
		ReadOnly:  opts.DryRun,
		Command:   "gc",
		Waiting: func(holder string) {
			opts.Log.Warn(storage.WaitingFor(holder, b))
			opts.Progress.Phase(PhaseLock, 0, 0)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err) // it names b, or its lock file
	}
	defer unlock()

	// gc stops if its lock is lost (failed says so).
	g := &collector{ctx: held, b: b, c: c, opts: opts, setURLs: map[string]bool{}, rep: &Report{
		Cache: location, DryRun: opts.DryRun, Roots: opts.Roots.String(),
		// Empty lists are [] in the JSON form, not null.
		KeptBundles: []BundleRef{}, RemovedPaths: []string{}, Warnings: []string{},
	}}
	if err := g.plan(); err != nil {
		return nil, failed(held, b, err)
	}
	if exclusive {
		if err := g.remove(); err != nil {
			return nil, failed(held, b, err)
		}
	}
	if err := g.sweep(start, !exclusive); err != nil {
		return nil, failed(held, b, err)
	}
	// What a lost lock cut short may have been only warned of.
	if lost := storage.LockLost(held); lost != nil {
		return nil, fmt.Errorf("gc: %w", lost)
	}
	g.rep.Elapsed = progress.Seconds(time.Since(start))
	return g.rep, nil
}

// failed is gc's error err in b, which names b once: an error of one of
// its files names the file, and so b, already. Work cut short because
// the lock held was lost fails of that.
func failed(held context.Context, b storage.Backend, err error) error {
	if lost := storage.LockLost(held); lost != nil {
		return fmt.Errorf("gc: %w", lost)
	}
	if errors.As(err, new(*fs.PathError)) {
		return fmt.Errorf("gc: %w", err)
	}
	return fmt.Errorf("gc %s: %w", b, err)
}

// collector is one run of gc.
type collector struct {
	ctx  context.Context
	b    storage.Backend
	c    *cache.Cache
	opts Options
	rep  *Report

	graph   graph
	records []*record
	sigs    []string // record signatures, by name
	sets    []bundle.HalfImported
	keepAll bool // a half-imported set's needs are unknown
	// setURLs are the files the half-imported sets' manifests name.
	setURLs map[string]bool
	keep    map[string]bool

	// What goes, in order.
	narinfos       [][]string     // hash parts, level by level: referrers first
	files          []storage.Info // NAR files and logs
	channelRecords []string
	channelFiles   []string // tarballs
	recordFiles    []string // bundle records
	sigFiles       []string // their signatures
	registry       []byte   // the new flake-registry.json, or nil
}

// each runs f for 0..n-1 on Jobs workers, which take the next index
// as they finish one: a goroutine each for 100,000 narinfos would cost
// more than reading them. The first error stops them and is returned.
func (g *collector) each(n int, f func(ctx context.Context, i int) error) error {
	return g.eachCtx(g.ctx, n, f)
}

// eachCtx is each under ctx.
func (g *collector) eachCtx(ctx context.Context, n int, f func(ctx context.Context, i int) error) error {
	eg, ctx := errgroup.WithContext(ctx)
	var next atomic.Int64
	for range min(g.opts.Jobs, n) {
		eg.Go(func() error {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return ctx.Err()
				}
				if err := f(ctx, i); err != nil {
					return err
				}
			}
		})
	}
	return eg.Wait()
}
