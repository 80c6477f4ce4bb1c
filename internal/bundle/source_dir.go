package bundle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"golang.org/x/sync/errgroup"
)

// dirSource is a bundle directory. Its files are read by name (the
// manifest first) and in parallel, jobs at a time. Every access goes
// through an os.Root, so no name or symlink reaches outside it.
type dirSource struct {
	root *os.Root
	jobs int
}

func openDirSource(dir string, jobs int) (*dirSource, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	return &dirSource{root: root, jobs: jobs}, nil
}

func (s *dirSource) close() { s.root.Close() }

func (s *dirSource) absent() string { return "not found" }

// open opens the regular file name.
func (s *dirSource) open(name string) (io.ReadCloser, error) {
	f, err := s.root.Open(name)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, errors.New("not a regular file")
	}
	return statFile{f, fi}, nil
}

// statFile is an open file that answers Stat (readSmall's, for a small
// file's size) from the one open made.
type statFile struct {
	*os.File
	fi fs.FileInfo
}

func (f statFile) Stat() (fs.FileInfo, error) { return f.fi, nil }

// files walks the directory, skipping names that start with "." (temp
// files), and passes every file to r, jobs at a time.
func (s *dirSource) files(ctx context.Context, r receiver) (ending, error) {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.jobs)
	err := walkDir(s.root.FS(), ".", func(p string, de fs.DirEntry, err error) error {
		switch {
		case gctx.Err() != nil:
			return gctx.Err()
		case err != nil:
			r.problem(p, KindCorrupt, "%v", err)
			return nil
		case strings.HasPrefix(de.Name(), "."):
			if de.IsDir() {
				return fs.SkipDir
			}
			return nil
		case de.IsDir():
			return nil
		}
		f := &file{name: p, size: -1, open: func() (io.ReadCloser, error) { return s.open(p) }}
		if !de.Type().IsRegular() {
			f.notRegular = de.Type().String()
		}
		g.Go(func() error {
			err := r.file(f)
			if re := (*readError)(nil); errors.As(err, &re) {
				r.problem(p, KindCorrupt, "read: %v", re.err)
				return nil
			}
			return err
		})
		return nil
	})
	if gerr := g.Wait(); gerr != nil {
		return ending{}, gerr
	}
	return ending{}, err
}

// DirBytes adds up the sizes of the files of the bundle directory dir
// that verify reads: all but temp files, as files walks them. It is what
// the bundle takes on a medium.
func DirBytes(dir string) (uint64, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", dir, err)
	}
	defer root.Close()
	var n uint64
	err = walkDir(root.FS(), ".", func(p string, de fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case strings.HasPrefix(de.Name(), ".") && de.IsDir():
			return fs.SkipDir
		case strings.HasPrefix(de.Name(), "."), de.IsDir():
			return nil
		}
		fi, err := de.Info()
		if err != nil {
			return err
		}
		n += uint64(fi.Size())
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", dir, err)
	}
	return n, nil
}

// walkDir calls fn for everything under dir in fsys, as fs.WalkDir does
// but in directory order, reading a directory a batch at a time: a
// bundle's top directory holds a narinfo per path and nar/ a file, and
// fs.WalkDir holds every entry of each, sorted, while it walks them (a
// few hundred bytes a path). fn is not called for dir itself, and may
// return fs.SkipDir for a directory not to enter it.
func walkDir(fsys fs.FS, dir string, fn fs.WalkDirFunc) error {
	f, err := fsys.Open(dir)
	if err != nil {
		return fn(dir, nil, err)
	}
	defer f.Close()
	d, ok := f.(fs.ReadDirFile)
	if !ok {
		return fn(dir, nil, fmt.Errorf("%s: not a directory", dir))
	}
	for {
		batch, err := d.ReadDir(256)
		for _, de := range batch {
			p := path.Join(dir, de.Name())
			switch err := fn(p, de, nil); {
			case err == fs.SkipDir:
				continue
			case err != nil:
				return err
			}
			if de.IsDir() {
				if err := walkDir(fsys, p, fn); err != nil {
					return err
				}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fn(dir, nil, err)
		}
	}
}
