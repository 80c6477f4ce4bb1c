package storage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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
	"syscall"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/atomicfile"
)

// Dir is a Backend in a local directory. Every access goes through an
// os.Root, so no name or symlink reaches outside the directory. A Put is
// a temp file in the same directory, fsynced, renamed into place, and the
// directory fsynced: a reader or a crash sees the old file or the new.
//
// Dir is also a Mover (files made in MkdirTemp's directories are renamed
// in), a Syncer (Move and Remove are durable once Sync returns), a Locker
// (flock(2) on DIR/.lock), a Swapper and a Sweeper (of Put's temp files).
type Dir struct {
	// NoSync defers all durability to Sync: Put and Move skip their
	// fsyncs, and Sync makes everything durable with one syncfs(2),
	// also what was written on the file system outside d (a spool's
	// files, which Move then renames in without an fsync each). Set it
	// before the first write. The zero value makes each Put durable when
	// it returns.
	NoSync bool
	// Scratch drops durability altogether: no fsync at all, and Sync
	// does nothing. It is for spools, which a crash discards anyway.
	Scratch bool

	path string
	root *os.Root

	syncMu sync.Mutex // one Sync at a time, so that each waits for the one before
	mu     sync.Mutex
	dirty  map[string]bool // directories with renames or removals not yet fsynced
}

// OpenDir opens the existing directory path.
func OpenDir(path string) (*Dir, error) {
	root, err := os.OpenRoot(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, UnwrapPath(err))
	}
	return &Dir{path: path, root: root, dirty: map[string]bool{}}, nil
}

// CreateDir opens the directory path, creating it and its parents if
// needed, durably.
func CreateDir(path string) (*Dir, error) {
	d, _, err := createDir(path)
	return d, err
}

// createDir is CreateDir, and also returns the topmost directory it made,
// "" if none.
func createDir(path string) (*Dir, string, error) {
	made, err := atomicfile.MkdirAll(path)
	if err != nil {
		return nil, "", fmt.Errorf("create %s: %w", path, UnwrapPath(err))
	}
	d, err := OpenDir(path)
	return d, made, err
}

// Path is the directory as given to OpenDir or CreateDir.
func (d *Dir) Path() string { return d.path }

func (d *Dir) String() string { return d.path }

// Close releases the directory handle.
func (d *Dir) Close() error { return d.root.Close() }

// Where names a file in messages: its path.
func (d *Dir) Where(name string) string { return filepath.Join(d.path, filepath.FromSlash(name)) }

func (d *Dir) pathError(op, name string, err error) error {
	return &fs.PathError{Op: op, Path: d.Where(name), Err: UnwrapPath(err)}
}

// dirFile is an open file: an *os.File, so that net/http sends it with
// sendfile(2).
type dirFile struct {
	*os.File
	info Info
}

func (f *dirFile) Info() Info { return f.info }

// Open opens the regular file name.
func (d *Dir) Open(ctx context.Context, name string) (File, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := CheckName(name); err != nil {
		return nil, d.pathError("open", name, err)
	}
	f, err := d.root.Open(name)
	if err != nil {
		return nil, d.pathError("open", name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, d.pathError("open", name, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, d.pathError("open", name, notFile(fi))
	}
	return &dirFile{File: f, info: infoOf(name, fi)}, nil
}

// notFile is the error for a name that is there but no regular file: a
// directory is not found, as in an object store; anything else is refused.
func notFile(fi fs.FileInfo) error {
	if fi.IsDir() {
		return fs.ErrNotExist
	}
	return errors.New("not a regular file")
}

func infoOf(name string, fi fs.FileInfo) Info {
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = uint64(st.Ino)
	}
	mt := fi.ModTime()
	return Info{
		Name: name, Size: fi.Size(), ModTime: mt, Dir: fi.IsDir(),
		Version: fmt.Sprintf("%d-%d-%d", fi.Size(), mt.UnixNano(), ino),
	}
}

// Stat describes the regular file name.
func (d *Dir) Stat(ctx context.Context, name string) (Info, error) {
	if err := ctx.Err(); err != nil {
		return Info{}, err
	}
	if err := CheckName(name); err != nil {
		return Info{}, d.pathError("stat", name, err)
	}
	fi, err := d.root.Stat(name)
	if err != nil {
		return Info{}, d.pathError("stat", name, err)
	}
	if !fi.Mode().IsRegular() {
		return Info{}, d.pathError("stat", name, notFile(fi))
	}
	return infoOf(name, fi), nil
}

// Put writes r to a temp file next to name and renames it into place.
func (d *Dir) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	if err := CheckName(name); err != nil {
		return d.pathError("put", name, err)
	}
	if err := d.put(ctx, name, r, size); err != nil {
		return d.pathError("put", name, err)
	}
	return nil
}

// put writes r to a temp file in name's directory and renames it to name.
func (d *Dir) put(ctx context.Context, name string, r io.Reader, size int64) error {
	dir := path.Dir(name)
	made, err := atomicfile.MkdirAllIn(d.root, dir)
	if err != nil {
		return err
	}
	f, tmp, err := atomicfile.CreateTemp(d.root, dir)
	if err != nil {
		return err
	}
	if err := write(ctx, f, r, size); err != nil {
		f.Close()
		d.root.Remove(tmp)
		return atomicfile.NameAs(err, f.Name(), Where(d, name))
	}
	if err := atomicfile.Publish(d.root, f, tmp, name, d.syncEach()); err != nil || !d.syncEach() {
		return err
	}
	// The directories made for it, durable too.
	for _, p := range made {
		if err := atomicfile.SyncDirIn(d.root, p); err != nil {
			return err
		}
	}
	return nil
}

// write copies size bytes (all of r if size is negative) from r to w,
// stopping when ctx ends.
func write(ctx context.Context, w io.Writer, r io.Reader, size int64) error {
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	r = ContextReader(ctx, r)
	if size < 0 {
		_, err := io.CopyBuffer(w, r, *buf)
		return err
	}
	n, err := io.CopyBuffer(w, io.LimitReader(r, size), *buf)
	if err == nil && n < size {
		err = fmt.Errorf("%w: %d of %d bytes", io.ErrUnexpectedEOF, n, size)
	}
	return err
}

func randomHex() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// List reads the directory dir. Names starting with "." (temp files,
// staging directories, the lock) are left out, and so is anything but
// regular files and directories.
func (d *Dir) List(ctx context.Context, dir string) iter.Seq2[Info, error] {
	return func(yield func(Info, error) bool) {
		if err := checkDir(dir); err != nil {
			yield(Info{}, d.pathError("list", dir, err))
			return
		}
		open := dir
		if open == "" {
			open = "."
		}
		f, err := d.root.Open(open)
		if errors.Is(err, fs.ErrNotExist) {
			return
		}
		if err != nil {
			yield(Info{}, d.pathError("list", dir, err))
			return
		}
		ents, err := f.ReadDir(-1)
		f.Close()
		if err != nil {
			yield(Info{}, d.pathError("list", dir, err))
			return
		}
		slices.SortFunc(ents, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".") {
				continue
			}
			if err := ctx.Err(); err != nil {
				yield(Info{}, err)
				return
			}
			name := path.Join(dir, e.Name())
			fi, err := e.Info()
			if err == nil && fi.Mode()&fs.ModeSymlink != 0 {
				fi, err = d.root.Stat(name)
			}
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed since ReadDir
			}
			if err != nil {
				if !yield(Info{}, d.pathError("list", name, err)) {
					return
				}
				continue
			}
			if !fi.Mode().IsRegular() && !fi.IsDir() {
				continue
			}
			if !yield(infoOf(name, fi), nil) {
				return
			}
		}
	}
}

// Remove removes the file name; the removal is durable once Sync returns.
func (d *Dir) Remove(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := CheckName(name); err != nil {
		return d.pathError("remove", name, err)
	}
	fi, err := d.root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil && fi.IsDir() {
		return d.pathError("remove", name, errors.New("is a directory"))
	}
	if err == nil {
		err = d.root.Remove(name)
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return d.pathError("remove", name, err)
	}
	if !d.NoSync {
		d.markDirty(path.Dir(name))
	}
	return nil
}

// syncEach says whether each write is made durable before it returns.
func (d *Dir) syncEach() bool { return !d.NoSync && !d.Scratch }

func (d *Dir) markDirty(dir string) {
	d.mu.Lock()
	d.dirty[dir] = true
	d.mu.Unlock()
}

// Sync makes every Put, Move and Remove so far durable: with NoSync, one
// syncfs(2) of the file system, which makes everything written on it
// durable; otherwise an fsync of each directory that changed. The fsyncs
// run without holding up writes and removals (gc removes NAR files while
// it syncs the removal of narinfos): what changes meanwhile is the next
// Sync's to make durable.
func (d *Dir) Sync(ctx context.Context) error {
	if d.Scratch {
		return ctx.Err()
	}
	d.syncMu.Lock()
	defer d.syncMu.Unlock()
	if d.NoSync {
		f, err := d.root.Open(".")
		if err == nil {
			err = syncFS(f)
			f.Close()
			if err != nil {
				err = &os.PathError{Op: "syncfs", Path: d.path, Err: err}
			}
		}
		if err != nil {
			return fmt.Errorf("sync %s: %w", d.path, err)
		}
		return nil
	}
	d.mu.Lock()
	dirs := slices.Sorted(mapsKeys(d.dirty))
	clear(d.dirty)
	d.mu.Unlock()
	for i, dir := range dirs {
		if err := atomicfile.SyncDirIn(d.root, dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			d.redirty(dirs[i:])
			return fmt.Errorf("sync %s: %w", d.Where(dir), err)
		}
	}
	return nil
}

// redirty leaves what a failed Sync did not make durable to the next one.
func (d *Dir) redirty(dirs []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, dir := range dirs {
		d.dirty[dir] = true
	}
}

func mapsKeys(m map[string]bool) iter.Seq[string] {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// stagingPrefix names MkdirTemp's directories: DIR/.staging-RANDOM.
const stagingPrefix = ".staging-"

// MkdirTemp makes DIR/.staging-RANDOM, flocked until release, after
// removing the staging directories that no live process holds, those
// killed imports left.
func (d *Dir) MkdirTemp() (string, func(), error) {
	atomicfile.SweepIn(d.root, stagingPrefix, nil)
	name, lock, err := atomicfile.MkdirTempIn(d.root, stagingPrefix)
	if err != nil {
		return "", nil, err
	}
	return filepath.Join(d.path, name), func() {
		d.root.RemoveAll(name)
		lock.Close()
	}, nil
}

// Move renames from, a file in a directory MkdirTemp made, to name: fsynced
// first unless NoSync; the rename is durable once Sync returns.
func (d *Dir) Move(ctx context.Context, from, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := CheckName(name); err != nil {
		return d.pathError("move", name, err)
	}
	rel, err := filepath.Rel(d.path, from)
	if err != nil || !filepath.IsLocal(rel) || !strings.HasPrefix(rel, stagingPrefix) {
		return d.pathError("move", name, fmt.Errorf("%s is not in a staging directory of %s", from, d.path))
	}
	rel = filepath.ToSlash(rel)
	if d.syncEach() {
		f, err := d.root.OpenFile(rel, os.O_RDWR, 0)
		if err == nil {
			err = atomicfile.Seal(f)
		}
		if err != nil {
			return d.pathError("move", name, err)
		}
	}
	dirs, err := atomicfile.Move(d.root, rel, name)
	if err != nil {
		return d.pathError("move", name, err)
	}
	if !d.NoSync {
		for _, dir := range dirs {
			d.markDirty(dir)
		}
	}
	return nil
}

// SweepLeftovers removes the temp files (atomicfile.CreateTemp's, made
// next to the file each becomes) that Puts killed before their rename
// left, those modified before before, from every directory of d: the top
// and every subdirectory but the hidden ones (staging directories, which
// MkdirTemp sweeps). Symlinks are neither followed nor removed. The
// removals are durable once Sync returns.
func (d *Dir) SweepLeftovers(ctx context.Context, before time.Time, dryRun bool) (Leftovers, error) {
	var left Leftovers
	for dirs := []string{"."}; len(dirs) > 0; {
		dir := dirs[len(dirs)-1]
		dirs = dirs[:len(dirs)-1]
		f, err := d.root.Open(dir)
		if err != nil {
			return left, d.pathError("sweep", dir, err)
		}
		ents, err := f.ReadDir(-1)
		f.Close()
		if err != nil {
			return left, d.pathError("sweep", dir, err)
		}
		for _, e := range ents {
			if err := ctx.Err(); err != nil {
				return left, err
			}
			name := path.Join(dir, e.Name())
			if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
				dirs = append(dirs, name)
				continue
			}
			if !e.Type().IsRegular() || !strings.HasPrefix(e.Name(), atomicfile.TempPrefix) {
				continue
			}
			fi, err := e.Info()
			if err == nil && !fi.ModTime().Before(before) {
				continue
			}
			if err == nil && !dryRun {
				err = d.root.Remove(name)
			}
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return left, d.pathError("sweep", name, err)
			}
			if !dryRun && !d.NoSync {
				d.markDirty(dir)
			}
			left.Files++
			left.Bytes += fi.Size()
		}
	}
	return left, nil
}

// LockName is the file Lock flocks. Each holder writes a record of who
// it is into it (lockRecord), for others that wait.
const LockName = ".lock"

// Lock takes flock(2) on DIR/.lock (flock). A flock is held until it is
// released or the process ends: held is ctx.
func (d *Dir) Lock(ctx context.Context, opts LockOptions) (held context.Context, unlock func() error, err error) {
	unlock, err = d.flock(ctx, opts)
	return ctx, unlock, err
}

// flock takes flock(2) on DIR/.lock, polling while another process holds
// it so that ctx can end the wait. A lock file removed while it waited
// (by a refused first import removing the cache it made) is taken afresh.
func (d *Dir) flock(ctx context.Context, opts LockOptions) (func() error, error) {
	how := syscall.LOCK_SH
	if opts.Exclusive {
		how = syscall.LOCK_EX
	}
	told := false
	for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		writable := true
		f, err := d.root.OpenFile(LockName, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil && opts.ReadOnly && !opts.Exclusive && (errors.Is(err, syscall.EROFS) || errors.Is(err, fs.ErrPermission)) {
			writable = false
			f, err = d.root.OpenFile(LockName, os.O_RDONLY, 0)
			if errors.Is(err, fs.ErrNotExist) {
				return func() error { return nil }, nil
			}
		}
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", d.Where(LockName), UnwrapPath(err))
		}
		err = atomicfile.Flock(f, how|syscall.LOCK_NB)
		if err == nil {
			if held, err := f.Stat(); err == nil {
				if now, err := d.root.Stat(LockName); err != nil || !os.SameFile(held, now) {
					f.Close()
					continue
				}
			}
			if !writable {
				return f.Close, nil
			}
			f.Truncate(0)
			f.WriteAt(newLockRecord(opts), 0)
			return func() error {
				// The last holder out clears the record; a shared one
				// is the last if it can have the lock to itself.
				if opts.Exclusive || atomicfile.Flock(f, syscall.LOCK_EX|syscall.LOCK_NB) == nil {
					f.Truncate(0)
				}
				return f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", d.Where(LockName), err)
		}
		if !told && opts.Waiting != nil {
			told = true
			record, _ := io.ReadAll(io.LimitReader(f, 4096))
			opts.Waiting(lockHolder(record))
		}
		f.Close()
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("lock %s: %w", d.Where(LockName), ctx.Err())
		case <-time.After(wait):
		}
	}
}

// swapLock serialises Swaps across processes: DIR/.lock-swap.
const swapLock = ".lock-swap"

// Swap writes name, as Put does, if its Version is still version ("" for
// absent), holding an exclusive flock on DIR/.lock-swap from the
// comparison to the rename.
func (d *Dir) Swap(ctx context.Context, name, version string, r io.Reader, size int64) error {
	if err := CheckName(name); err != nil {
		return d.pathError("swap", name, err)
	}
	f, err := d.root.OpenFile(swapLock, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return d.pathError("swap", name, err)
	}
	defer f.Close()
	if err := atomicfile.Flock(f, syscall.LOCK_EX); err != nil {
		return d.pathError("swap", name, err)
	}
	cur := ""
	if fi, err := d.root.Stat(name); err == nil {
		cur = infoOf(name, fi).Version
	} else if !errors.Is(err, fs.ErrNotExist) {
		return d.pathError("swap", name, err)
	}
	if cur != version {
		return d.pathError("swap", name, ErrChanged)
	}
	if err := d.put(ctx, name, r, size); err != nil {
		return d.pathError("swap", name, err)
	}
	return nil
}
