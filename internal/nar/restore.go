package nar

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// Restore unpacks the NAR read from r to path, which must not exist, as
// nix-store --restore does: path becomes the NAR's root object. Entries
// are created through an os.Root, so nothing is written outside path even
// if the NAR were crafted to try. On error, path is removed again.
func Restore(r io.Reader, path string) (err error) {
	nr := NewReader(r)
	hdr, err := nr.Next()
	if err != nil {
		return fmt.Errorf("restore %s: %w", path, err)
	}
	created := false
	defer func() {
		if err != nil && created {
			os.RemoveAll(path)
		}
	}()
	buf := make([]byte, copyBufSize)
	switch hdr.Type {
	case TypeRegular:
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
		if err != nil {
			return fmt.Errorf("restore %s: %w", path, err)
		}
		created = true
		if err := writeFile(f, nr, hdr, buf); err != nil {
			return fmt.Errorf("restore %s: %w", path, err)
		}
	case TypeSymlink:
		if err := os.Symlink(hdr.LinkTarget, path); err != nil {
			return fmt.Errorf("restore %s: %w", path, err)
		}
		created = true
	case TypeDirectory:
		if err := os.Mkdir(path, 0o777); err != nil {
			return fmt.Errorf("restore %s: %w", path, err)
		}
		created = true
		root, err := os.OpenRoot(path)
		if err != nil {
			return fmt.Errorf("restore %s: %w", path, err)
		}
		defer root.Close()
		if err := restoreEntries(root, nr, buf); err != nil {
			return fmt.Errorf("restore %s: %w", path, err)
		}
		return nil
	}
	if _, err := nr.Next(); err != io.EOF {
		if err == nil {
			err = fmt.Errorf("object after a non-directory root: %w", ErrInvalid)
		}
		return fmt.Errorf("restore %s: %w", path, err)
	}
	return nil
}

func restoreEntries(root *os.Root, nr *Reader, buf []byte) error {
	for {
		hdr, err := nr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := hdr.Path[1:] // the Reader guarantees "/" + valid names
		switch hdr.Type {
		case TypeRegular:
			f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
			if err != nil {
				return err
			}
			if err := writeFile(f, nr, hdr, buf); err != nil {
				return err
			}
		case TypeSymlink:
			if err := root.Symlink(hdr.LinkTarget, name); err != nil {
				return err
			}
		case TypeDirectory:
			if err := root.Mkdir(name, 0o777); err != nil {
				return err
			}
		}
	}
}

// writeFile copies the current file's contents into f, sets its executable
// bits as Nix does (all three, whatever the umask) and closes f.
func writeFile(f *os.File, nr *Reader, hdr *Header, buf []byte) error {
	// Hide f's ReadFrom, which would fall back to io.Copy's small buffer.
	_, err := io.CopyBuffer(struct{ io.Writer }{f}, nr, buf)
	if err == nil && hdr.Executable {
		var fi os.FileInfo
		if fi, err = f.Stat(); err == nil {
			err = f.Chmod(fi.Mode().Perm() | 0o111)
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", hdr.Path, err)
	}
	return nil
}
