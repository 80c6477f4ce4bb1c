package compression

import (
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// usrData returns size bytes of files under /usr/lib: shared libraries and
// data, like store paths hold.
func usrData(b *testing.B, size int) []byte {
	b.Helper()
	buf := make([]byte, 0, size)
	filepath.WalkDir("/usr/lib", func(p string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() || len(buf) >= size {
			return nil
		}
		data, err := os.ReadFile(p)
		if err == nil {
			buf = append(buf, data[:min(len(data), size-len(buf))]...)
		}
		if len(buf) >= size {
			return fs.SkipAll
		}
		return nil
	})
	if len(buf) < size {
		b.Skipf("only %d bytes under /usr/lib", len(buf))
	}
	return buf
}

func compress(b *testing.B, data []byte, name string, opts WriterOptions) []byte {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, name, opts)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		b.Fatal(err)
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkWriter reports compression throughput on 32 MiB of input.
func BenchmarkWriter(b *testing.B) {
	data := usrData(b, 32<<20)
	for _, tt := range []struct {
		name string
		opts WriterOptions
	}{
		{Zstd, WriterOptions{}},
		{Zstd, WriterOptions{Concurrency: 1}},
		{XZ, WriterOptions{}},
		{Gzip, WriterOptions{}},
	} {
		b.Run(tt.name+"-c"+string(rune('0'+tt.opts.Concurrency)), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			var out []byte
			for b.Loop() {
				out = compress(b, data, tt.name, tt.opts)
			}
			b.ReportMetric(float64(len(out))/float64(len(data)), "ratio")
		})
	}
}

// BenchmarkReader reports decompression throughput (of the uncompressed
// bytes) on 32 MiB of input.
func BenchmarkReader(b *testing.B) {
	data := usrData(b, 32<<20)
	for _, name := range []string{Zstd, XZ, Gzip} {
		comp := compress(b, data, name, WriterOptions{Concurrency: 1})
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				r, err := NewReader(bytes.NewReader(comp), name)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, r); err != nil {
					b.Fatal(err)
				}
				r.Close()
			}
		})
	}
}
