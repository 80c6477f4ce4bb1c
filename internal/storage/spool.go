package storage

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/nix-airgap/nix-airgap/internal/atomicfile"
)

// Spool holds local files on their way into a backend: made on the
// backend's own file system and renamed in when it is a Mover, or made in
// a local temp directory and uploaded with Put. A Spool is safe for
// concurrent use.
type Spool struct {
	b       Backend
	mover   Mover
	dir     string
	release func()
}

// NewSpool makes a spool for b. tempDir is where a spool for a backend
// that is no Mover lives; "" means os.TempDir().
func NewSpool(b Backend, tempDir string) (*Spool, error) {
	s := &Spool{b: b}
	if m, ok := b.(Mover); ok {
		dir, release, err := m.MkdirTemp()
		if err != nil {
			return nil, err
		}
		s.mover, s.dir, s.release = m, dir, release
		return s, nil
	}
	// Held until release: a tar writer starting meanwhile removes only
	// the spools no one holds, those killed processes left.
	dir, lock, err := atomicfile.MkdirTemp(tempDir, SpoolPrefix)
	if err != nil {
		return nil, fmt.Errorf("spool for %s: %w", b, err)
	}
	s.dir, s.release = dir, func() {
		os.RemoveAll(dir)
		lock.Close()
	}
	return s, nil
}

// SpoolPrefix starts the name of every local spool directory, the tar
// writers' and NewSpool's, so that one sweep (bundle's, when a tar writer
// starts) finds all that killed processes left.
const SpoolPrefix = "nix-airgap-spool-"

// Dir is the spool's local directory.
func (s *Spool) Dir() string { return s.dir }

// SpoolFile is a spool file. Where the spool is on the backend's own file
// system (a Mover), a failed write names the file as the user knows it,
// not by its name in the spool: the backend's file rel for Create, the
// backend for CreateTemp ("write /srv/cache/nar/X.nar.zst: no space left
// on device"). A spool in a local temp directory keeps its own names: that
// is the disk a write there fills.
type SpoolFile struct {
	*os.File
	name string
}

func (f *SpoolFile) Write(p []byte) (int, error) {
	n, err := f.File.Write(p)
	return n, atomicfile.NameAs(err, f.File.Name(), f.name)
}

// Create creates the spool file rel (a slash path), with its parent
// directories.
func (s *Spool) Create(rel string) (*SpoolFile, error) {
	p := filepath.Join(s.dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	return s.file(f, Where(s.b, rel)), nil
}

// CreateTemp creates a spool file with a new name. Its mode is 0644 less
// the umask, as Create's, not os.CreateTemp's 0600: a Mover renames it
// into the backend as it is, and a bundle or cache that only its writer
// can read cannot be served or copied by anyone else.
func (s *Spool) CreateTemp() (*SpoolFile, error) {
	for range 10 {
		p := filepath.Join(s.dir, "tmp-"+randomHex())
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return s.file(f, s.b.String()), nil
	}
	return nil, fmt.Errorf("spool %s: cannot create a temp file", s.dir)
}

func (s *Spool) file(f *os.File, name string) *SpoolFile {
	if s.mover == nil {
		name = f.Name()
	}
	return &SpoolFile{File: f, name: name}
}

// Commit takes the spool file at p (as Create or CreateTemp made it,
// closed) into the backend as name: Move on a Mover, else Put and remove
// the local file.
func (s *Spool) Commit(ctx context.Context, p, name string) error {
	return s.CommitCounting(ctx, p, name, nil)
}

// CommitCounting is Commit telling count, unless nil, of the bytes that
// go in: as the backend reads them for a Put (PutFile), all at once for a
// Move, a rename.
func (s *Spool) CommitCounting(ctx context.Context, p, name string, count func(int64)) error {
	if s.mover != nil {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if err := s.mover.Move(ctx, p, name); err != nil {
			return err
		}
		if count != nil {
			count(fi.Size())
		}
		return nil
	}
	if err := PutFile(ctx, s.b, p, name, count); err != nil {
		return err
	}
	os.Remove(p)
	return nil
}

// PutFile puts the local file at p into b as name. count, unless nil,
// hears the file's bytes as b reads them, so that a large file's upload
// shows progress within it, and every byte once (countingFile).
func PutFile(ctx context.Context, b Backend, p, name string, count func(int64)) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if count == nil {
		return b.Put(ctx, name, f, fi.Size())
	}
	cf := &countingFile{f: f, size: fi.Size(), count: count}
	if err := b.Put(ctx, name, cf, fi.Size()); err != nil {
		return err
	}
	cf.rest()
	return nil
}

// countingFile reads a local file for a Put, telling count of each
// buffer read, one atomic add each. It is an io.ReaderAt and io.Seeker as
// the file is: S3.Put reads a file's parts at their offsets, several at
// once. A store may read a part again, to retry it: count hears at most
// the file's size in all, and rest makes up what it did not hear.
type countingFile struct {
	f     *os.File
	size  int64
	read  atomic.Int64
	count func(int64)
}

func (c *countingFile) add(n int) {
	if n <= 0 {
		return
	}
	after := c.read.Add(int64(n))
	if d := min(after, c.size) - min(after-int64(n), c.size); d > 0 {
		c.count(d)
	}
}

func (c *countingFile) Read(p []byte) (int, error) {
	n, err := c.f.Read(p)
	c.add(n)
	return n, err
}

func (c *countingFile) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.f.ReadAt(p, off)
	c.add(n)
	return n, err
}

func (c *countingFile) Seek(offset int64, whence int) (int64, error) {
	return c.f.Seek(offset, whence)
}

// rest counts what of the file count did not hear, once it is in.
func (c *countingFile) rest() {
	if d := c.size - min(c.read.Load(), c.size); d > 0 {
		c.count(d)
	}
}

// Close removes the spool and what is left in it.
func (s *Spool) Close() { s.release() }

// copyBufSize is the buffer for streaming files in and out: large enough
// that syscalls and hashing stay cheap next to compression.
const copyBufSize = 1 << 20

// copyBufs and fileWriters hold idle buffers of copyBufSize: a pack or an
// import writes hundreds of files, most of them small, and zeroing fresh
// MiBs for each costs more than writing it.
var (
	copyBufs    = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}
	fileWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, copyBufSize) }}
)

// Copy copies r to w until ctx is done, through a pooled 1 MiB buffer.
func Copy(ctx context.Context, w io.Writer, r io.Reader) (int64, error) {
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	return io.CopyBuffer(w, ContextReader(ctx, r), *buf)
}

// Buffer lends a 1 MiB buffer from the pool; give it back with the
// returned function.
func Buffer() ([]byte, func()) {
	buf := copyBufs.Get().(*[]byte)
	return *buf, func() { copyBufs.Put(buf) }
}

// BufferedWriter returns a pooled 1 MiB bufio.Writer writing to w, and a
// function that returns it to the pool (after the caller flushed it).
func BufferedWriter(w io.Writer) (*bufio.Writer, func()) {
	bw := fileWriters.Get().(*bufio.Writer)
	bw.Reset(w)
	return bw, func() {
		bw.Reset(nil)
		fileWriters.Put(bw)
	}
}

// ContextReader returns a reader of r that fails with ctx's error once
// ctx is done, so that a long copy stops when its command is cancelled.
func ContextReader(ctx context.Context, r io.Reader) io.Reader { return ctxReader{ctx, r} }

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
