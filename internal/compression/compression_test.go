package compression

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func TestRoundTrip(t *testing.T) {
	data := make([]byte, 3<<20)
	rand.Read(data[:1<<20]) // part incompressible, part zeros
	for _, name := range []string{None, Zstd, XZ, Gzip} {
		for _, opts := range []WriterOptions{{}, {Level: 1, Concurrency: 1}, {Level: 19, Concurrency: 2}} {
			var buf bytes.Buffer
			w, err := NewWriter(&buf, name, opts)
			if err != nil {
				t.Fatalf("NewWriter(%s, %+v): %v", name, opts, err)
			}
			if _, err := w.Write(data); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if name != None && Sniff(buf.Bytes()[:SniffSize]) != name {
				t.Errorf("%s %+v: Sniff says %s", name, opts, Sniff(buf.Bytes()[:SniffSize]))
			}
			if name != None && buf.Len() >= len(data) {
				t.Errorf("%s %+v: %d bytes compressed to %d", name, opts, len(data), buf.Len())
			}
			r, err := NewReader(&buf, name)
			if err != nil {
				t.Fatalf("NewReader(%s): %v", name, err)
			}
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatalf("%s %+v: read: %v", name, opts, err)
			}
			r.Close()
			if !bytes.Equal(got, data) {
				t.Errorf("%s %+v: round trip differs", name, opts)
			}
		}
	}
}

func TestSniff(t *testing.T) {
	for head, want := range map[string]string{
		"BZh91AY&SY": Bzip2, // what bzip2(1) writes; NewWriter cannot
		"\xfd7zX":    None,  // cut short of xz's magic
		"":           None,
		"hello\n":    None,
	} {
		if got := Sniff([]byte(head)); got != want {
			t.Errorf("Sniff(%q) = %s, want %s", head, got, want)
		}
	}
}

func TestUnsupported(t *testing.T) {
	for _, name := range []string{"", "br", "lzip", "ZSTD", "lz4"} {
		if _, err := Ext(name); !errors.Is(err, ErrUnsupported) {
			t.Errorf("Ext(%q) = %v, want ErrUnsupported", name, err)
		}
		if _, err := NewReader(bytes.NewReader(nil), name); !errors.Is(err, ErrUnsupported) {
			t.Errorf("NewReader(%q) = %v, want ErrUnsupported", name, err)
		}
		if _, err := NewWriter(io.Discard, name, WriterOptions{}); !errors.Is(err, ErrUnsupported) {
			t.Errorf("NewWriter(%q) = %v, want ErrUnsupported", name, err)
		}
	}
	if _, err := NewWriter(io.Discard, Bzip2, WriterOptions{}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("NewWriter(bzip2) = %v, want ErrUnsupported", err)
	}
}

func TestParallelZstd(t *testing.T) {
	data := make([]byte, 1<<20+5)
	rand.Read(data[:1000])
	for i := 1000; i < len(data); i++ {
		data[i] = byte(i / 7)
	}
	for _, size := range []int{0, 1, 4096, 64 << 10, 1 << 20, len(data)} {
		for _, opts := range []WriterOptions{
			{Concurrency: 2, ChunkSize: 4096}, {Concurrency: 3, ChunkSize: 64 << 10}, {Concurrency: 2},
			// A hint of one frame streams it; a wrong one still works.
			{Concurrency: 2, ChunkSize: 64 << 10, SizeHint: 64 << 10}, {Concurrency: 2, ChunkSize: 4096, SizeHint: 1},
			{Concurrency: 1}, // one frame, streamed
		} {
			var buf bytes.Buffer
			w, err := NewWriter(&buf, Zstd, opts)
			if err != nil {
				t.Fatal(err)
			}
			// Odd write sizes cross chunk boundaries.
			for rest := data[:size]; len(rest) > 0; {
				k := min(len(rest), 3001)
				if _, err := w.Write(rest[:k]); err != nil {
					t.Fatal(err)
				}
				rest = rest[k:]
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
			if _, err := w.Write([]byte("x")); err == nil {
				t.Error("Write after Close succeeded")
			}
			if got, err := unzstd(t, &buf); err != nil || !bytes.Equal(got, data[:size]) {
				t.Errorf("size %d %+v: round trip gave %d bytes, %v", size, opts, len(got), err)
			}
		}
	}
}

// unzstd decompresses what r holds, with NewReader.
func unzstd(t *testing.T, r io.Reader) ([]byte, error) {
	t.Helper()
	zr, err := NewReader(r, Zstd)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	return io.ReadAll(zr)
}

type failWriter struct{ after int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.after <= 0 {
		return 0, errors.New("disk full")
	}
	f.after--
	return len(p), nil
}

func TestParallelZstdWriteError(t *testing.T) {
	// Frames in parallel, and one streamed frame.
	for _, opts := range []WriterOptions{{Concurrency: 2, ChunkSize: 1024}, {Concurrency: 2, ChunkSize: 8 << 20, SizeHint: 8 << 20}, {Concurrency: 1}} {
		w, err := NewWriter(&failWriter{after: 2}, Zstd, opts)
		if err != nil {
			t.Fatal(err)
		}
		chunk := make([]byte, 1024)
		var werr error
		for i := 0; i < 1000 && werr == nil; i++ {
			rand.Read(chunk)
			_, werr = w.Write(chunk)
		}
		cerr := w.Close()
		if werr == nil || cerr == nil || !strings.Contains(cerr.Error(), "disk full") {
			t.Errorf("%+v: Write = %v, Close = %v; want both to fail with disk full", opts, werr, cerr)
		}
	}
}

// TestParallelZstdStreamed checks that a stream the size hint says is one
// frame, streamed, compresses as well as the same frame made whole: the
// frames differ only in their headers.
func TestParallelZstdStreamed(t *testing.T) {
	data := make([]byte, 3<<20)
	rand.Read(data[:1<<20])
	for i := 1 << 20; i < len(data); i++ {
		data[i] = byte(i / 7 % 251)
	}
	for _, size := range []int{100, 200 << 10, len(data)} {
		var whole, streamed bytes.Buffer
		for _, c := range []struct {
			buf  *bytes.Buffer
			hint int64
		}{{&whole, 0}, {&streamed, int64(size)}} {
			w, err := NewWriter(c.buf, Zstd, WriterOptions{Concurrency: 2, SizeHint: c.hint})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(data[:size]); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
		}
		// A streamed frame of more than one block (128 KiB) has no
		// content size in its header: it was written first.
		var h zstd.Header
		if err := h.Decode(streamed.Bytes()); err != nil || size > 128<<10 && h.HasFCS {
			t.Errorf("%d bytes: header %+v, %v: not streamed", size, h, err)
		}
		if d := streamed.Len() - whole.Len(); d < -16 || d > 16 {
			t.Errorf("%d bytes: streamed to %d bytes, whole to %d", size, streamed.Len(), whole.Len())
		}
		if got, err := unzstd(t, &streamed); err != nil || !bytes.Equal(got, data[:size]) {
			t.Errorf("%d bytes: round trip gave %d bytes, %v", size, len(got), err)
		}
	}
}

// TestLimit compresses as without a limit when the output fits in it,
// exactly the same bytes, and else stops with a LimitError: parallel
// zstd after its first frame, having taken one chunk of input, or after
// its probe of the first MiB when the chunk is larger (and the rest of
// the write that filled it, as the error counts).
func TestLimit(t *testing.T) {
	data := make([]byte, 5<<20+100)
	rand.Read(data)
	for _, tc := range []struct {
		name string
		opts WriterOptions
	}{
		{"zstd parallel", WriterOptions{Concurrency: 2, ChunkSize: 1 << 16}},
		{"zstd parallel, probed", WriterOptions{Concurrency: 2, ChunkSize: 2 << 20}},
		{"zstd", WriterOptions{Concurrency: 1}},
		{"gzip", WriterOptions{}},
	} {
		comp := Zstd
		if tc.name == "gzip" {
			comp = Gzip
		}
		compress := func(limit int64) ([]byte, error) {
			var buf bytes.Buffer
			opts := tc.opts
			opts.Limit = limit
			w, err := NewWriter(&buf, comp, opts)
			if err != nil {
				t.Fatal(err)
			}
			for rest := data; len(rest) > 0 && err == nil; {
				k := min(len(rest), 3001)
				_, err = w.Write(rest[:k])
				rest = rest[k:]
			}
			if cerr := w.Close(); err == nil {
				err = cerr
			}
			return buf.Bytes(), err
		}
		want, err := compress(0)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := compress(int64(len(want))); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: limit %d = %d bytes, %v; want the %d bytes unlimited", tc.name, len(want), len(got), err, len(want))
		}
		got, err := compress(1000)
		var le *LimitError
		if !errors.As(err, &le) || len(got) > 1000 || le.Out <= 1000 || le.In == 0 {
			t.Errorf("%s: limit 1000 = %d bytes, %v; want a LimitError", tc.name, len(got), err)
		} else if want := int64(min(tc.opts.ChunkSize, 1<<20)); tc.opts.Concurrency > 1 && (le.In < want || le.In > want+3001) {
			t.Errorf("%s: stopped after %d bytes of input, want %d (and at most the rest of the write)", tc.name, le.In, want)
		}
	}
}

// TestXZProgram compresses through xz(1), as pack does when it has one,
// and reads the result back with the pure-Go decoder that import uses.
func TestXZProgram(t *testing.T) {
	prog, err := exec.LookPath("xz")
	if err != nil {
		t.Skip("no xz on PATH")
	}
	data := bytes.Repeat([]byte("the same line, compressed by liblzma\n"), 1<<15)
	for _, level := range []int{0, 1, 9} {
		var buf bytes.Buffer
		w, err := NewWriter(&buf, XZ, WriterOptions{XZProgram: prog, Level: level})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		r, err := NewReader(&buf, XZ)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("level %d: round trip: err %v, equal %v", level, err, bytes.Equal(got, data))
		}
	}
	// A failing xz is an error that names it.
	w, err := NewWriter(io.Discard, XZ, WriterOptions{XZProgram: "false"})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if err := w.Close(); err == nil || !strings.Contains(err.Error(), "false") {
		t.Errorf("Close with a failing xz = %v, want an error naming it", err)
	}
}
