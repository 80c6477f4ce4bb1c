package nardelta

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"

	"github.com/nix-airgap/nix-airgap/internal/nar"
)

// Reader reads a delta file: its header first, then, given the base,
// the NAR it rebuilds.
type Reader struct {
	src    io.Reader
	zr     *zstd.Decoder
	body   *bufio.Reader
	header *Header
}

// NewReader reads the magic, version and header of the delta src reads.
// Errors wrap ErrVersion or ErrCorrupt, or are src's. Close the Reader
// when done with it.
func NewReader(src io.Reader) (*Reader, error) {
	var head [len(Magic) + 1]byte
	if _, err := io.ReadFull(src, head[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, corrupt("shorter than its magic")
		}
		return nil, err
	}
	if string(head[:len(Magic)]) != Magic {
		return nil, corrupt("no %q magic", Magic)
	}
	// The version is a uvarint: one byte up to 127.
	if v := head[len(Magic)]; v != Version {
		return nil, fmt.Errorf("%w: version %d, this nix-airgap reads %d", ErrVersion, v, Version)
	}
	zr, err := zstd.NewReader(sourceReader{src}, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(outerWindow), zstd.WithDecoderLowmem(true))
	if err != nil {
		return nil, err
	}
	r := &Reader{src: src, zr: zr, body: bufio.NewReaderSize(zr, 64<<10)}
	if r.header, err = readHeader(r.body); err != nil {
		zr.Close()
		return nil, r.wrap(err)
	}
	return r, nil
}

// Header is what the delta says of its base and result.
func (r *Reader) Header() *Header { return r.header }

// Close releases the decoder.
func (r *Reader) Close() error {
	r.zr.Close()
	return nil
}

// wrap tells a decompression failure of the body as corruption, and a
// read error of the source as it is.
func (r *Reader) wrap(err error) error {
	if err == nil || errors.Is(err, ErrCorrupt) {
		return err
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return corrupt("cut short")
	}
	var pe *readErr
	if errors.As(err, &pe) {
		return pe.err
	}
	return corrupt("%v", err)
}

// readErr marks an error of the delta's source, as opposed to its
// content.
type readErr struct{ err error }

func (e *readErr) Error() string { return e.err.Error() }
func (e *readErr) Unwrap() error { return e.err }

// sourceReader marks the source's own errors.
type sourceReader struct{ r io.Reader }

func (s sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		err = &readErr{err}
	}
	return n, err
}

// Rebuild writes the NAR the delta makes from base to w. It checks first
// that base is the delta's base (ErrBaseMismatch, with its rewrites) and
// last that the NAR has the delta's NarHash and NarSize, and reads the
// delta to its end. Every operation is checked against the bounds and the
// sizes before it runs, so a hostile delta can make it write no more than
// NarSize bytes and allocate no more than a segment, its compressed form
// and a dictionary. An error from w is returned as it is.
func (r *Reader) Rebuild(w io.Writer, base *Base) error {
	h := r.header
	if !base.narHash.Equal(h.BaseNarHash) || base.NarSize() != h.BaseNarSize {
		return fmt.Errorf("%w: base has NarHash %s and NarSize %d, the delta's %s and %d", ErrBaseMismatch, base.narHash, base.NarSize(), h.BaseNarHash, h.BaseNarSize)
	}
	if !equalRewrites(base.rewrites, h.Rewrites) {
		return fmt.Errorf("%w: made with other rewrites", ErrBaseMismatch)
	}
	out := &outWriter{w: w, hw: nar.NewHashWriter(io.Discard), left: h.NarSize}
	if err := r.apply(out, base); err != nil {
		return r.wrap(err)
	}
	if out.left != 0 {
		return corrupt("ends %d bytes short of NarSize %d", out.left, h.NarSize)
	}
	if got := out.hw.Sum(); !got.Equal(h.NarHash) {
		return corrupt("rebuilt NAR has hash %s, the delta says %s", got, h.NarHash)
	}
	// Nothing may follow the end: not in the body, nor after it.
	if _, err := r.body.ReadByte(); err != io.EOF {
		return corrupt("data after the end")
	}
	return nil
}

func equalRewrites(a, b []Rewrite) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (r *Reader) apply(out *outWriter, base *Base) error {
	buf := make([]byte, 256<<10)
	var dec decoder
	defer dec.close()
	for {
		op, err := r.body.ReadByte()
		if err != nil {
			return err
		}
		switch op {
		case opEnd:
			return nil
		case opCopy:
			off, n, err := r.uvarints2()
			if err != nil {
				return err
			}
			if n == 0 || off > uint64(base.size) || n > uint64(base.size)-off {
				return corrupt("copy of %d bytes at %d from a base of %d", n, off, base.size)
			}
			if err := out.room(n); err != nil {
				return err
			}
			if _, err := io.CopyBuffer(out, io.NewSectionReader(base.f, int64(off), int64(n)), buf); err != nil {
				return &readErr{err}
			}
		case opLit:
			n, err := binary.ReadUvarint(r.body)
			if err != nil {
				return err
			}
			if n == 0 {
				return corrupt("empty literal")
			}
			if err := out.room(n); err != nil {
				return err
			}
			if _, err := io.CopyBuffer(out, io.LimitReader(r.body, int64(n)), buf); err != nil {
				return err
			}
			if out.wrote < n {
				return io.ErrUnexpectedEOF
			}
		case opPatch:
			if err := r.patch(out, base, &dec); err != nil {
				return err
			}
		default:
			return corrupt("unknown operation %d", op)
		}
	}
}

func (r *Reader) uvarints2() (uint64, uint64, error) {
	a, err := binary.ReadUvarint(r.body)
	if err != nil {
		return 0, 0, err
	}
	b, err := binary.ReadUvarint(r.body)
	return a, b, err
}

// patch decompresses one segment with its dictionary of base bytes.
func (r *Reader) patch(out *outWriter, base *Base, dec *decoder) error {
	var v [4]uint64
	for i := range v {
		x, err := binary.ReadUvarint(r.body)
		if err != nil {
			return err
		}
		v[i] = x
	}
	dictOff, dictLen, n, compLen := v[0], v[1], v[2], v[3]
	switch {
	case dictLen == 0 || dictLen > MaxDict || dictOff > uint64(base.size) || dictLen > uint64(base.size)-dictOff:
		return corrupt("patch dictionary of %d bytes at %d from a base of %d", dictLen, dictOff, base.size)
	case n == 0 || n > MaxSegment:
		return corrupt("patch of %d bytes", n)
	case compLen == 0 || compLen > maxCompressed:
		return corrupt("patch compressed to %d bytes", compLen)
	}
	if err := out.room(n); err != nil {
		return err
	}
	comp := dec.buffer(&dec.comp, int(compLen))
	if _, err := io.ReadFull(r.body, comp); err != nil {
		return err
	}
	// Consecutive patches often share a dictionary.
	if dec.zd == nil || dictOff != dec.dictOff || dictLen != dec.dictLen {
		dict := dec.buffer(&dec.dict, int(dictLen))
		if err := base.readAt(dict, int64(dictOff)); err != nil {
			return &readErr{err}
		}
		if err := dec.setDict(dict); err != nil {
			return err
		}
		dec.dictOff, dec.dictLen = dictOff, dictLen
	}
	raw, err := dec.decode(comp, int(n))
	if err != nil {
		return err
	}
	_, err = out.Write(raw)
	return err
}

// maxCompressed bounds a patch's zstd frame: a segment zstd could not
// compress, plus its framing.
const maxCompressed = MaxSegment + MaxSegment/128 + 1024

// decoder decodes patches, reusing its buffers and, while patches
// share it, its dictionary.
type decoder struct {
	comp, dict, raw  []byte
	dictOff, dictLen uint64
	zd               *zstd.Decoder
}

func (d *decoder) buffer(b *[]byte, n int) []byte {
	if cap(*b) < n {
		*b = make([]byte, n)
	}
	return (*b)[:n]
}

func (d *decoder) setDict(dict []byte) error {
	opts := []zstd.DOption{zstd.WithDecoderDictRaw(dictID, dict)}
	if d.zd == nil {
		zd, err := zstd.NewReader(nil, append(opts, zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxWindow(patchWindow), zstd.WithDecodeAllCapLimit(true))...)
		if err != nil {
			return err
		}
		d.zd = zd
		return nil
	}
	return d.zd.ResetWithOptions(nil, opts...)
}

func (d *decoder) decode(comp []byte, n int) ([]byte, error) {
	// The cap limit makes a frame that says it is larger than n fail
	// rather than allocate.
	raw, err := d.zd.DecodeAll(comp, d.buffer(&d.raw, n)[:0])
	if err != nil {
		return nil, corrupt("patch: %v", err)
	}
	if len(raw) != n {
		return nil, corrupt("patch makes %d bytes, says %d", len(raw), n)
	}
	return raw, nil
}

func (d *decoder) close() {
	if d.zd != nil {
		d.zd.Close()
	}
}

// outWriter counts, hashes and bounds what the delta writes.
type outWriter struct {
	w     io.Writer
	hw    *nar.HashWriter
	left  uint64
	wrote uint64 // by the last operation
}

// room checks that n more bytes fit in NarSize, and starts counting an
// operation's bytes.
func (o *outWriter) room(n uint64) error {
	if n > o.left {
		return corrupt("an operation of %d bytes runs past NarSize", n)
	}
	o.wrote = 0
	return nil
}

func (o *outWriter) Write(p []byte) (int, error) {
	if uint64(len(p)) > o.left {
		return 0, corrupt("runs past NarSize")
	}
	n, err := o.w.Write(p)
	o.hw.Write(p[:n])
	o.left -= uint64(n)
	o.wrote += uint64(n)
	if err != nil {
		return n, &readErr{err} // the caller's writer: passed on as it is
	}
	return n, nil
}
