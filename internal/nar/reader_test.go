package nar_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/nar"
)

// raw is bytes put into an encoded NAR verbatim; n is a bare u64.
type (
	raw []byte
	n   uint64
)

// enc encodes NAR tokens: a string as a padded string, raw verbatim, n as
// a little-endian u64.
func enc(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch p := p.(type) {
		case string:
			b = binary.LittleEndian.AppendUint64(b, uint64(len(p)))
			b = append(b, p...)
			b = append(b, make([]byte, -len(p)&7)...)
		case raw:
			b = append(b, p...)
		case n:
			b = binary.LittleEndian.AppendUint64(b, uint64(p))
		default:
			panic("enc: bad part")
		}
	}
	return b
}

// file, symlink and dir build valid nodes for enc.
func file(contents string, exec bool) []any {
	p := []any{"(", "type", "regular"}
	if exec {
		p = append(p, "executable", "")
	}
	return append(p, "contents", contents, ")")
}

func symlink(target string) []any { return []any{"(", "type", "symlink", "target", target, ")"} }

func entry(name string, node []any) []any {
	return append(append([]any{"entry", "(", "name", name, "node"}, node...), ")")
}

func dir(entries ...[]any) []any {
	p := []any{"(", "type", "directory"}
	for _, e := range entries {
		p = append(p, e...)
	}
	return append(p, ")")
}

func narOf(node []any) []byte { return enc(append([]any{"nix-archive-1"}, node...)...) }

type item struct {
	Hdr      nar.Header
	Contents string
}

// readAll reads every object, with contents, from a NAR.
func readAll(b []byte) ([]item, error) { return readFrom(nar.NewReader(bytes.NewReader(b))) }

func readFrom(nr *nar.Reader) ([]item, error) {
	var items []item
	for {
		hdr, err := nr.Next()
		if err == io.EOF {
			return items, nil
		}
		if err != nil {
			return items, err
		}
		c, err := io.ReadAll(nr)
		if err != nil {
			return items, err
		}
		items = append(items, item{*hdr, string(c)})
	}
}

func TestReaderValid(t *testing.T) {
	tests := []struct {
		name string
		nar  []byte
		want []item
	}{
		{"file", narOf(file("hello", false)), []item{
			{nar.Header{Path: "/", Type: nar.TypeRegular, Size: 5, Offset: 96}, "hello"},
		}},
		{"empty executable", narOf(file("", true)), []item{
			{nar.Header{Path: "/", Type: nar.TypeRegular, Executable: true, Offset: 128}, ""},
		}},
		{"symlink", narOf(symlink("../x")), []item{
			{nar.Header{Path: "/", Type: nar.TypeSymlink, LinkTarget: "../x"}, ""},
		}},
		{"empty dir", narOf(dir()), []item{
			{nar.Header{Path: "/", Type: nar.TypeDirectory}, ""},
		}},
		{"tree", narOf(dir(
			entry("A", file("12345678", false)),
			entry("a", dir(entry("b", dir(entry("c", symlink("/abs")))), entry("d", file("x", true)))),
			entry("a-b", dir()),
			entry("a.b", file("", false)),
		)), []item{
			{nar.Header{Path: "/", Type: nar.TypeDirectory}, ""},
			{nar.Header{Path: "/A", Type: nar.TypeRegular, Size: 8, Offset: 232}, "12345678"},
			{nar.Header{Path: "/a", Type: nar.TypeDirectory}, ""},
			{nar.Header{Path: "/a/b", Type: nar.TypeDirectory}, ""},
			{nar.Header{Path: "/a/b/c", Type: nar.TypeSymlink, LinkTarget: "/abs"}, ""},
			{nar.Header{Path: "/a/d", Type: nar.TypeRegular, Executable: true, Size: 1, Offset: 952}, "x"},
			{nar.Header{Path: "/a-b", Type: nar.TypeDirectory}, ""},
			{nar.Header{Path: "/a.b", Type: nar.TypeRegular, Offset: 1344}, ""},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readAll(tt.nar)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			// Offsets point at the contents.
			for _, it := range got {
				if it.Hdr.Type == nar.TypeRegular {
					if c := string(tt.nar[it.Hdr.Offset : it.Hdr.Offset+it.Hdr.Size]); c != it.Contents {
						t.Errorf("%s: contents at Offset = %q, want %q", it.Hdr.Path, c, it.Contents)
					}
				}
			}
		})
	}
}

func TestReaderSkipsUnreadContents(t *testing.T) {
	b := narOf(dir(entry("a", file(strings.Repeat("x", 100000), false)), entry("b", file("y", false))))
	nr := nar.NewReader(bytes.NewReader(b))
	var paths []string
	buf := make([]byte, 10)
	for {
		hdr, err := nr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, hdr.Path)
		if hdr.Path == "/a" {
			if _, err := io.ReadFull(nr, buf); err != nil { // read a little only
				t.Fatal(err)
			}
		}
	}
	if diff := cmp.Diff([]string{"/", "/a", "/b"}, paths); diff != "" {
		t.Errorf("paths (-want +got):\n%s", diff)
	}
	if _, err := nr.Next(); err != io.EOF {
		t.Errorf("Next after the end = %v, want io.EOF", err)
	}
	if n, err := nr.Read(buf); n != 0 || err != io.EOF {
		t.Errorf("Read after the end = %d, %v, want 0, io.EOF", n, err)
	}
}

func TestReaderMalformed(t *testing.T) {
	valid := narOf(dir(entry("a", file("hello", false))))
	longName := strings.Repeat("n", 256)
	deep := []any{"(", "type", "regular", "contents", "", ")"}
	for range 1100 { // 1100 levels of "/abc" exceed PATH_MAX
		deep = dir(entry("abc", deep))
	}
	tests := []struct {
		name      string
		nar       []byte
		truncated bool // else ErrInvalid
		msg       string
	}{
		{"empty input", nil, true, "truncated"},
		{"bad magic", enc("nix-archive-2"), false, `expected "nix-archive-1"`},
		{"magic padding", append(enc(n(13)), "nix-archive-1\x00\x00\x01"...), false, "non-zero padding"},
		{"huge token length", enc("nix-archive-1", n(1<<62)), false, "longer than the limit"},
		{"only magic", enc("nix-archive-1"), true, "truncated"},
		{"no open paren", enc("nix-archive-1", "type"), false, `expected "("`},
		{"no type", enc("nix-archive-1", "(", "regular"), false, `expected "type"`},
		{"unknown type", enc("nix-archive-1", "(", "type", "fifo"), false, `unknown file type "fifo"`},
		{"no contents", enc("nix-archive-1", "(", "type", "regular", ")"), false, `expected "contents"`},
		{"executable value", enc("nix-archive-1", "(", "type", "regular", "executable", "1"), false, `expected ""`},
		{"executable after contents", enc("nix-archive-1", "(", "type", "regular", "contents", "", "executable", ""), false, `expected ")"`},
		{"huge file", enc("nix-archive-1", "(", "type", "regular", "contents", n(1<<63)), false, "too large"},
		{"truncated contents", enc("nix-archive-1", "(", "type", "regular", "contents", n(1<<40), raw("abc")), true, "truncated"},
		{"contents padding", enc("nix-archive-1", "(", "type", "regular", "contents", n(1), raw("a\x00\x00\x00\x00\x00\x00\x07"), ")"), false, "non-zero padding"},
		{"truncated padding", enc("nix-archive-1", "(", "type", "regular", "contents", n(1), raw("a\x00")), true, "truncated"},
		{"no close", enc("nix-archive-1", "(", "type", "regular", "contents", ""), true, "truncated"},
		{"trailing data", append(narOf(file("x", false)), 0), false, "trailing data"},
		{"trailing node", append(narOf(file("x", false)), enc("(")...), false, "trailing data"},
		{"two roots", append(valid, valid...), false, "trailing data"},
		{"empty target", narOf(symlink("")), false, "invalid symlink target"},
		{"NUL in target", narOf(symlink("a\x00b")), false, "invalid symlink target"},
		{"long target", narOf(symlink(strings.Repeat("t", 4096))), false, "longer than the limit"},
		{"no target", enc("nix-archive-1", "(", "type", "symlink", ")"), false, `expected "target"`},
		{"unknown dir field", enc("nix-archive-1", "(", "type", "directory", "bogus"), false, `expected "entry" or ")"`},
		{"entry without paren", enc("nix-archive-1", "(", "type", "directory", "entry", "name"), false, `expected "("`},
		{"entry without name", enc("nix-archive-1", "(", "type", "directory", "entry", "(", "node"), false, `expected "name"`},
		{"entry without node", enc("nix-archive-1", "(", "type", "directory", "entry", "(", "name", "a", "(", "type"), false, `expected "node"`},
		{"entry not closed", enc(append(append([]any{"nix-archive-1", "(", "type", "directory", "entry", "(", "name", "a", "node"}, file("x", false)...), "entry")...), false, `expected ")"`},
		{"dir not closed", enc(append([]any{"nix-archive-1", "(", "type", "directory"}, entry("a", file("", false))...)...), true, "truncated"},
		{"empty name", narOf(dir(entry("", file("", false)))), false, `invalid entry name ""`},
		{"dot", narOf(dir(entry(".", file("", false)))), false, `invalid entry name "."`},
		{"dotdot", narOf(dir(entry("..", symlink("/etc")))), false, `invalid entry name ".."`},
		{"slash", narOf(dir(entry("a/b", file("", false)))), false, `invalid entry name "a/b"`},
		{"NUL", narOf(dir(entry("a\x00", file("", false)))), false, `invalid entry name`},
		{"long name", narOf(dir(entry(longName, file("", false)))), false, "longer than the limit"},
		{"unsorted", narOf(dir(entry("b", file("", false)), entry("a", file("", false)))), false, "not sorted"},
		{"case unsorted", narOf(dir(entry("a", file("", false)), entry("B", file("", false)))), false, "not sorted"},
		{"prefix unsorted", narOf(dir(entry("a.b", file("", false)), entry("a", file("", false)))), false, "not sorted"},
		{"duplicate", narOf(dir(entry("a", file("", false)), entry("a", dir()))), false, "duplicate entry"},
		{"nested unsorted", narOf(dir(entry("d", dir(entry("y", dir()), entry("x", dir()))))), false, `"x" after "y" in /d`},
		{"too deep", narOf(deep), false, "too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nr := nar.NewReader(bytes.NewReader(tt.nar))
			_, err := readFrom(nr)
			if err == nil {
				t.Fatal("no error")
			}
			if _, err2 := nr.Next(); err2 != err {
				t.Errorf("Next after error %v = %v, want the same error", err, err2)
			}
			if got := errors.Is(err, io.ErrUnexpectedEOF); got != tt.truncated {
				t.Errorf("errors.Is(%v, io.ErrUnexpectedEOF) = %v, want %v", err, got, tt.truncated)
			}
			if got := errors.Is(err, nar.ErrInvalid); got == tt.truncated {
				t.Errorf("errors.Is(%v, ErrInvalid) = %v, want %v", err, got, !tt.truncated)
			}
			if !strings.Contains(err.Error(), tt.msg) || !strings.HasPrefix(err.Error(), "read nar at byte ") {
				t.Errorf("error %q does not start with %q and contain %q", err, "read nar at byte ", tt.msg)
			}
		})
	}
}

// failingReader returns data, then err.
type failingReader struct {
	data []byte
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

func TestReaderPassesReadErrors(t *testing.T) {
	boom := errors.New("boom")
	b := narOf(file(strings.Repeat("x", 100000), false))
	for _, cut := range []int{0, 10, 100, 500, 50000, 100090} {
		_, err := readAll(b[:cut])
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("cut at %d: got %v, want io.ErrUnexpectedEOF", cut, err)
		}
		_, err = readFrom(nar.NewReader(&failingReader{b[:cut], boom}))
		if !errors.Is(err, boom) {
			t.Errorf("cut at %d: got %v, want the reader's error", cut, err)
		}
	}
}
