package compression

import (
	"errors"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// defaultChunkSize is how much input each parallel zstd frame holds. On
// 256 MiB of /usr/lib and /usr/bin, one streamed frame compresses to 30.7%;
// frames of 4, 8, 16 and 32 MiB give 32.3, 31.4, 31.0 and 30.8%. 8 MiB keeps
// the loss near 2% with at most Concurrency+2 chunks (in and out) in
// memory: 64 MiB on 2 cores.
const defaultChunkSize = 8 << 20

// parallelZstd compresses a stream as a sequence of independent zstd
// frames, one per chunk, encoded by Concurrency goroutines and written in
// order. klauspost's streaming encoder overlaps only one block's encoding
// with the caller, so it keeps about one core busy; this keeps all of them
// busy. Concatenated frames are a valid zstd stream (RFC 8878 §3.1), which
// Nix, zstd(1) and every decoder read as one.
type parallelZstd struct {
	w     io.Writer
	chunk int
	buf   []byte // the chunk being filled
	jobs  chan *zstdJob
	order chan *zstdJob
	wg    sync.WaitGroup // workers
	done  chan struct{}  // closed when the writer goroutine ends
	pool  sync.Pool

	mu     sync.Mutex
	err    error
	sent   bool // at least one frame submitted
	closed bool
}

type zstdJob struct {
	in, out []byte
	ready   chan struct{}
}

func newParallelZstd(w io.Writer, n, chunk int, level zstd.EncoderLevel) (*parallelZstd, error) {
	p := &parallelZstd{
		w:     w,
		chunk: chunk,
		jobs:  make(chan *zstdJob, n),
		order: make(chan *zstdJob, n),
		done:  make(chan struct{}),
	}
	encs := make([]*zstd.Encoder, n)
	for i := range encs {
		e, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(level))
		if err != nil {
			return nil, err
		}
		encs[i] = e
	}
	for _, e := range encs {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for j := range p.jobs {
				j.out = e.EncodeAll(j.in, j.out[:0])
				close(j.ready)
			}
		}()
	}
	go p.writeOut()
	p.buf = p.getBuf()
	return p, nil
}

func (p *parallelZstd) getBuf() []byte {
	if b, ok := p.pool.Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return make([]byte, 0, p.chunk)
}

func (p *parallelZstd) putBuf(b []byte) {
	if cap(b) >= p.chunk {
		p.pool.Put(&b)
	}
}

// writeOut writes finished frames in order; after an error it keeps
// draining so that no worker blocks.
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

func (p *parallelZstd) submit() {
	j := &zstdJob{in: p.buf, out: p.getBuf(), ready: make(chan struct{})}
	p.sent = true
	p.order <- j // bounds the chunks in flight
	p.jobs <- j
	p.buf = p.getBuf()
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
		k := min(len(b), p.chunk-len(p.buf))
		p.buf = append(p.buf, b[:k]...)
		b, n = b[k:], n+k
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
	if len(p.buf) > 0 || !p.sent {
		p.submit() // an empty stream is still one (empty) frame
	}
	close(p.jobs)
	close(p.order)
	p.wg.Wait()
	<-p.done
	return p.error()
}
