package nar

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
)

// Writer writes a NAR. Call WriteHeader for each object in NAR order (a
// directory before its entries, entries sorted bytewise), Write for a
// regular file's contents, then Close.
type Writer struct {
	dst       io.Writer // written directly for large contents
	bw        *bufio.Writer
	started   bool
	closed    bool
	dirs      []dirFrame
	inFile    bool  // a regular file's node is open
	remaining int64 // contents still to write
	size      int64
	err       error // sticky
}

// writerBufSize is the buffer for a NAR's headers and small contents.
const writerBufSize = 64 << 10

// NewWriter returns a Writer writing a NAR to w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{dst: w, bw: bufio.NewWriterSize(w, writerBufSize)}
}

// WriteHeader starts the next object. The previous regular file must have
// had exactly its Size bytes written.
func (w *Writer) WriteHeader(hdr *Header) error {
	if w.err != nil {
		return w.err
	}
	if err := w.writeHeader(hdr); err != nil {
		w.err = err
		return err
	}
	return nil
}

func (w *Writer) writeHeader(hdr *Header) error {
	if w.closed {
		return fmt.Errorf("write nar header %s: writer is closed", hdr.Path)
	}
	if err := w.closeFile(); err != nil {
		return err
	}
	if !w.started {
		if hdr.Path != "/" {
			return fmt.Errorf("write nar header %s: first object must be the root \"/\"", hdr.Path)
		}
		w.started = true
		w.str(magic)
	} else {
		if err := w.enter(hdr.Path); err != nil {
			return err
		}
	}
	w.str("(")
	w.str("type")
	switch hdr.Type {
	case TypeRegular:
		if hdr.Size < 0 {
			return fmt.Errorf("write nar header %s: negative size %d", hdr.Path, hdr.Size)
		}
		w.str("regular")
		if hdr.Executable {
			w.str("executable")
			w.str("")
		}
		w.str("contents")
		w.uint64(uint64(hdr.Size))
		w.inFile, w.remaining, w.size = true, hdr.Size, hdr.Size
	case TypeSymlink:
		if hdr.LinkTarget == "" || len(hdr.LinkTarget) > targetMax || strings.IndexByte(hdr.LinkTarget, 0) >= 0 {
			return fmt.Errorf("write nar header %s: invalid symlink target %q", hdr.Path, hdr.LinkTarget)
		}
		w.str("symlink")
		w.str("target")
		w.str(hdr.LinkTarget)
		w.str(")")
		w.leave()
	case TypeDirectory:
		w.str("directory")
		w.dirs = append(w.dirs, dirFrame{path: hdr.Path})
	default:
		return fmt.Errorf("write nar header %s: unknown type %v", hdr.Path, hdr.Type)
	}
	return nil
}

// enter closes the directories path is not in and writes the "entry"
// that opens path, checking that it comes in NAR order.
func (w *Writer) enter(path string) error {
	i := strings.LastIndexByte(path, '/')
	if i < 0 || len(path) > pathMax || (i > 0 && path[i-1] == '/') {
		return fmt.Errorf("write nar header %s: invalid path", path)
	}
	parent, name := path[:i], path[i+1:]
	if i == 0 {
		parent = "/"
	}
	if !validName(name) {
		return fmt.Errorf("write nar header %s: invalid name %q", path, name)
	}
	for len(w.dirs) > 0 && w.dirs[len(w.dirs)-1].path != parent {
		w.dirs = w.dirs[:len(w.dirs)-1]
		w.str(")")
		w.leave()
	}
	if len(w.dirs) == 0 {
		return fmt.Errorf("write nar header %s: parent %s is not an open directory (out of order?)", path, parent)
	}
	dir := &w.dirs[len(w.dirs)-1]
	if dir.prev != "" && name <= dir.prev {
		return fmt.Errorf("write nar header %s: after %q in %s: entries must be unique and sorted bytewise", path, dir.prev, parent)
	}
	dir.prev = name
	w.str("entry")
	w.str("(")
	w.str("name")
	w.str(name)
	w.str("node")
	return nil
}

// leave closes the "entry (" around a finished node below the root.
func (w *Writer) leave() {
	if len(w.dirs) > 0 {
		w.str(")")
	}
}

func (w *Writer) closeFile() error {
	if !w.inFile {
		return nil
	}
	if w.remaining != 0 {
		return fmt.Errorf("write nar: file has %d of %d bytes written", w.size-w.remaining, w.size)
	}
	w.inFile = false
	w.pad(w.size)
	w.str(")")
	w.leave()
	return nil
}

// Write writes contents of the current regular file.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !w.inFile || int64(len(p)) > w.remaining {
		w.err = fmt.Errorf("write nar: %d bytes more than the header's size %d", int64(len(p))-w.remaining, w.size)
		if !w.inFile {
			w.err = fmt.Errorf("write nar: contents without a regular file header")
		}
		return 0, w.err
	}
	var (
		n   int
		err error
	)
	if len(p) >= 4<<10 {
		// Large writes bypass the buffer: one copy fewer per byte.
		if err = w.bw.Flush(); err == nil {
			n, err = w.dst.Write(p)
		}
	} else {
		n, err = w.bw.Write(p)
	}
	w.remaining -= int64(n)
	if err != nil {
		w.err = fmt.Errorf("write nar: %w", err)
	}
	return n, w.err
}

// Close finishes the archive and flushes it. It does not close the
// underlying writer.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return nil
	}
	if !w.started {
		w.err = fmt.Errorf("write nar: no objects written")
		return w.err
	}
	if err := w.closeFile(); err != nil {
		w.err = err
		return err
	}
	for len(w.dirs) > 0 {
		w.dirs = w.dirs[:len(w.dirs)-1]
		w.str(")")
		w.leave()
	}
	w.closed = true
	if err := w.bw.Flush(); err != nil {
		w.err = fmt.Errorf("write nar: %w", err)
	}
	return w.err
}

// str, uint64 and pad write into the bufio.Writer, whose error is sticky
// and reported by the next Write or Flush.
func (w *Writer) str(s string) {
	w.uint64(uint64(len(s)))
	w.bw.WriteString(s)
	w.pad(int64(len(s)))
}

func (w *Writer) uint64(v uint64) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	w.bw.Write(b[:])
}

var zeros [8]byte

func (w *Writer) pad(n int64) {
	w.bw.Write(zeros[:padLen(n)])
}
