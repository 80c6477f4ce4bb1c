package compression

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"testing"
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
