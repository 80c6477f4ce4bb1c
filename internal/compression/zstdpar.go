package compression

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// defaultChunkSize is how much input each parallel zstd frame holds. On
// 256 MiB of /usr/lib and /usr/bin, one streamed frame compresses to 30.7%;
// frames of 4, 8, 16 and 32 MiB give 32.3, 31.4, 31.0 and 30.8%. 8 MiB keeps
// the loss near 2% with at most Concurrency chunks in and out and one
// filling in memory: 40 MiB on 2 cores.
const defaultChunkSize = 8 << 20

// Encoder state (tables of several MiB) and chunk buffers are costly to
// make and to zero, and pack writes hundreds of NARs, most of them small:
// they are shared by every writer in the process instead of made per
// writer. An Encoder's EncodeAll is safe for concurrent use and runs at
// most GOMAXPROCS encodes at once, which also bounds the CPU all writers
// together use.
var (
	encodersMu sync.Mutex
	encoders   = map[zstd.EncoderLevel]*zstd.Encoder{}
	// bufs pools *[]byte by capacity: smallBufSize, and the chunk size
	// of each kind of writer (pack's default, serve's smaller one).
	bufsMu sync.Mutex
	bufs   = map[int]*sync.Pool{}
)

func bufPool(size int) *sync.Pool {
	bufsMu.Lock()
	defer bufsMu.Unlock()
	p := bufs[size]
	if p == nil {
		p = new(sync.Pool)
		bufs[size] = p
	}
	return p
}

// smallBufSize is the buffer size class for small streams, which most
// NARs of a closure are: a whole chunk each would waste memory while
// they are in flight.
const smallBufSize = 256 << 10

func sharedEncoder(level zstd.EncoderLevel) (*zstd.Encoder, error) {
	encodersMu.Lock()
	defer encodersMu.Unlock()
	if e, ok := encoders[level]; ok {
		return e, nil
	}
	e, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithEncoderLevel(level),
		// NarHash and FileHash already cover every byte, end to end.
		zstd.WithEncoderCRC(false))
	if err != nil {
		return nil, err
	}
	encoders[level] = e
	return e, nil
}

// streams holds idle one-goroutine streaming encoders, by level, at most
// GOMAXPROCS of each: a stream of one frame (most NARs) goes through one
// of them instead of a chunk buffer in and another out.
var (
	streamsMu sync.Mutex
	streams   = map[zstd.EncoderLevel][]*zstd.Encoder{}
)

func getStream(w io.Writer, level zstd.EncoderLevel) (*zstd.Encoder, error) {
	streamsMu.Lock()
	if idle := streams[level]; len(idle) > 0 {
		e := idle[len(idle)-1]
		streams[level] = idle[:len(idle)-1]
		streamsMu.Unlock()
		e.Reset(w)
		return e, nil
	}
	streamsMu.Unlock()
	// The options of sharedEncoder's, so that a frame is the same
	// but for its header.
	return zstd.NewWriter(w, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(level), zstd.WithEncoderCRC(false))
}

func putStream(e *zstd.Encoder, level zstd.EncoderLevel) {
	e.Reset(nil)
	streamsMu.Lock()
	defer streamsMu.Unlock()
	if len(streams[level]) < runtime.GOMAXPROCS(0) {
		streams[level] = append(streams[level], e)
	}
}

// streamZstd is a zstd stream of one frame, encoded in the caller's
// goroutine by a pooled streaming encoder: Concurrency 1.
type streamZstd struct {
	e     *zstd.Encoder
	level zstd.EncoderLevel
	err   error // Close's
}

func newStreamZstd(w io.Writer, level zstd.EncoderLevel) (*streamZstd, error) {
	e, err := getStream(w, level)
	if err != nil {
		return nil, err
	}
	return &streamZstd{e: e, level: level}, nil
}

func (s *streamZstd) Write(b []byte) (int, error) {
	if s.e == nil {
		return 0, errors.New("zstd: write after close")
	}
	return s.e.Write(b)
}

// Close ends the frame and pools the encoder.
func (s *streamZstd) Close() error {
	if s.e != nil {
		s.err = s.e.Close()
		putStream(s.e, s.level)
		s.e = nil
	}
	return s.err
}

// decoders holds idle *zstd.Decoder: like encoders, their buffers are
// costly to make and zero, and verify and import open one per NAR file.
var decoders sync.Pool

// zstdReader decodes one stream with a pooled decoder, synchronously:
// callers that want parallelism (verify, import) read many files at once.
type zstdReader struct {
	d *zstd.Decoder
}

func newZstdReader(r io.Reader) (*zstdReader, error) {
	if d, ok := decoders.Get().(*zstd.Decoder); ok {
		if err := d.Reset(r); err != nil {
			return nil, fmt.Errorf("zstd reader: %w", err)
		}
		return &zstdReader{d}, nil
	}
	d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, fmt.Errorf("zstd reader: %w", err)
	}
	return &zstdReader{d}, nil
}

func (z *zstdReader) Read(p []byte) (int, error) {
	if z.d == nil {
		return 0, errors.New("zstd: read after close")
	}
	return z.d.Read(p)
}

func (z *zstdReader) WriteTo(w io.Writer) (int64, error) {
	if z.d == nil {
		return 0, errors.New("zstd: read after close")
	}
	return z.d.WriteTo(w)
}

// Close returns the decoder to the pool; it does not close the source.
func (z *zstdReader) Close() error {
	if z.d != nil {
		z.d.Reset(nil)
		decoders.Put(z.d)
		z.d = nil
	}
	return nil
}

// parallelZstd compresses a stream as a sequence of independent zstd
// frames, one per chunk, encoded concurrently and written in order.
// klauspost's streaming encoder overlaps only one block's encoding with
// the caller, so it keeps about one core busy; this keeps all of them
// busy. Concatenated frames are a valid zstd stream (RFC 8878 §3.1), which
// Nix, zstd(1) and every decoder read as one. A stream shorter than a
// chunk is one frame, encoded without any goroutine: streamed, when the
// size hint says it is one frame, else in Close.
type parallelZstd struct {
	w     io.Writer
	enc   *zstd.Encoder
	level zstd.EncoderLevel
	n     int // chunks in flight at most
	chunk int
	buf   []byte // the chunk being filled
	// stream encodes the first frame as it comes, streamed bytes of it
	// so far, when the size hint says the stream is one frame: a chunk
	// buffer in and another out would cost more memory, page faults
	// and copying than the frame. Nil once that frame is written.
	stream   *zstd.Encoder
	streamed int
	// limit is WriterOptions.Limit: with it, the first chunk is encoded
	// in Write, before more input is taken (wroteFirst says it was),
	// and its first probeSize bytes alone before that (probed).
	limit              int64
	wroteFirst, probed bool
	order              chan *zstdJob  // jobs in write order; nil until the first full chunk
	slots              chan struct{}  // a token for each job not yet written
	done               chan struct{}  // closed when writeOut ends
	wg                 sync.WaitGroup // encodes running

	mu     sync.Mutex
	err    error
	closed bool
}

type zstdJob struct {
	in, out []byte
	ready   chan struct{}
}

func newParallelZstd(w io.Writer, n, chunk int, level zstd.EncoderLevel, sizeHint, limit int64) (*parallelZstd, error) {
	enc, err := sharedEncoder(level)
	if err != nil {
		return nil, err
	}
	p := &parallelZstd{w: w, enc: enc, level: level, n: n, chunk: chunk, limit: limit}
	switch {
	case sizeHint > 0 && sizeHint <= int64(chunk) && limit == 0:
		if p.stream, err = getStream(w, level); err != nil {
			return nil, err
		}
	case sizeHint > 0:
		p.buf = p.getBuf(int(min(sizeHint, int64(chunk))))
	}
	return p, nil
}

// writeStream streams b, at most what is left of the first frame, and
// ends the frame when it is full: from there the stream is cut in
// chunks as any other.
func (p *parallelZstd) writeStream(b []byte) (int, error) {
	k := min(len(b), p.chunk-p.streamed)
	k, err := p.stream.Write(b[:k])
	p.streamed += k
	if err == nil && p.streamed == p.chunk {
		err = p.endStream()
		p.wroteFirst = true
		p.buf = p.getBuf(p.chunk)
	}
	if err != nil {
		p.setError(err)
	}
	return k, err
}

// endStream writes the end of the streamed frame and pools its encoder.
func (p *parallelZstd) endStream() error {
	err := p.stream.Close()
	putStream(p.stream, p.level)
	p.stream = nil
	return err
}

// getBuf returns an empty buffer for size bytes, from the pool of its
// size class.
func (p *parallelZstd) getBuf(size int) []byte {
	c := p.chunk
	if size <= smallBufSize {
		c = smallBufSize
	}
	if b, ok := bufPool(c).Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return make([]byte, 0, c)
}

// putBuf pools b if it is of a size class: an output buffer EncodeAll
// grew is left to the garbage collector.
func (p *parallelZstd) putBuf(b []byte) {
	if c := cap(b); c == smallBufSize || c == p.chunk {
		bufPool(c).Put(&b)
	}
}

// writeOut writes finished frames in order; after an error it keeps
// draining so that no encode blocks.
func (p *parallelZstd) writeOut() {
	defer close(p.done)
	for j := range p.order {
		<-j.ready
		if p.error() == nil {
			if _, err := p.w.Write(j.out); err != nil {
				p.setError(err)
			}
		}
		p.putBuf(j.in)
		p.putBuf(j.out)
		<-p.slots
	}
}

func (p *parallelZstd) error() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

func (p *parallelZstd) setError(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.mu.Unlock()
}

// submit queues the full chunk for encoding.
func (p *parallelZstd) submit() {
	if p.limit > 0 && !p.wroteFirst {
		p.wroteFirst = true
		p.writeFrame()
		p.buf = p.buf[:0]
		return
	}
	if p.order == nil {
		p.order = make(chan *zstdJob, p.n)
		p.slots = make(chan struct{}, p.n)
		p.done = make(chan struct{})
		go p.writeOut()
	}
	// At most n chunks encode or wait to be written, and one fills:
	// enough to keep n encoders busy.
	p.slots <- struct{}{}
	j := &zstdJob{in: p.buf, ready: make(chan struct{})}
	p.order <- j
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		j.out = p.enc.EncodeAll(j.in, p.getBuf(p.chunk))
		close(j.ready)
	}()
	p.buf = p.getBuf(p.chunk)
}

// probeSize is how much of a limited stream is compressed alone first.
// A frame's blocks are made in order, each from the input up to it, so
// the first chunk's frame repeats the probe's frame but for the header
// and the last block or two (the first 85 to 91% of the probe's bytes,
// on a dozen of the binary-delta benchmark's NARs): a probe over twice
// the limit stops the stream at an eighth of the chunk's cost, and one
// under it leaves the decision to the chunk's frame.
const probeSize = 1 << 20

// probe compresses the first probeSize bytes alone and fails the stream
// when they pass twice the limit.
func (p *parallelZstd) probe() {
	p.probed = true
	out := p.enc.EncodeAll(p.buf, p.getBuf(len(p.buf)))
	if int64(len(out))/2 > p.limit {
		p.setError(&LimitError{Limit: p.limit, In: int64(len(p.buf)), Out: int64(len(out))})
	}
	p.putBuf(out)
}

// writeFrame encodes the chunk being filled and writes it, in the
// caller's goroutine.
func (p *parallelZstd) writeFrame() {
	out := p.enc.EncodeAll(p.buf, p.getBuf(len(p.buf)))
	if _, err := p.w.Write(out); err != nil {
		p.setError(err)
	}
	p.putBuf(out)
}

func (p *parallelZstd) Write(b []byte) (int, error) {
	if p.closed {
		return 0, errors.New("zstd: write after close")
	}
	n := 0
	for len(b) > 0 {
		if err := p.error(); err != nil {
			return n, err
		}
		if p.stream != nil {
			k, err := p.writeStream(b)
			b, n = b[k:], n+k
			if err != nil {
				return n, err
			}
			continue
		}
		// The first chunk grows as data comes, so that a small stream
		// never costs a whole chunk.
		k := min(len(b), p.chunk-len(p.buf))
		if p.limit > 0 && !p.probed && p.chunk > probeSize {
			k = min(k, probeSize-len(p.buf))
		}
		p.buf = append(p.buf, b[:k]...)
		b, n = b[k:], n+k
		if p.limit > 0 && !p.probed && len(p.buf) == probeSize {
			p.probe()
		}
		if len(p.buf) == p.chunk {
			p.submit()
		}
	}
	return n, nil
}

// Close compresses what is left, waits for every frame to be written and
// stops the goroutines. It must be called, also after an error.
func (p *parallelZstd) Close() error {
	if p.closed {
		return p.error()
	}
	p.closed = true
	if p.stream != nil {
		if err := p.endStream(); err != nil {
			p.setError(err)
		}
		return p.error()
	}
	if p.order == nil {
		// The last frame, unless the first chunk was the whole stream
		// (an empty stream is still one, empty, frame).
		if (!p.wroteFirst || len(p.buf) > 0) && p.error() == nil {
			p.writeFrame()
		}
		p.putBuf(p.buf)
		p.buf = nil
		return p.error()
	}
	if len(p.buf) > 0 {
		p.submit()
	}
	p.putBuf(p.buf)
	p.buf = nil
	close(p.order)
	p.wg.Wait()
	<-p.done
	return p.error()
}
