// Package compression opens and creates the compressed NAR files of binary
// caches, by the names Nix writes in a narinfo's Compression field.
//
// zstd and gzip use klauspost/compress, xz uses
// ulikunitz/xz (pure Go, so the offline binary stays static), bzip2 reading
// uses the standard library. zstd writing is parallel: with Concurrency > 1
// the stream is cut into chunks compressed as independent frames on every
// core (see WriterOptions), which Nix 2.8 reads like any zstd file. Brotli ("br"), which Nix also knows, would need
// another dependency and is unsupported.
package compression

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"errors"
	"fmt"
	"io"
	"runtime"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// ErrUnsupported reports a compression name we cannot read or write.
var ErrUnsupported = errors.New("unsupported compression")

// Names Nix writes in narinfos.
const (
	None  = "none"
	Zstd  = "zstd"
	XZ    = "xz"
	Bzip2 = "bzip2"
	Gzip  = "gzip"
)

// bufSize is the read-ahead for decoders that read in small pieces.
const bufSize = 1 << 20

// Ext returns the file name extension Nix gives a NAR compressed with name:
// "" for none, ".zst", ".xz", ".bz2", ".gz".
func Ext(name string) (string, error) {
	switch name {
	case None:
		return "", nil
	case Zstd:
		return ".zst", nil
	case XZ:
		return ".xz", nil
	case Bzip2:
		return ".bz2", nil
	case Gzip:
		return ".gz", nil
	}
	return "", fmt.Errorf("compression %q: %w", name, ErrUnsupported)
}

// SniffSize is how many of a file's first bytes Sniff needs.
const SniffSize = 6

// Sniff names the compression of a file from its first bytes (SniffSize
// of them, or all a shorter file has): xz, gzip, bzip2, zstd, or none (a
// plain tar, or anything else).
func Sniff(head []byte) string {
	switch {
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return XZ
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return Gzip
	case bytes.HasPrefix(head, []byte("BZh")):
		return Bzip2
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return Zstd
	}
	return None
}

// NewReader returns a reader of r decompressed as name says. Closing it
// releases the decoder (zstd runs goroutines) but does not close r.
func NewReader(r io.Reader, name string) (io.ReadCloser, error) {
	switch name {
	case None:
		return io.NopCloser(r), nil
	case Zstd:
		return newZstdReader(r)
	case XZ:
		d, err := xz.NewReader(bufio.NewReaderSize(r, bufSize))
		if err != nil {
			return nil, fmt.Errorf("xz reader: %w", err)
		}
		return io.NopCloser(d), nil
	case Bzip2:
		return io.NopCloser(bzip2.NewReader(bufio.NewReaderSize(r, bufSize))), nil
	case Gzip:
		d, err := gzip.NewReader(bufio.NewReaderSize(r, bufSize))
		if err != nil {
			return nil, fmt.Errorf("gzip reader: %w", err)
		}
		return d, nil
	}
	return nil, fmt.Errorf("compression %q: %w", name, ErrUnsupported)
}

// WriterOptions tune NewWriter. The zero value gives each codec's default
// level on every CPU.
type WriterOptions struct {
	// Level is the codec's own level scale (zstd 1-22, xz and gzip 1-9,
	// out-of-range values clamped); 0 means the codec's default.
	Level int
	// Concurrency is how many goroutines compress (zstd only);
	// 0 means GOMAXPROCS. Above 1, zstd output is a sequence of
	// independent frames of ChunkSize input bytes each; at 1 it is one
	// frame, encoded in the writer's goroutine.
	Concurrency int
	// ChunkSize is the input per zstd frame when Concurrency > 1;
	// 0 means 8 MiB.
	ChunkSize int
	// SizeHint is the expected input size, if known: zstd sizes its
	// buffers by it instead of growing them. 0 means unknown.
	SizeHint int64
	// XZProgram, if set, is an xz(1) that xz output is made with: it
	// compresses as Nix does, smaller and faster than the pure-Go encoder
	// that "" means.
	XZProgram string
	// Limit, if above 0, is the most output the writer may write: the
	// write that would pass it fails with a *LimitError, for a caller
	// that only wants the output if it is that small (pack, comparing a
	// NAR with its binary delta). Parallel zstd then encodes its first
	// frame before it takes more input, and the frame's first MiB alone
	// before that, so that a stream stopped early costs a MiB's or a
	// frame's work, not the frames in flight.
	Limit int64
}

// LimitError reports output that would pass WriterOptions.Limit: Out
// bytes, when In bytes of input had been written.
type LimitError struct {
	Limit, In, Out int64
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("compressed output over its limit of %d bytes: %d bytes from %d", e.Limit, e.Out, e.In)
}

// NewWriter returns a writer that compresses into w as name says. Close
// flushes the codec but does not close w. Writing supports none, zstd, xz
// and gzip; Nix reads all of them.
func NewWriter(w io.Writer, name string, opts WriterOptions) (io.WriteCloser, error) {
	if opts.Limit > 0 {
		lw := &limitWriter{w: w, limit: opts.Limit}
		cw, err := newWriter(lw, name, opts)
		if err != nil {
			return nil, err
		}
		lw.in = &countWriter{w: cw}
		return lw.in, nil
	}
	return newWriter(w, name, opts)
}

func newWriter(w io.Writer, name string, opts WriterOptions) (io.WriteCloser, error) {
	switch name {
	case None:
		return nopWriteCloser{w}, nil
	case Zstd:
		n := opts.Concurrency
		if n <= 0 {
			n = runtime.GOMAXPROCS(0)
		}
		level := zstd.SpeedDefault
		if opts.Level != 0 {
			level = zstd.EncoderLevelFromZstd(opts.Level)
		}
		if n > 1 {
			chunk := opts.ChunkSize
			if chunk <= 0 {
				chunk = defaultChunkSize
			}
			e, err := newParallelZstd(w, n, chunk, level, opts.SizeHint, opts.Limit)
			if err != nil {
				return nil, fmt.Errorf("zstd writer: %w", err)
			}
			return e, nil
		}
		e, err := newStreamZstd(w, level)
		if err != nil {
			return nil, fmt.Errorf("zstd writer: %w", err)
		}
		return e, nil
	case XZ:
		if opts.XZProgram != "" {
			return newXZCommand(w, opts.XZProgram, opts.Level)
		}
		cfg := xz.WriterConfig{}
		if opts.Level != 0 {
			cfg.DictCap = xzDictCap(opts.Level)
		}
		e, err := cfg.NewWriter(w)
		if err != nil {
			return nil, fmt.Errorf("xz writer: %w", err)
		}
		return e, nil
	case Gzip:
		level := gzip.DefaultCompression
		if opts.Level != 0 {
			level = min(max(opts.Level, gzip.BestSpeed), gzip.BestCompression)
		}
		e, err := gzip.NewWriterLevel(w, level)
		if err != nil {
			return nil, fmt.Errorf("gzip writer: %w", err)
		}
		return e, nil
	}
	return nil, fmt.Errorf("compression %q for writing: %w", name, ErrUnsupported)
}

// xzDictCap maps an xz preset level to its dictionary size, as xz(1) does;
// ulikunitz/xz has no other knob for ratio.
func xzDictCap(level int) int {
	switch {
	case level <= 1:
		return 1 << 20
	case level == 2:
		return 2 << 20
	case level <= 4:
		return 4 << 20
	case level <= 6:
		return 8 << 20
	case level == 7:
		return 16 << 20
	case level == 8:
		return 32 << 20
	}
	return 64 << 20
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// limitWriter passes writes on until they would take the output past
// limit; in counts the input, for the error.
type limitWriter struct {
	w     io.Writer
	limit int64
	n     int64
	in    *countWriter
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n+int64(len(p)) > l.limit {
		return 0, &LimitError{Limit: l.limit, In: l.in.n, Out: l.n + int64(len(p))}
	}
	n, err := l.w.Write(p)
	l.n += int64(n)
	return n, err
}

// countWriter counts what is written to a compressor, before the
// compressor takes it, in pieces small enough that the count is close to
// what the compressor had taken when it passed the limit.
type countWriter struct {
	w io.WriteCloser
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		piece := p[done:min(len(p), done+64<<10)]
		c.n += int64(len(piece))
		n, err := c.w.Write(piece)
		done += n
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

func (c *countWriter) Close() error { return c.w.Close() }
