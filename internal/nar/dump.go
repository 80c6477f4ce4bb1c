package nar

import (
	"bufio"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"slices"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// copyBufSize is the read size for file contents: large reads keep the
// syscall count low when dumping gigabytes.
const copyBufSize = 1 << 20

// dumpBufs holds idle read buffers and NAR writer buffers: pack dumps
// hundreds of NARs, most of them small, and zeroing fresh buffers for each
// costs more than dumping it.
var dumpBufs = sync.Pool{New: func() any {
	return &dumpBuf{read: make([]byte, copyBufSize), names: make([]byte, direntBufSize), bw: bufio.NewWriterSize(nil, writerBufSize)}
}}

type dumpBuf struct {
	read, names []byte
	bw          *bufio.Writer
}

// direntBufSize is the getdents buffer size, Go's own (os.File.ReadDir).
const direntBufSize = 8 << 10

// Dump writes the NAR of the file system object at path to w, exactly as
// nix-store --dump does: a regular file is executable if its owner may
// execute it (S_IXUSR), directory entries are sorted bytewise, symlink
// targets are kept verbatim. Sockets, devices and FIFOs are rejected with
// ErrUnsupportedType.
func Dump(w io.Writer, path string) error {
	b := dumpBufs.Get().(*dumpBuf)
	defer func() {
		b.bw.Reset(nil)
		dumpBufs.Put(b)
	}()
	b.bw.Reset(w)
	nw := &Writer{dst: w, bw: b.bw}
	d := dumper{nw: nw, buf: b.read, names: b.names}
	if err := d.dump(unix.AT_FDCWD, path, path, "/"); err != nil {
		return err
	}
	if err := nw.Close(); err != nil {
		return fmt.Errorf("dump %s: %w", path, err)
	}
	return nil
}

// DumpHash is Dump that also returns the NAR's sha256 hash (NarHash) and
// its size (NarSize), computed in the same pass. w may be io.Discard.
func DumpHash(w io.Writer, path string) (storepath.Hash, int64, error) {
	hw := NewHashWriter(w)
	if err := Dump(hw, path); err != nil {
		return storepath.Hash{}, 0, err
	}
	return hw.Sum(), hw.Size(), nil
}

// DumpReader reads as the NAR of a file system object. Its WriteTo dumps
// straight into the destination, which io.Copy and its kin prefer; Read
// dumps through a pipe from a goroutine, started by the first Read.
type DumpReader struct {
	path string
	pr   *io.PipeReader
}

// NewDumpReader returns a DumpReader for the object at path.
func NewDumpReader(path string) *DumpReader { return &DumpReader{path: path} }

// WriteTo writes the whole NAR to w, as Dump does. It must not be mixed
// with Read.
func (d *DumpReader) WriteTo(w io.Writer) (int64, error) {
	cw := &CountingWriter{W: w}
	err := Dump(cw, d.path)
	return cw.N, err
}

func (d *DumpReader) Read(p []byte) (int, error) {
	if d.pr == nil {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(Dump(pw, d.path)) }()
		d.pr = pr
	}
	return d.pr.Read(p)
}

// Close stops a dump that Read started and has not finished.
func (d *DumpReader) Close() error {
	if d.pr != nil {
		d.pr.CloseWithError(errors.New("dump: reader closed"))
	}
	return nil
}

// CountingWriter passes writes on to W and counts in N the bytes W took;
// over io.Discard it only counts.
type CountingWriter struct {
	W io.Writer
	N int64
}

func (c *CountingWriter) Write(p []byte) (int, error) {
	n, err := c.W.Write(p)
	c.N += int64(n)
	return n, err
}

type dumper struct {
	nw    *Writer
	buf   []byte
	names []byte // getdents buffer
}

// dump writes the object at fsPath, which is name in the directory dirfd
// (unix.AT_FDCWD and the whole path for the root). Every file below the
// root is stat'ed and opened relative to its directory's descriptor, so
// that the kernel walks one path component per call, not the whole path
// each time: for a closure of 13,000 small files that walk was most of
// the system time of dumping it.
func (d *dumper) dump(dirfd int, name, fsPath, narPath string) error {
	var st unix.Stat_t
	if err := retryEINTR(func() error { return unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) }); err != nil {
		return fmt.Errorf("dump %s: %w", fsPath, &fs.PathError{Op: "lstat", Path: fsPath, Err: err})
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return d.dumpFile(dirfd, name, fsPath, narPath, st.Size, st.Mode&0o100 != 0)
	case unix.S_IFDIR:
		if err := d.nw.WriteHeader(&Header{Path: narPath, Type: TypeDirectory}); err != nil {
			return fmt.Errorf("dump %s: %w", fsPath, err)
		}
		fd, err := openAt(dirfd, name, unix.O_DIRECTORY)
		if err != nil {
			return fmt.Errorf("dump %s: %w", fsPath, &fs.PathError{Op: "open", Path: fsPath, Err: err})
		}
		defer unix.Close(fd)
		names, err := d.readDirNames(fd)
		if err != nil {
			return fmt.Errorf("dump %s: %w", fsPath, &fs.PathError{Op: "readdirent", Path: fsPath, Err: err})
		}
		slices.Sort(names) // Go compares strings bytewise, as Nix's std::map does
		for _, name := range names {
			child := narPath + "/" + name
			if narPath == "/" {
				child = "/" + name
			}
			if err := d.dump(fd, name, fsPath+"/"+name, child); err != nil {
				return err
			}
		}
		return nil
	case unix.S_IFLNK:
		target, err := readlinkAt(dirfd, name)
		if err != nil {
			return fmt.Errorf("dump %s: %w", fsPath, &fs.PathError{Op: "readlink", Path: fsPath, Err: err})
		}
		if err := d.nw.WriteHeader(&Header{Path: narPath, Type: TypeSymlink, LinkTarget: target}); err != nil {
			return fmt.Errorf("dump %s: %w", fsPath, err)
		}
		return nil
	default:
		return fmt.Errorf("dump %s: %s: %w", fsPath, fileKind(uint32(st.Mode)), ErrUnsupportedType)
	}
}

func (d *dumper) dumpFile(dirfd int, name, fsPath, narPath string, size int64, executable bool) error {
	// Raw syscalls, not os.File: os.Open registers each file with the
	// runtime's poller, four more syscalls per file that do nothing for a
	// regular file and tripled the syscalls of dumping small files.
	fd, err := openAt(dirfd, name, 0)
	if err != nil {
		return fmt.Errorf("dump %s: %w", fsPath, &fs.PathError{Op: "open", Path: fsPath, Err: err})
	}
	defer unix.Close(fd)
	hdr := &Header{Path: narPath, Type: TypeRegular, Size: size, Executable: executable}
	if err := d.nw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("dump %s: %w", fsPath, err)
	}
	// Like Nix, write exactly the size lstat gave: a file that shrinks
	// meanwhile is an error, one that grows is cut off.
	for left := size; left > 0; {
		n, err := readFD(fd, d.buf[:min(left, int64(len(d.buf)))])
		if err != nil {
			return fmt.Errorf("dump %s: %w", fsPath, &fs.PathError{Op: "read", Path: fsPath, Err: err})
		}
		if n == 0 {
			return fmt.Errorf("dump %s: file shrank to %d of %d bytes during dump", fsPath, size-left, size)
		}
		if _, err := d.nw.Write(d.buf[:n]); err != nil {
			return fmt.Errorf("dump %s: %w", fsPath, err)
		}
		left -= int64(n)
	}
	return nil
}

func retryEINTR(f func() error) error {
	for {
		if err := f(); err != unix.EINTR {
			return err
		}
	}
}

// openAt opens name in dirfd for reading, never following a symlink.
func openAt(dirfd int, name string, flags int) (int, error) {
	var fd int
	err := retryEINTR(func() (err error) {
		fd, err = unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW|flags, 0)
		return err
	})
	return fd, err
}

func readlinkAt(dirfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		b := make([]byte, size)
		var n int
		err := retryEINTR(func() (err error) {
			n, err = unix.Readlinkat(dirfd, name, b)
			return err
		})
		if err != nil {
			return "", err
		}
		if n < size {
			return string(b[:n]), nil
		}
	}
}

func readFD(fd int, b []byte) (int, error) {
	for {
		n, err := unix.Read(fd, b)
		if err != unix.EINTR {
			return max(n, 0), err
		}
	}
}

// readDirNames lists the directory open as fd, without "." and "..".
func (d *dumper) readDirNames(fd int) ([]string, error) {
	var names []string
	for {
		var n int
		err := retryEINTR(func() (err error) {
			n, err = unix.ReadDirent(fd, d.names)
			return err
		})
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(d.names[:n], -1, names)
	}
}

func fileKind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFIFO:
		return "FIFO"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	}
	return fmt.Sprintf("file of mode %#o", mode)
}

// HashWriter passes writes through to another writer while computing
// their sha256 and length: NarHash and NarSize when fed a NAR.
type HashWriter struct {
	w    io.Writer
	h    hash.Hash
	size int64
}

// NewHashWriter returns a HashWriter writing through to w (which may be
// io.Discard).
func NewHashWriter(w io.Writer) *HashWriter {
	return &HashWriter{w: w, h: sha256.New()}
}

func (hw *HashWriter) Write(p []byte) (int, error) {
	n, err := hw.w.Write(p)
	hw.h.Write(p[:n])
	hw.size += int64(n)
	return n, err
}

// Sum is the sha256 of everything written so far.
func (hw *HashWriter) Sum() storepath.Hash {
	return storepath.Hash{Algo: storepath.SHA256, Digest: hw.h.Sum(nil)}
}

// Size is the number of bytes written so far.
func (hw *HashWriter) Size() int64 { return hw.size }
