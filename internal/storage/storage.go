// Package storage keeps a binary cache's files: in a local directory (Dir)
// or an S3 bucket (S3). A Backend is restic's backend model cut to
// what a cache needs: open with seeking (ranged reads), put atomically,
// stat, list one directory, remove. Everything above it (the cache layout,
// NAR before narinfo, verification) lives in internal/cache and
// internal/bundle and works on any Backend; what only a local directory
// can do (rename a finished file into place, flock, group commit) is an
// optional capability that callers use when it is there.
//
// Every Backend passes the one conformance suite, storagetest.Run.
package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"net/http"
	"path"
	"strings"
	"time"
)

// Backend stores files by name. Names are slash-separated paths relative
// to the backend (see CheckName). A Backend is safe for concurrent use.
type Backend interface {
	// Open opens the file name for reading. A missing file gives an error
	// wrapping fs.ErrNotExist.
	Open(ctx context.Context, name string) (File, error)
	// Stat describes the file name; a missing file gives an error
	// wrapping fs.ErrNotExist. A directory is not a file.
	Stat(ctx context.Context, name string) (Info, error)
	// Put stores r's bytes as name, replacing any file there, atomically:
	// a reader sees the old content or the new, whole, never a part; a
	// Put that fails, or a crash during one, leaves the old content (or
	// nothing). size is r's length, or -1 when unknown; a reader that
	// ends before size bytes fails the Put. Put is durable when it
	// returns, unless the backend says otherwise (Dir.NoSync).
	Put(ctx context.Context, name string, r io.Reader, size int64) error
	// List yields the entries directly in the directory dir ("" for the
	// top), files and subdirectories, in byte order of their names.
	// A missing directory is empty.
	List(ctx context.Context, dir string) iter.Seq2[Info, error]
	// Remove removes the file name. Removing a missing file is not an
	// error, so that an interrupted removal can simply run again.
	Remove(ctx context.Context, name string) error
	// Close releases the backend.
	Close() error
	// String names the backend in messages: a path or a URL.
	String() string
}

// File is an open file: it reads from the start and seeks, so that it
// serves ranges (http.ServeContent).
type File interface {
	io.ReadSeekCloser
	// Info describes the file as it was opened.
	Info() Info
}

// Info describes a file or, in a listing, a subdirectory.
type Info struct {
	// Name is the full name relative to the backend: "nar/X.nar.zst".
	Name    string
	Size    int64
	ModTime time.Time
	// Version changes whenever the content may have: size, modification
	// time and inode in a directory, the ETag in an object store.
	Version string
	// Dir marks a subdirectory in a listing.
	Dir bool
}

// ErrNoBucket reports an object store's bucket that does not exist.
var ErrNoBucket = errors.New("no such bucket")

// ErrBadLocation reports a location that is neither a directory nor an
// s3:// bucket: a mistake on the command line, not in the store.
var ErrBadLocation = errors.New("unsupported scheme")

// ErrChanged reports a Swap whose file changed since it was read.
var ErrChanged = errors.New("changed since it was read")

// ErrUnavailable is matched by an error of a request the store did not
// answer (the connection refused or cut, a timeout, a name that does not
// resolve) or answered only to say it cannot now (502, 503, 504): not an
// answer about the file, so another try later may well succeed.
var ErrUnavailable = errors.New("store unavailable")

// unavailableError is err, which says how the store failed, matching
// ErrUnavailable too.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string        { return e.err.Error() }
func (e *unavailableError) Unwrap() error        { return e.err }
func (e *unavailableError) Is(target error) bool { return target == ErrUnavailable }

// Unavailable is err, matching ErrUnavailable too: for the error of a
// request a store or binary cache did not answer, or answered with a
// status StatusUnavailable calls no answer.
func Unavailable(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	return &unavailableError{err}
}

// StatusUnavailable reports whether an HTTP answer with status code says
// only that the server cannot answer now (502, 503, 504), nothing about
// the file asked for.
func StatusUnavailable(code int) bool {
	return code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout
}

// ErrTooLarge reports a file ReadFile refused for its size.
var ErrTooLarge = errors.New("too large")

// Swapper is a Backend that replaces a file only if nobody else did since
// the caller read it: compare and swap, for the few files that several
// writers update by reading, changing and writing back (such as a merged
// flake registry).
type Swapper interface {
	// Swap stores r as name, as Put does, if name's Version is still
	// version, or if version is "" and name does not exist. Otherwise it
	// stores nothing and returns an error wrapping ErrChanged.
	Swap(ctx context.Context, name, version string, r io.Reader, size int64) error
}

// Syncer is a Backend whose writes may be durable only once Sync returns
// (a directory with NoSync, or renames whose directories are not synced
// yet). What vouches for a file (a narinfo for its NAR) is written only
// after a Sync.
type Syncer interface {
	Sync(ctx context.Context) error
}

// Mover is a Backend on the local file system that takes in a finished
// local file by renaming it, not copying it.
type Mover interface {
	// MkdirTemp makes a new private directory on the backend's file
	// system, hidden from List and Open, for files that Move takes in.
	// release removes it and what is left in it. A directory whose
	// maker died is removed by a later MkdirTemp.
	MkdirTemp() (dir string, release func(), err error)
	// Move renames the local file at from, in a directory MkdirTemp
	// made, to name, replacing any file there, atomically, and as
	// durable as Put (or, where writes wait for Sync, as durable as
	// the next Sync makes it).
	Move(ctx context.Context, from, name string) error
}

// Sweeper is a Backend whose writers, killed in the middle of a Put, may
// leave what they were writing behind, hidden from List and Open: a
// directory's temp files, an object store's incomplete multipart uploads.
// A live writer's look the same, so the caller holds the backend's
// exclusive lock (Locker) while it removes them.
type Sweeper interface {
	// SweepLeftovers removes what killed writers left that was made
	// before before, or with dryRun only counts it, and says how much
	// there was.
	SweepLeftovers(ctx context.Context, before time.Time, dryRun bool) (Leftovers, error)
}

// Leftovers counts what killed writers left: Files files (or uploads)
// of Bytes bytes.
type Leftovers struct {
	Files int
	Bytes int64
}

// Locker is a Backend that can lock itself against other processes.
type Locker interface {
	// Lock takes a lock as opts say, waiting until it is free or ctx
	// ends. The holder works under held, ctx or one that ends when the
	// lock is lost (LockLost says why); unlock releases it.
	Lock(ctx context.Context, opts LockOptions) (held context.Context, unlock func() error, err error)
}

// LockOptions say which lock to take.
type LockOptions struct {
	// Exclusive asks for the backend to oneself (gc, say); otherwise the
	// lock is shared with other shared holders (imports).
	Exclusive bool
	// Command says what takes the lock, such as "gc" or "import b.tar".
	// The lock records it with this process's PID, host and start time
	// for others that wait; only to tell them, never to decide anything.
	Command string
	// Waiting, if set, hears who holds the lock, such as "gc (pid 42 on
	// host, since 05:40:12)" ("" when that is not known), when Lock has
	// to wait.
	Waiting func(holder string)
	// ReadOnly says a shared holder only reads (gc --dry-run): in a
	// directory it may not write, such as a read-only mount, it takes
	// the lock on the lock file opened for reading, or goes on without
	// one if there is none, as nothing can write there without it.
	ReadOnly bool
}

// WaitingFor says that this process waits for holder (as Waiting hears
// it) to release the lock on b. A lock object outlives a holder that
// died until it goes stale, and no process on this host can tell that
// one on another died: it says how long that wait lasts at most.
func WaitingFor(holder string, b Backend) string {
	if holder == "" {
		holder = "another process"
	}
	s := fmt.Sprintf("waiting for %s to release the lock on %s", holder, b)
	if s3, ok := b.(*S3); ok {
		s += fmt.Sprintf(" (if it has died, its lock lapses within %v)", s3.lockTiming().stale)
	}
	return s
}

// MaxNameLen bounds a name: far more than any cache file needs.
const MaxNameLen = 1024

// CheckName checks that name is a clean relative slash path inside the
// backend with no part starting with "." (those are the backends' own
// temp files and staging directories).
func CheckName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case len(name) > MaxNameLen:
		return fmt.Errorf("name longer than %d bytes", MaxNameLen)
	case strings.HasPrefix(name, "/"), strings.ContainsAny(name, "\\\x00"), path.Clean(name) != name:
		return fmt.Errorf("name %q: want a clean relative slash path", name)
	}
	for part := range strings.SplitSeq(name, "/") {
		if strings.HasPrefix(part, ".") {
			return fmt.Errorf("name %q: a part starts with '.'", name)
		}
	}
	return nil
}

// checkDir checks a List directory: "" or a name.
func checkDir(dir string) error {
	if dir == "" {
		return nil
	}
	return CheckName(dir)
}

// ReadFile reads the whole file name, refusing one longer than max bytes
// (ErrTooLarge).
func ReadFile(ctx context.Context, b Backend, name string, max int64) ([]byte, Info, error) {
	f, err := b.Open(ctx, name)
	if err != nil {
		return nil, Info{}, err
	}
	defer f.Close()
	info := f.Info()
	if info.Size > max {
		return nil, info, fmt.Errorf("read %s in %s: %w: %d bytes, more than %d", name, b, ErrTooLarge, info.Size, max)
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, info, fmt.Errorf("read %s in %s: %w", name, b, err)
	}
	if int64(len(data)) > max {
		return nil, info, fmt.Errorf("read %s in %s: %w: more than %d bytes", name, b, ErrTooLarge, max)
	}
	return data, info, nil
}

// Walk yields every file under the directory dir ("" for all), depth
// first, each directory's entries in byte order.
func Walk(ctx context.Context, b Backend, dir string) iter.Seq2[Info, error] {
	return func(yield func(Info, error) bool) {
		walk(ctx, b, dir, yield)
	}
}

func walk(ctx context.Context, b Backend, dir string, yield func(Info, error) bool) bool {
	for info, err := range b.List(ctx, dir) {
		switch {
		case err != nil:
			if !yield(Info{}, err) {
				return false
			}
		case info.Dir:
			if !walk(ctx, b, info.Name, yield) {
				return false
			}
		default:
			if !yield(info, nil) {
				return false
			}
		}
	}
	return true
}

// Where names the file name of b in messages: a path or a URL.
func Where(b Backend, name string) string {
	if w, ok := b.(interface{ Where(string) string }); ok {
		return w.Where(name)
	}
	return strings.TrimSuffix(b.String(), "/") + "/" + name
}

// Sync makes b's writes durable if b defers them (a Syncer); otherwise
// they already are.
func Sync(ctx context.Context, b Backend) error {
	if s, ok := b.(Syncer); ok {
		return s.Sync(ctx)
	}
	return nil
}

// IsNotExist reports whether err says a file is missing.
func IsNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

// Exists reports whether b has the file name, or the error of a store
// that cannot say (a 403, a store that does not answer): a caller that
// took it for either answer would act on what it does not know.
func Exists(ctx context.Context, b Backend, name string) (bool, error) {
	_, err := b.Stat(ctx, name)
	if IsNotExist(err) {
		return false, nil
	}
	return err == nil, err
}
