package pack

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"runtime"
	"syscall"

	"golang.org/x/sync/errgroup"
)

// findInTree returns the name of a regular file under root, of at most
// limit bytes, that holds s; "" if none does or root is not there (a
// store whose files are elsewhere, a chroot store's root=). A source as
// big as nixpkgs has 40,000 such files: they are read by several
// workers at once, each into one buffer of its own, a file's type taken
// from its directory entry.
func findInTree(parent context.Context, root string, s []byte, limit int) (string, error) {
	names := make(chan string, 256)
	g, ctx := errgroup.WithContext(parent)
	g.Go(func() error {
		defer close(names)
		return filepath.WalkDir(root, func(name string, d fs.DirEntry, err error) error {
			if name == root && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			select {
			case names <- name:
				return nil
			case <-ctx.Done():
				return fs.SkipAll
			}
		})
	})
	for range max(4, runtime.GOMAXPROCS(0)) {
		g.Go(func() error {
			buf := make([]byte, limit+1)
			for name := range names {
				if err := ctx.Err(); err != nil {
					return err
				}
				n, err := readHead(name, buf)
				if err != nil {
					return err
				}
				if n <= limit && bytes.Contains(buf[:n], s) {
					return foundError(name)
				}
			}
			return nil
		})
	}
	err := g.Wait()
	if f := foundError(""); errors.As(err, &f) {
		return string(f), nil
	}
	if err == nil {
		err = parent.Err() // the walk stopped early, with nothing read
	}
	return "", err
}

// foundError names the file a worker found s in, and ends the others.
type foundError string

func (f foundError) Error() string { return "found in " + string(f) }

// readHead reads the start of the file name into buf, as much as fits,
// with no more system calls than that takes: an os.File would add an
// fstat and a finalizer to each of 40,000 files.
func readHead(name string, buf []byte) (int, error) {
	fd, err := syscall.Open(name, syscall.O_RDONLY|syscall.O_CLOEXEC|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	for err == syscall.EINTR {
		fd, err = syscall.Open(name, syscall.O_RDONLY|syscall.O_CLOEXEC|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	}
	if err != nil {
		return 0, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	defer syscall.Close(fd)
	n := 0
	for n < len(buf) {
		m, err := syscall.Read(fd, buf[n:])
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			return n, &fs.PathError{Op: "read", Path: name, Err: err}
		case m == 0:
			return n, nil
		}
		n += m
	}
	return n, nil
}
