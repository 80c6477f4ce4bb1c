package nar

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
)

type readState uint8

const (
	stateStart    readState = iota // before the magic
	stateContents                  // in a regular file's contents
	stateNodeDone                  // a node's ")" has been read
	stateDir                       // in a directory, before "entry" or ")"
	stateDone                      // Next returned io.EOF or an error
)

// dirFrame is an open directory: its path and the last entry name seen.
type dirFrame struct {
	path string
	prev string
}

// Reader reads a NAR sequentially. It validates the archive as it goes and
// never buffers a file's contents. It accepts only the canonical form Nix
// writes, which is stricter than Nix 2.8's own parser: that one takes
// fields in any order and, through a bug, unsorted directory entries, but
// a NAR that is not canonical would not hash to its NarHash when re-dumped.
type Reader struct {
	src       io.Reader // read directly for contents when br is empty
	br        *bufio.Reader
	off       int64 // bytes consumed from br
	state     readState
	dirs      []dirFrame
	remaining int64 // unread contents of the current regular file
	padding   int64 // padding after the current file's contents
	err       error // sticky
	scratch   [targetMax + 8]byte
}

// NewReader returns a Reader reading a NAR from r. It reads ahead from r
// in large blocks, so r's position after the NAR is not defined.
func NewReader(r io.Reader) *Reader {
	return &Reader{src: r, br: bufio.NewReaderSize(r, 64<<10)}
}

// Next advances to the next object in the NAR, skipping what is left of the
// current file's contents. It returns io.EOF after the last object, once it
// has checked that nothing follows the archive. Any other error is sticky.
func (r *Reader) Next() (*Header, error) {
	if r.err != nil {
		return nil, r.err
	}
	hdr, err := r.next()
	if err != nil {
		r.err = err
		r.state = stateDone
		return nil, err
	}
	return hdr, nil
}

func (r *Reader) next() (*Header, error) {
	switch r.state {
	case stateStart:
		if err := r.expect(magic); err != nil {
			return nil, err
		}
		return r.node("/")
	case stateContents:
		if err := r.skipContents(); err != nil {
			return nil, err
		}
		if err := r.expect(")"); err != nil {
			return nil, err
		}
		r.state = stateNodeDone
	}
	for {
		switch r.state {
		case stateNodeDone:
			if len(r.dirs) == 0 {
				return nil, r.end()
			}
			if err := r.expect(")"); err != nil { // closes "entry ("
				return nil, err
			}
			r.state = stateDir
		case stateDir:
			tok, err := r.readToken()
			if err != nil {
				return nil, err
			}
			switch tok {
			case ")":
				r.dirs = r.dirs[:len(r.dirs)-1]
				r.state = stateNodeDone
			case "entry":
				return r.entry()
			default:
				return nil, r.invalidf("expected \"entry\" or \")\", got %q", tok)
			}
		default:
			return nil, r.invalidf("reader in bad state %d", r.state)
		}
	}
}

// entry reads "( name NAME node" and the node that follows.
func (r *Reader) entry() (*Header, error) {
	if err := r.expect("("); err != nil {
		return nil, err
	}
	if err := r.expect("name"); err != nil {
		return nil, err
	}
	b, err := r.readBytes(nameMax)
	if err != nil {
		return nil, err
	}
	name := string(b)
	if !validName(name) {
		return nil, r.invalidf("invalid entry name %q", name)
	}
	dir := &r.dirs[len(r.dirs)-1]
	if dir.prev != "" && name <= dir.prev {
		if name == dir.prev {
			return nil, r.invalidf("duplicate entry %q in %s", name, dir.path)
		}
		return nil, r.invalidf("entry %q after %q in %s: not sorted", name, dir.prev, dir.path)
	}
	dir.prev = name
	path := dir.path + "/" + name
	if dir.path == "/" {
		path = "/" + name
	}
	if len(path) > pathMax {
		return nil, r.invalidf("path of %d bytes is too long", len(path))
	}
	if err := r.expect("node"); err != nil {
		return nil, err
	}
	return r.node(path)
}

// node reads "( type ..." up to the contents of a regular file, the end of
// a symlink or the start of a directory's entries.
func (r *Reader) node(path string) (*Header, error) {
	if err := r.expect("("); err != nil {
		return nil, err
	}
	if err := r.expect("type"); err != nil {
		return nil, err
	}
	tok, err := r.readToken()
	if err != nil {
		return nil, err
	}
	switch tok {
	case "regular":
		hdr := &Header{Path: path, Type: TypeRegular}
		tok, err := r.readToken()
		if err != nil {
			return nil, err
		}
		if tok == "executable" {
			hdr.Executable = true
			if err := r.expect(""); err != nil {
				return nil, err
			}
			if tok, err = r.readToken(); err != nil {
				return nil, err
			}
		}
		if tok != "contents" {
			return nil, r.invalidf("expected \"contents\", got %q", tok)
		}
		size, err := r.readUint64()
		if err != nil {
			return nil, err
		}
		if size > 1<<62 {
			return nil, r.invalidf("file size %d is too large", size)
		}
		hdr.Size = int64(size)
		hdr.Offset = r.off
		r.remaining = hdr.Size
		r.padding = padLen(hdr.Size)
		r.state = stateContents
		return hdr, nil
	case "symlink":
		if err := r.expect("target"); err != nil {
			return nil, err
		}
		b, err := r.readBytes(targetMax)
		if err != nil {
			return nil, err
		}
		if len(b) == 0 || bytes.IndexByte(b, 0) >= 0 {
			return nil, r.invalidf("invalid symlink target %q", b)
		}
		hdr := &Header{Path: path, Type: TypeSymlink, LinkTarget: string(b)}
		if err := r.expect(")"); err != nil {
			return nil, err
		}
		r.state = stateNodeDone
		return hdr, nil
	case "directory":
		r.dirs = append(r.dirs, dirFrame{path: path})
		r.state = stateDir
		return &Header{Path: path, Type: TypeDirectory}, nil
	}
	return nil, r.invalidf("unknown file type %q", tok)
}

// Read reads the current regular file's contents. It returns io.EOF at the
// end of the file and for directories and symlinks.
func (r *Reader) Read(p []byte) (int, error) {
	if r.state != stateContents || r.remaining == 0 {
		if r.err != nil && r.err != io.EOF {
			return 0, r.err
		}
		return 0, io.EOF
	}
	if int64(len(p)) > r.remaining {
		p = p[:r.remaining]
	}
	var (
		n   int
		err error
	)
	if r.br.Buffered() == 0 && len(p) >= 4<<10 {
		// Large reads bypass the buffer: one copy fewer per byte.
		n, err = r.src.Read(p)
		if n > 0 && err == io.EOF {
			err = nil
		}
	} else {
		n, err = r.br.Read(p)
	}
	r.off += int64(n)
	r.remaining -= int64(n)
	if err != nil {
		if err == io.EOF {
			err = r.truncated()
		} else {
			err = fmt.Errorf("read nar at byte %d: %w", r.off, err)
		}
		r.err, r.state = err, stateDone
		return n, err
	}
	return n, nil
}

// skipContents discards the rest of the current file and checks its padding.
func (r *Reader) skipContents() error {
	for r.remaining > 0 {
		n, err := r.br.Discard(int(min(r.remaining, 1<<20)))
		r.off += int64(n)
		r.remaining -= int64(n)
		if err != nil {
			return r.readErr(err)
		}
	}
	return r.readPadding(r.padding)
}

// end checks that nothing follows the archive.
func (r *Reader) end() error {
	if _, err := r.br.Peek(1); err == nil {
		return r.invalidf("trailing data after the archive")
	} else if err != io.EOF {
		return r.readErr(err)
	}
	return io.EOF
}

func (r *Reader) readUint64() (uint64, error) {
	b, err := r.br.Peek(8)
	if err != nil {
		return 0, r.readErr(err)
	}
	v := binary.LittleEndian.Uint64(b)
	r.br.Discard(8)
	r.off += 8
	return v, nil
}

// readBytes reads a string of at most max bytes and its padding. The
// result aliases r.scratch until the next call.
func (r *Reader) readBytes(max int) ([]byte, error) {
	n, err := r.readUint64()
	if err != nil {
		return nil, err
	}
	if n > uint64(max) {
		return nil, r.invalidf("string of %d bytes is longer than the limit of %d", n, max)
	}
	b := r.scratch[:n]
	if _, err := io.ReadFull(r.br, b); err != nil {
		return nil, r.readErr(err)
	}
	r.off += int64(n)
	return b, r.readPadding(padLen(int64(n)))
}

func (r *Reader) readPadding(n int64) error {
	if n == 0 {
		return nil
	}
	b, err := r.br.Peek(int(n))
	if err != nil {
		return r.readErr(err)
	}
	for _, c := range b {
		if c != 0 {
			return r.invalidf("non-zero padding")
		}
	}
	r.br.Discard(int(n))
	r.off += n
	return nil
}

// readToken reads a keyword. Anything longer than the longest keyword is
// invalid, so a hostile length never allocates.
func (r *Reader) readToken() (string, error) {
	b, err := r.readBytes(tokenMax)
	if err != nil {
		return "", err
	}
	switch string(b) { // switch on string(b) does not allocate
	case "(":
		return "(", nil
	case ")":
		return ")", nil
	case "entry":
		return "entry", nil
	case "regular":
		return "regular", nil
	case "executable":
		return "executable", nil
	case "contents":
		return "contents", nil
	case "symlink":
		return "symlink", nil
	case "directory":
		return "directory", nil
	}
	return string(b), nil
}

func (r *Reader) expect(want string) error {
	start := r.off
	b, err := r.readBytes(tokenMax)
	if err != nil {
		return err
	}
	if string(b) != want {
		return fmt.Errorf("read nar at byte %d: expected %q, got %q: %w", start, want, b, ErrInvalid)
	}
	return nil
}

func (r *Reader) invalidf(format string, args ...any) error {
	return fmt.Errorf("read nar at byte %d: %s: %w", r.off, fmt.Sprintf(format, args...), ErrInvalid)
}

func (r *Reader) truncated() error {
	return fmt.Errorf("read nar at byte %d: truncated: %w", r.off, io.ErrUnexpectedEOF)
}

// readErr turns io.EOF and io.ErrUnexpectedEOF in the middle of the
// archive into a truncation error and wraps any other error.
func (r *Reader) readErr(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return r.truncated()
	}
	return fmt.Errorf("read nar at byte %d: %w", r.off, err)
}

// padLen is the number of zero bytes that pad n bytes to a multiple of 8.
func padLen(n int64) int64 { return -n & 7 }
