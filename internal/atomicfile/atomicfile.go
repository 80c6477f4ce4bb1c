// Package atomicfile writes files so that a reader, or a crash, never sees
// one half-written: data goes to a temp file in the same directory, is
// fsynced, renamed into place, and the directory is fsynced.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// File is a file being written. Nothing is visible at its final name until
// Commit returns nil.
type File struct {
	*os.File
	name string
	done bool
}

// Create starts writing name with permissions perm. Call Commit to publish
// it or Abort to discard it; Abort after Commit is a no-op, so
// `defer f.Abort()` is the idiom.
//
// The temp file is flock(2)ed while it is written, and Create first removes
// the temp files of name that killed writers left (Sweep), which for a
// bundle tar can be gigabytes.
func Create(name string, perm fs.FileMode) (*File, error) {
	dir, base := filepath.Split(name)
	if dir == "" {
		dir = "."
	}
	prefix := "." + base + ".tmp-"
	Sweep(dir, prefix, nil)
	return create(name, dir, prefix, perm)
}

// Resume is Create, except that it reopens the newest non-empty temp file
// of name that no one holds, as a killed writer left it, instead of
// removing it (the others still go), and reports whether it did. The
// reopened file is locked, read-write, at its start: the caller reads
// what it keeps, and truncates the rest.
func Resume(name string, perm fs.FileMode) (*File, bool, error) {
	dir, base := filepath.Split(name)
	if dir == "" {
		dir = "."
	}
	prefix := "." + base + ".tmp-"
	if old := Sweep(dir, prefix, nonEmpty); old != nil {
		if err := old.Chmod(perm); err != nil {
			old.Close()
			return nil, false, fmt.Errorf("resume %s: %w", name, err)
		}
		return &File{File: old, name: name}, true, nil
	}
	f, err := create(name, dir, prefix, perm)
	return f, false, err
}

// Write writes to the temp file; a failure names the file being written,
// name, not the temp file the user never gave.
func (f *File) Write(p []byte) (int, error) {
	n, err := f.File.Write(p)
	return n, NameAs(err, f.File.Name(), f.name)
}

// NameAs gives the *fs.PathError in err about the temp file tmp the name
// of what the user knows it as: "write b.tar: no space left on device",
// not "write .b.tar.tmp-749551260: …".
func NameAs(err error, tmp, name string) error {
	if pe := (*fs.PathError)(nil); errors.As(err, &pe) && pe.Path == tmp {
		pe.Path = name
	}
	return err
}

func create(name, dir, prefix string, perm fs.FileMode) (*File, error) {
	for range 10 {
		tmp, err := os.CreateTemp(dir, prefix+"*")
		if err != nil {
			if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
				err = pe.Err // it names the temp file: name is what the user gave
			}
			if errors.Is(err, fs.ErrNotExist) {
				// The file is new: what does not exist is its directory.
				return nil, fmt.Errorf("create %s: directory %s: %w", name, filepath.Clean(dir), err)
			}
			return nil, fmt.Errorf("create %s: %w", name, err)
		}
		// Best effort: where flock is not supported, stale files stay.
		Flock(tmp, syscall.LOCK_EX)
		if !stillAt(tmp, os.Stat, tmp.Name()) {
			tmp.Close() // a Sweep took it before the lock
			continue
		}
		if err := tmp.Chmod(perm); err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			return nil, fmt.Errorf("create %s: %w", name, err)
		}
		return &File{File: tmp, name: name}, nil
	}
	return nil, fmt.Errorf("create %s: temp files removed as soon as made", name)
}

// MkdirTemp makes a new directory in dir ("" for os.TempDir), named
// prefix and a random part, and flock(2)s it until the returned file is
// closed: a directory Sweep leaves alone. It is MkdirTempIn on a root
// opened at dir; the name it returns is dir's joined to the new one's.
func MkdirTemp(dir, prefix string) (string, *os.File, error) {
	root, err := openRoot(dir)
	if err != nil {
		return "", nil, fmt.Errorf("make a directory in %s: %w", dir, err)
	}
	defer root.Close()
	_, lock, err := MkdirTempIn(root, prefix)
	if err != nil {
		return "", nil, err
	}
	return lock.Name(), lock, nil
}

// MkdirTempIn is MkdirTemp inside root: it makes the directory
// prefix+RANDOM at root's top and returns that name.
func MkdirTempIn(root *os.Root, prefix string) (string, *os.File, error) {
	for range 10 {
		name := prefix + randomHex()
		if err := root.Mkdir(name, 0o700); errors.Is(err, fs.ErrExist) {
			continue
		} else if err != nil {
			return "", nil, fmt.Errorf("make a directory in %s: %w", root.Name(), err)
		}
		lock, err := lockIn(root, name, os.O_RDONLY, syscall.LOCK_EX)
		if err == nil && stillAt(lock, root.Stat, name) {
			return name, lock, nil
		}
		if err == nil {
			lock.Close()
		} else if !errors.Is(err, fs.ErrNotExist) {
			root.RemoveAll(name)
			return "", nil, fmt.Errorf("make a directory in %s: %w", root.Name(), err)
		}
		// A Sweep took it before the lock.
	}
	return "", nil, fmt.Errorf("make a directory in %s: removed as soon as made", root.Name())
}

// stillAt tells whether name, as stat finds it, is still f: between
// making a temp file or directory and locking it, a Sweep can take it for
// a dead writer's and remove it. Its maker then makes another, so that
// Sweep needs no age rule, which would keep what a writer killed at once
// left.
func stillAt(f *os.File, stat func(string) (fs.FileInfo, error), name string) bool {
	held, err := f.Stat()
	now, nerr := stat(name)
	return err == nil && nerr == nil && os.SameFile(held, now)
}

// Sweep removes from dir ("" for os.TempDir) the entries named prefix*,
// files or directories, that no live writer holds a flock(2) on: those
// killed writers left, and new ones not locked yet, whose makers
// (Create, MkdirTemp) then make others. With resumable, it keeps the
// newest (by mtime) of those resumable accepts instead, open (read-write
// if a file) and locked, and returns it for the caller to go on from; nil
// if there is none. It is SweepIn on a root opened at dir.
func Sweep(dir, prefix string, resumable func(path string, fi fs.FileInfo) bool) *os.File {
	root, err := openRoot(dir)
	if err != nil {
		return nil
	}
	defer root.Close()
	return SweepIn(root, prefix, resumable)
}

// SweepIn is Sweep of the top of root, for entries that MkdirTempIn made
// there; no name or symlink leads it outside. resumable is given the
// entry's path as root.Name() joined to its name, which is also the
// returned file's Name.
func SweepIn(root *os.Root, prefix string, resumable func(path string, fi fs.FileInfo) bool) *os.File {
	top, err := root.Open(".")
	if err != nil {
		return nil
	}
	ents, err := top.ReadDir(-1)
	top.Close()
	if err != nil {
		return nil
	}
	slices.SortFunc(ents, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	var kept *os.File
	var keptName string
	var keptTime time.Time
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, prefix) || !e.Type().IsRegular() && !e.IsDir() {
			continue
		}
		flag := os.O_RDONLY
		if resumable != nil && e.Type().IsRegular() {
			flag = os.O_RDWR
		}
		f, err := lockIn(root, name, flag, syscall.LOCK_EX|syscall.LOCK_NB)
		if err != nil {
			continue
		}
		fi, err := f.Stat()
		if err != nil || !stillAt(f, root.Stat, name) { // another Sweep removed it
			f.Close()
			continue
		}
		if resumable != nil && resumable(f.Name(), fi) && (kept == nil || fi.ModTime().After(keptTime)) {
			if kept != nil {
				root.RemoveAll(keptName)
				kept.Close()
			}
			kept, keptName, keptTime = f, name, fi.ModTime()
			continue
		}
		root.RemoveAll(name)
		f.Close()
	}
	return kept
}

// openRoot opens dir ("" for os.TempDir) as an os.Root.
func openRoot(dir string) (*os.Root, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	return os.OpenRoot(dir)
}

// nonEmpty tells a temp file its writer wrote to: one to resume.
func nonEmpty(_ string, fi fs.FileInfo) bool { return fi.Mode().IsRegular() && fi.Size() > 0 }

// Lock opens name (flag as os.OpenFile takes it) and takes flock(2) on
// it as how says: syscall.LOCK_EX or LOCK_SH, with LOCK_NB not to wait
// (the error then wraps syscall.EWOULDBLOCK). Closing the file releases
// the lock.
func Lock(name string, flag, how int) (*os.File, error) {
	f, err := os.OpenFile(name, flag, 0o644)
	return flocked(f, err, how)
}

// lockIn is Lock of name inside root.
func lockIn(root *os.Root, name string, flag, how int) (*os.File, error) {
	f, err := root.OpenFile(name, flag, 0o644)
	return flocked(f, err, how)
}

// flocked takes flock(2) on f, opened with err, as how says, and closes
// it if it cannot.
func flocked(f *os.File, err error, how int) (*os.File, error) {
	if err != nil {
		return nil, err
	}
	if err := Flock(f, how); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return f, nil
}

// Flock takes flock(2) on the open file f as how says (syscall.LOCK_EX,
// LOCK_SH, LOCK_UN, with LOCK_NB not to wait).
func Flock(f *os.File, how int) error {
	conn, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := conn.Control(func(fd uintptr) { ferr = syscall.Flock(int(fd), how) }); err != nil {
		return err
	}
	return ferr
}

// Name is the final name, not the temp file's.
func (f *File) Name() string { return f.name }

// Commit fsyncs the data, renames it into place and fsyncs the directory.
func (f *File) Commit() error { return f.commit(os.Rename) }

// CommitNew is Commit, except that it never replaces a file: when name
// exists, made by anyone at any time before, it fails with an error that
// matches fs.ErrExist and leaves that file as it is. link(2) publishes it,
// where Commit renames; on a file system without hard links (FAT), an
// empty file made with O_EXCL takes the name first, and the rename
// replaces only that.
func (f *File) CommitNew() error {
	return f.commit(func(tmp, name string) error {
		err := os.Link(tmp, name)
		switch {
		case err == nil:
			os.Remove(tmp)
			return nil
		case errors.Is(err, fs.ErrExist):
			return err
		}
		taken, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		taken.Close()
		if err := os.Rename(tmp, name); err != nil {
			os.Remove(name) // the empty file taken above
			return err
		}
		return nil
	})
}

// commit fsyncs the data, publishes it with publish(tmp, name) and fsyncs
// the directory.
func (f *File) commit(publish func(tmp, name string) error) error {
	if f.done {
		return fmt.Errorf("commit %s: already done", f.name)
	}
	f.done = true
	tmp := f.File.Name()
	// Renamed before Close lets the lock go: a Sweep takes an unheld
	// temp file for a dead writer's.
	err := f.Sync()
	if err == nil {
		err = publish(tmp, f.name)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("commit %s: %w", f.name, err)
	}
	if err := SyncDir(filepath.Dir(f.name)); err != nil {
		return fmt.Errorf("commit %s: %w", f.name, err)
	}
	return nil
}

// Keep closes the temp file and leaves it, unlocked, for a later Resume
// of the name, unless Commit or Abort already ran.
func (f *File) Keep() {
	if f.done {
		return
	}
	f.done = true
	f.Close()
}

// Abort discards the temp file, unless Commit already ran.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	os.Remove(f.File.Name())
	f.Close()
}

// WriteFile is os.WriteFile done atomically and durably.
func WriteFile(name string, data []byte, perm fs.FileMode) error {
	f, err := Create(name, perm)
	if err != nil {
		return err
	}
	defer f.Abort()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return f.Commit()
}

// MkdirAll is os.MkdirAll, durably: it fsyncs the parent of each
// directory it makes. made is the topmost of those, "" if dir was there.
func MkdirAll(dir string) (made string, err error) {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); !errors.Is(err, fs.ErrNotExist) {
			break
		}
		made = d
		if filepath.Dir(d) == d {
			break
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	for d := filepath.Clean(dir); made != ""; d = filepath.Dir(d) {
		if err := SyncDir(filepath.Dir(d)); err != nil {
			return "", err
		}
		if d == made {
			break
		}
	}
	return made, nil
}

// SyncDir fsyncs a directory so that renames and creations in it survive
// a crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	return syncDir(d, err, dir)
}

// syncDir fsyncs and closes the directory d, opened as name with err.
func syncDir(d *os.File, err error, name string) error {
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", name, err)
	}
	err = d.Sync()
	// Some filesystems cannot fsync a directory; the rename is then as
	// durable as they allow.
	if errors.Is(err, os.ErrInvalid) || errors.Is(err, syscall.EINVAL) {
		err = nil
	}
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", name, err)
	}
	return nil
}
