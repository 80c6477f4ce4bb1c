package nar_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	gonix "github.com/nix-community/go-nix/pkg/nar"

	"github.com/nix-airgap/nix-airgap/internal/nar"
)

// The benchmarks compare this package with go-nix's pkg/nar on one
// 256 MiB file, the case that dominates packing and hashing, read and
// written in io.Copy's 32 KiB chunks, and on a tree of many small files.
const (
	benchSize  = 256 << 20
	benchChunk = 32 << 10
)

// patternReader yields n bytes of a fixed pattern without holding them.
type patternReader struct {
	n       int64
	pattern []byte
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.n == 0 {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), p.n)]
	n := 0
	for n < len(b) {
		n += copy(b[n:], p.pattern)
	}
	p.n -= int64(n)
	return n, nil
}

var pattern = bytes.Repeat([]byte("0123456789abcdef"), 64<<10)

// benchNAR streams the NAR of one regular file of benchSize bytes.
func benchNAR() io.Reader {
	head := enc("nix-archive-1", "(", "type", "regular", "contents", n(benchSize))
	return io.MultiReader(bytes.NewReader(head), &patternReader{benchSize, pattern}, bytes.NewReader(enc(")")))
}

// sink hides io.Discard's ReadFrom so every copy uses the buffer given.
type sink struct{ io.Writer }

func BenchmarkRead(b *testing.B) {
	buf := make([]byte, benchChunk)
	b.SetBytes(benchSize)
	for b.Loop() {
		nr := nar.NewReader(benchNAR())
		if _, err := nr.Next(); err != nil {
			b.Fatal(err)
		}
		if n, err := io.CopyBuffer(sink{io.Discard}, struct{ io.Reader }{nr}, buf); err != nil || n != benchSize {
			b.Fatal(n, err)
		}
		if _, err := nr.Next(); err != io.EOF {
			b.Fatal(err)
		}
	}
}

func BenchmarkGoNixRead(b *testing.B) {
	buf := make([]byte, benchChunk)
	b.SetBytes(benchSize)
	for b.Loop() {
		nr, err := gonix.NewReader(benchNAR())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := nr.Next(); err != nil {
			b.Fatal(err)
		}
		if n, err := io.CopyBuffer(sink{io.Discard}, struct{ io.Reader }{nr}, buf); err != nil || n != benchSize {
			b.Fatal(n, err)
		}
		if _, err := nr.Next(); err != io.EOF {
			b.Fatal(err)
		}
		nr.Close()
	}
}

func BenchmarkWrite(b *testing.B) {
	b.SetBytes(benchSize)
	for b.Loop() {
		nw := nar.NewWriter(io.Discard)
		if err := nw.WriteHeader(&nar.Header{Path: "/", Type: nar.TypeRegular, Size: benchSize}); err != nil {
			b.Fatal(err)
		}
		for i := 0; i < benchSize; i += benchChunk {
			if _, err := nw.Write(pattern[:benchChunk]); err != nil {
				b.Fatal(err)
			}
		}
		if err := nw.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGoNixWrite(b *testing.B) {
	b.SetBytes(benchSize)
	for b.Loop() {
		nw, err := gonix.NewWriter(io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		if err := nw.WriteHeader(&gonix.Header{Path: "/", Type: gonix.TypeRegular, Size: benchSize}); err != nil {
			b.Fatal(err)
		}
		for i := 0; i < benchSize; i += benchChunk {
			if _, err := nw.Write(pattern[:benchChunk]); err != nil {
				b.Fatal(err)
			}
		}
		if err := nw.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

func benchFile(b *testing.B) string {
	p := filepath.Join(b.TempDir(), "big")
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(f, &patternReader{benchSize, pattern}); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	return p
}

func BenchmarkDump(b *testing.B) {
	p := benchFile(b)
	b.SetBytes(benchSize)
	for b.Loop() {
		if err := nar.Dump(sink{io.Discard}, p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGoNixDump(b *testing.B) {
	p := benchFile(b)
	b.SetBytes(benchSize)
	for b.Loop() {
		if err := gonix.DumpPath(sink{io.Discard}, p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDumpHash includes sha256, the real cost of computing NarHash.
func BenchmarkDumpHash(b *testing.B) {
	p := benchFile(b)
	b.SetBytes(benchSize)
	for b.Loop() {
		if _, size, err := nar.DumpHash(io.Discard, p); err != nil || size < benchSize {
			b.Fatal(size, err)
		}
	}
}

// smallFilesNAR is a directory of 10000 files of 1 KiB, like a store path
// of headers or documentation.
func smallFilesNAR(b *testing.B) []byte {
	var buf bytes.Buffer
	nw := nar.NewWriter(&buf)
	if err := nw.WriteHeader(&nar.Header{Path: "/", Type: nar.TypeDirectory}); err != nil {
		b.Fatal(err)
	}
	for i := range 10000 {
		if err := nw.WriteHeader(&nar.Header{Path: fmt.Sprintf("/f%05d", i), Type: nar.TypeRegular, Size: 1024}); err != nil {
			b.Fatal(err)
		}
		if _, err := nw.Write(pattern[:1024]); err != nil {
			b.Fatal(err)
		}
	}
	if err := nw.Close(); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

func BenchmarkReadSmallFiles(b *testing.B) {
	data := smallFilesNAR(b)
	buf := make([]byte, benchChunk)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		nr := nar.NewReader(bytes.NewReader(data))
		for {
			_, err := nr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.CopyBuffer(sink{io.Discard}, struct{ io.Reader }{nr}, buf); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkGoNixReadSmallFiles(b *testing.B) {
	data := smallFilesNAR(b)
	buf := make([]byte, benchChunk)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		nr, err := gonix.NewReader(bytes.NewReader(data))
		if err != nil {
			b.Fatal(err)
		}
		for {
			_, err := nr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.CopyBuffer(sink{io.Discard}, struct{ io.Reader }{nr}, buf); err != nil {
				b.Fatal(err)
			}
		}
		nr.Close()
	}
}
