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
	"strings"
	"syscall"
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
// the temp files of name that no one holds: what a killed writer left,
// which for a bundle tar can be gigabytes.
func Create(name string, perm fs.FileMode) (*File, error) {
	dir, base := filepath.Split(name)
	if dir == "" {
		dir = "."
	}
	prefix := "." + base + ".tmp-"
	removeStale(dir, prefix)
	tmp, err := os.CreateTemp(dir, prefix+"*")
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", name, err)
	}
	// Best effort: where flock is not supported, stale files stay.
	Flock(tmp, syscall.LOCK_EX)
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("create %s: %w", name, err)
	}
	return &File{File: tmp, name: name}, nil
}

// removeStale removes the files in dir named prefix* that no live writer
// holds a lock on.
func removeStale(dir, prefix string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), prefix) || !e.Type().IsRegular() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		if Flock(f, syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			os.Remove(p)
		}
		f.Close()
	}
}

// Lock opens name (flag as os.OpenFile takes it) and takes flock(2) on
// it as how says: syscall.LOCK_EX or LOCK_SH, with LOCK_NB not to wait
// (the error then wraps syscall.EWOULDBLOCK). Closing the file releases
// the lock.
func Lock(name string, flag, how int) (*os.File, error) {
	f, err := os.OpenFile(name, flag, 0o644)
	if err != nil {
		return nil, err
	}
	if err := Flock(f, how); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", name, err)
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
func (f *File) Commit() error {
	if f.done {
		return fmt.Errorf("commit %s: already done", f.name)
	}
	f.done = true
	tmp := f.File.Name()
	err := Seal(f.File)
	if err == nil {
		err = os.Rename(tmp, f.name)
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

// Abort discards the temp file, unless Commit already ran.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.Close()
	os.Remove(f.File.Name())
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
