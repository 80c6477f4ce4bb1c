package cache

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/nix-airgap/nix-airgap/internal/atomicfile"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

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

// copyCtx copies r to w until ctx is done, through a pooled buffer.
func copyCtx(ctx context.Context, w io.Writer, r io.Reader) error {
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	_, err := io.CopyBuffer(w, ctxReader{ctx, r}, *buf)
	return err
}

// Dir is a binary cache in a local directory. Every access goes through an
// os.Root, so no URL, name or symlink can reach outside the directory.
// Writes are durable: temp file, fsync, rename, directory fsync; a file is
// always complete, and durable, before a narinfo names it. A Dir is safe
// for concurrent use.
type Dir struct {
	// GroupCommit trades per-file fsyncs for one sync of the file system
	// per batch; see Sync. Set it before the first write. The zero value
	// fsyncs every file as it is written.
	GroupCommit bool

	path string
	root *os.Root
	info CacheInfo

	batch batch // narinfos waiting for Sync, with GroupCommit
}

// OpenDir opens the binary cache at path, which must have a valid
// nix-cache-info.
func OpenDir(path string) (*Dir, error) {
	root, err := os.OpenRoot(path)
	if err != nil {
		return nil, fmt.Errorf("open cache %s: %w", path, err)
	}
	info, err := readCacheInfo(root, path)
	if err != nil {
		root.Close()
		return nil, fmt.Errorf("open cache %s: %w", path, err)
	}
	return &Dir{path: path, root: root, info: info}, nil
}

func readCacheInfo(root *os.Root, dir string) (CacheInfo, error) {
	name := filepath.Join(dir, CacheInfoFile)
	f, err := root.Open(CacheInfoFile)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return CacheInfo{}, fmt.Errorf("%s: missing, not a binary cache: %w", name, ErrNotFound)
		}
		return CacheInfo{}, err
	}
	defer f.Close()
	info, err := ParseCacheInfo(f)
	if err != nil {
		return CacheInfo{}, fmt.Errorf("%s: %w", name, err)
	}
	return info, nil
}

// CreateDir creates a binary cache at path for stores in storeDir, with
// WantMassQuery set and the given priority, or opens the one already
// there. It refuses an existing cache for another store dir; an existing
// cache's priority is left as it is.
func CreateDir(path string, storeDir storepath.Dir, priority int) (*Dir, error) {
	if _, err := storepath.ParseDir(string(storeDir)); err != nil {
		return nil, fmt.Errorf("create cache %s: %w", path, err)
	}
	if err := os.MkdirAll(path, 0o755); err != nil {
		return nil, fmt.Errorf("create cache %s: %w", path, err)
	}
	root, err := os.OpenRoot(path)
	if err != nil {
		return nil, fmt.Errorf("create cache %s: %w", path, err)
	}
	d := &Dir{path: path, root: root}
	info, err := readCacheInfo(root, path)
	switch {
	case err == nil:
		if info.StoreDir != storeDir {
			root.Close()
			return nil, fmt.Errorf("create cache %s: it exists for store %s, not %s", path, info.StoreDir, storeDir)
		}
	case errors.Is(err, ErrNotFound):
		info = CacheInfo{StoreDir: storeDir, WantMassQuery: true, Priority: priority}
		data, _ := info.MarshalText()
		if err := d.writeAtomic(CacheInfoFile, data); err != nil {
			root.Close()
			return nil, fmt.Errorf("create cache %s: %w", path, err)
		}
	default:
		root.Close()
		return nil, fmt.Errorf("create cache %s: %w", path, err)
	}
	d.info = info
	if err := root.MkdirAll(NarDir, 0o755); err != nil {
		root.Close()
		return nil, fmt.Errorf("create cache %s: %w", path, err)
	}
	return d, nil
}

// Close releases the directory handle.
func (d *Dir) Close() error {
	d.batch.mu.Lock()
	if d.batch.timer != nil {
		d.batch.timer.Stop()
	}
	d.batch.mu.Unlock()
	return d.root.Close()
}

// Path is the directory's path as given to OpenDir or CreateDir.
func (d *Dir) Path() string { return d.path }

// StoreDir is the store dir nix-cache-info names.
func (d *Dir) StoreDir() storepath.Dir { return d.info.StoreDir }

// Info is the parsed nix-cache-info.
func (d *Dir) Info() CacheInfo { return d.info }

// name is how errors name a file in the cache.
func (d *Dir) name(rel string) string { return filepath.Join(d.path, rel) }

// NarInfo reads HASHPART.narinfo. A missing file gives ErrNotFound; one that
// does not parse, or describes another path, gives ErrCorrupt.
func (d *Dir) NarInfo(ctx context.Context, hashPart string) (*narinfo.NarInfo, error) {
	if err := checkHashPart(hashPart); err != nil {
		return nil, fmt.Errorf("narinfo %q in %s: %w", hashPart, d.path, err)
	}
	rel := NarInfoFile(hashPart)
	f, err := d.root.Open(rel)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			err = ErrNotFound
		}
		return nil, &NarInfoError{Name: d.name(rel), File: rel, Err: err}
	}
	defer f.Close()
	return parseNarInfo(f, d.info.StoreDir, hashPart, d.name(rel))
}

// NarInfoError is a narinfo that cannot be had: missing, unreadable, or
// corrupt.
type NarInfoError struct {
	// Name is the narinfo as messages show it: a path or a URL.
	Name string
	// File is its name in the cache, HASHPART.narinfo.
	File string
	Err  error
}

func (e *NarInfoError) Error() string { return "narinfo " + e.Name + ": " + e.Err.Error() }
func (e *NarInfoError) Unwrap() error { return e.Err }

func parseNarInfo(r io.Reader, storeDir storepath.Dir, hashPart, name string) (*narinfo.NarInfo, error) {
	ni, err := narinfo.Parse(r, storeDir)
	if err != nil {
		if errors.Is(err, narinfo.ErrCorrupt) || errors.Is(err, narinfo.ErrTooLarge) {
			err = corrupt{err}
		}
		return nil, &NarInfoError{Name: name, File: NarInfoFile(hashPart), Err: err}
	}
	if ni.StorePath.Hash != hashPart {
		return nil, &NarInfoError{Name: name, File: NarInfoFile(hashPart), Err: fmt.Errorf("describes %s: %w", ni.StorePath, ErrCorrupt)}
	}
	return ni, nil
}

// corrupt marks an error from a parser as ErrCorrupt too, keeping its text.
type corrupt struct{ err error }

func (c corrupt) Error() string   { return c.err.Error() }
func (c corrupt) Unwrap() []error { return []error{c.err, ErrCorrupt} }

// checkHashPart accepts exactly the 32 nix32 characters of a store path's
// hash part, which also keeps a name from leaving the directory.
func checkHashPart(h string) error {
	if !storepath.IsHashPart(h) {
		return fmt.Errorf("not a store path hash part: %w", ErrNotFound)
	}
	return nil
}

// Has reports whether HASHPART.narinfo exists.
func (d *Dir) Has(hashPart string) bool {
	if !storepath.IsHashPart(hashPart) {
		return false
	}
	st, err := d.root.Stat(NarInfoFile(hashPart))
	return err == nil && st.Mode().IsRegular()
}

// localURL checks that url is a relative name inside the cache.
func localURL(url string) (string, error) {
	switch {
	case url == "":
		return "", errors.New("empty URL")
	case strings.Contains(url, "://"), strings.HasPrefix(url, "/"):
		return "", errors.New("absolute URL, not a file of this cache")
	case strings.ContainsRune(url, '\\'), !filepath.IsLocal(url), path.Clean(url) != url:
		return "", errors.New("URL leaves the cache directory or is not clean")
	case strings.HasPrefix(url, ".") || strings.Contains(url, "/."):
		return "", errors.New("URL names a hidden or temporary file")
	}
	return url, nil
}

// Open opens the file url names, relative to the cache. It refuses absolute
// URLs and any name or symlink leading outside the directory. The result is
// an *os.File (use OpenFile to get one typed so).
func (d *Dir) Open(ctx context.Context, url string) (io.ReadCloser, error) {
	f, err := d.OpenFile(ctx, url)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// OpenFile is Open returning the *os.File, for callers that seek or stat.
func (d *Dir) OpenFile(ctx context.Context, url string) (*os.File, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rel, err := localURL(url)
	if err != nil {
		return nil, fmt.Errorf("open %q in cache %s: %w", url, d.path, err)
	}
	f, err := d.root.Open(rel)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("open %s: %w", d.name(rel), ErrNotFound)
		}
		return nil, fmt.Errorf("open %s: %w", d.name(rel), err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open %s: %w", d.name(rel), err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("open %s: not a regular file", d.name(rel))
	}
	return f, nil
}

// NarInfos yields every narinfo at the top of the cache in name order, and
// an error naming the file for each one that cannot be read; the caller
// decides whether to go on. Names starting with "." (temp files) are
// skipped.
func (d *Dir) NarInfos() iter.Seq2[*narinfo.NarInfo, error] {
	return func(yield func(*narinfo.NarInfo, error) bool) {
		top, err := d.root.Open(".")
		if err != nil {
			yield(nil, fmt.Errorf("list cache %s: %w", d.path, err))
			return
		}
		names, err := top.Readdirnames(-1)
		top.Close()
		if err != nil {
			yield(nil, fmt.Errorf("list cache %s: %w", d.path, err))
			return
		}
		slices.Sort(names)
		for _, name := range names {
			hashPart, ok := NarInfoHashPart(name)
			if !ok || strings.HasPrefix(name, ".") {
				continue
			}
			ni, err := d.NarInfo(context.Background(), hashPart)
			if !yield(ni, err) {
				return
			}
		}
	}
}

// WriteFile atomically and durably writes an extra file such as
// manifest.json or nix-airgap/bundles/ID.json, creating parent directories.
// name is relative to the cache and must stay inside it.
func (d *Dir) WriteFile(name string, data []byte) error {
	rel, err := localURL(name)
	if err != nil {
		return fmt.Errorf("write %q in cache %s: %w", name, d.path, err)
	}
	if strings.HasPrefix(path.Base(rel), ".") {
		return fmt.Errorf("write %s: names starting with . are reserved for temp files", d.name(rel))
	}
	if dir := path.Dir(rel); dir != "." {
		if err := d.root.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("write %s: %w", d.name(rel), err)
		}
	}
	return d.writeAtomic(rel, data)
}

// PutNarInfo atomically writes ni as HASHPART.narinfo, replacing any
// earlier one. It refuses a narinfo for another store dir, one whose URL is
// not a file of this cache, and one whose file is missing (ErrNotFound) or
// has another size than FileSize (ErrCorrupt): a narinfo never appears
// before its NAR. With GroupCommit the narinfo appears with its batch (see
// Sync), not before PutNarInfo returns.
func (d *Dir) PutNarInfo(ni *narinfo.NarInfo) error {
	if ni.StorePath.Dir != d.info.StoreDir {
		return fmt.Errorf("put narinfo %s in %s: cache is for store %s", ni.StorePath, d.path, d.info.StoreDir)
	}
	data, err := ni.MarshalText()
	if err != nil {
		return fmt.Errorf("put narinfo %s in %s: %w", ni.StorePath, d.path, err)
	}
	rel, err := localURL(ni.URL)
	if err != nil {
		return fmt.Errorf("put narinfo %s: URL %q: %w", ni.StorePath, ni.URL, err)
	}
	st, err := d.root.Stat(rel)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("put narinfo %s: its file %s is missing: %w", ni.StorePath, d.name(rel), ErrNotFound)
	case err != nil:
		return fmt.Errorf("put narinfo %s: %w", ni.StorePath, err)
	case !st.Mode().IsRegular():
		return fmt.Errorf("put narinfo %s: %s is not a regular file", ni.StorePath, d.name(rel))
	case ni.FileSize != 0 && uint64(st.Size()) != ni.FileSize:
		return fmt.Errorf("put narinfo %s: %s has %d bytes, narinfo says %d: %w", ni.StorePath, d.name(rel), st.Size(), ni.FileSize, ErrCorrupt)
	}
	if d.GroupCommit {
		return d.queueNarInfo(NarInfoFile(ni.StorePath.Hash), data)
	}
	return d.writeAtomic(NarInfoFile(ni.StorePath.Hash), data)
}

// AddFile stores r's bytes as nar/NIX32(sha256).nar + ext (such as
// ".zst"), durably, and returns its URL, hash and size. If that file exists
// already with the same size, it is left alone.
func (d *Dir) AddFile(ctx context.Context, r io.Reader, ext string) (File, error) {
	return d.store(ctx, ext, func(w io.Writer) error {
		return copyCtx(ctx, w, r)
	})
}

// AddNAR compresses the NAR nar reads with the named compression and
// stores it as AddFile does, hashing the NAR and the compressed file in the
// same pass. It does not check that nar is a valid NAR. If want is not
// zero, it is what the NAR must hash to (the store's record, say): a NAR
// that differs is refused, wrapping ErrCorrupt, and nothing is left behind.
func (d *Dir) AddNAR(ctx context.Context, narR io.Reader, comp string, opts compression.WriterOptions, want NarStats) (File, NarStats, error) {
	ext, err := compression.Ext(comp)
	if err != nil {
		return File{}, NarStats{}, fmt.Errorf("add NAR to %s: %w", d.path, err)
	}
	var stats NarStats
	f, err := d.store(ctx, ext, func(w io.Writer) error {
		cw, err := compression.NewWriter(w, comp, opts)
		if err != nil {
			return err
		}
		hw := nar.NewHashWriter(cw)
		// A NAR source that writes itself out (a nar.DumpReader) skips
		// the copy through a buffer.
		if wt, ok := narR.(io.WriterTo); ok {
			_, err = wt.WriteTo(ctxWriter{ctx, hw})
		} else {
			err = copyCtx(ctx, hw, narR)
		}
		if err != nil {
			cw.Close()
			return err
		}
		if err := cw.Close(); err != nil {
			return fmt.Errorf("compress: %w", err)
		}
		stats = NarStats{NarHash: hw.Sum(), NarSize: hw.Size()}
		if !want.NarHash.IsZero() && (!stats.NarHash.Equal(want.NarHash) || stats.NarSize != want.NarSize) {
			return fmt.Errorf("%w: NAR hashes to %s (%d bytes), want %s (%d bytes)", ErrCorrupt, stats.NarHash, stats.NarSize, want.NarHash, want.NarSize)
		}
		return nil
	})
	if err != nil {
		return File{}, NarStats{}, err
	}
	return f, stats, nil
}

var errExt = errors.New("extension must be empty or a dot and up to 8 lower-case letters or digits")

func checkExt(ext string) error {
	if ext == "" {
		return nil
	}
	if len(ext) < 2 || len(ext) > 9 || ext[0] != '.' {
		return errExt
	}
	for _, c := range ext[1:] {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return errExt
		}
	}
	return nil
}

// store writes a file with write, hashing what it writes, then publishes
// it under its hash. Any error leaves nothing behind.
func (d *Dir) store(ctx context.Context, ext string, write func(io.Writer) error) (File, error) {
	if err := checkExt(ext); err != nil {
		return File{}, fmt.Errorf("add file to %s: %q: %w", d.path, ext, err)
	}
	if err := d.root.MkdirAll(NarDir, 0o755); err != nil {
		return File{}, fmt.Errorf("add file to %s: %w", d.path, err)
	}
	tmp, tmpName, err := atomicfile.CreateTemp(d.root, NarDir)
	if err != nil {
		return File{}, fmt.Errorf("add file to %s: %w", d.path, err)
	}
	defer func() {
		if tmp != nil {
			tmp.Close()
			d.root.Remove(tmpName)
		}
	}()
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(tmp, h)}
	bw := fileWriters.Get().(*bufio.Writer)
	bw.Reset(cw)
	defer func() {
		bw.Reset(nil)
		fileWriters.Put(bw)
	}()
	if err := write(bw); err != nil {
		return File{}, fmt.Errorf("add file to %s: %w", d.path, err)
	}
	if err := bw.Flush(); err != nil {
		return File{}, fmt.Errorf("add file to %s: %w", d.path, err)
	}
	sum, _ := storepath.NewHash(storepath.SHA256, h.Sum(nil))
	file := File{URL: NarURL(sum, ext), Hash: sum, Size: cw.n}
	// A file of the same size is the same file, unless a crash left
	// it unsynced: with GroupCommit it is replaced.
	if st, err := d.root.Stat(file.URL); err == nil && st.Mode().IsRegular() && st.Size() == file.Size && !d.GroupCommit {
		return file, nil
	}
	f := tmp
	tmp = nil
	// GroupCommit leaves a NAR file's durability to Sync.
	if err := atomicfile.Publish(d.root, f, tmpName, file.URL, !d.GroupCommit); err != nil {
		return File{}, fmt.Errorf("add file %s: %w", d.name(file.URL), err)
	}
	return file, nil
}

// writeAtomic writes data to rel through a temp file in the same
// directory, durably.
func (d *Dir) writeAtomic(rel string, data []byte) error {
	return d.writeFile(rel, data, true)
}

// writeFile writes data to rel through a temp file in the same directory,
// fsynced if durable.
func (d *Dir) writeFile(rel string, data []byte, durable bool) error {
	if err := atomicfile.WriteFileIn(d.root, rel, data, durable); err != nil {
		return fmt.Errorf("write %s: %w", d.name(rel), err)
	}
	return nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
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

// ctxWriter stops a copy when ctx is done.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}
