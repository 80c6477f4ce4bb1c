package nar_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/nar"
)

// writeItems writes items with a Writer.
func writeItems(items []item) ([]byte, error) {
	var buf bytes.Buffer
	nw := nar.NewWriter(&buf)
	for _, it := range items {
		if err := nw.WriteHeader(&it.Hdr); err != nil {
			return nil, err
		}
		if _, err := io.WriteString(nw, it.Contents); err != nil {
			return nil, err
		}
	}
	if err := nw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func TestWriterMatchesReader(t *testing.T) {
	for _, b := range [][]byte{
		narOf(file("hello", true)),
		narOf(symlink("x")),
		narOf(dir()),
		narOf(dir(
			entry("A", file("12345678", false)),
			entry("a", dir(entry("b", dir(entry("c", symlink("/abs")))), entry("d", file("x", true)))),
			entry("a-b", dir()),
			entry("a.b", file("", false)),
		)),
	} {
		items, err := readAll(b)
		if err != nil {
			t.Fatal(err)
		}
		got, err := writeItems(items)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, b) {
			t.Errorf("Writer wrote %q, want %q", got, b)
		}
	}
}

func TestWriterRejects(t *testing.T) {
	reg := func(path, contents string) item {
		return item{nar.Header{Path: path, Type: nar.TypeRegular, Size: int64(len(contents))}, contents}
	}
	dirItem := func(path string) item { return item{nar.Header{Path: path, Type: nar.TypeDirectory}, ""} }
	tests := []struct {
		name  string
		items []item
		msg   string
	}{
		{"nothing", nil, "no objects written"},
		{"root not first", []item{reg("/a", "")}, `first object must be the root`},
		{"two roots", []item{reg("/", ""), reg("/", "")}, "invalid name"},
		{"entry below file", []item{reg("/", ""), reg("/a", "")}, "not an open directory"},
		{"unsorted", []item{dirItem("/"), reg("/b", ""), reg("/a", "")}, "sorted bytewise"},
		{"duplicate", []item{dirItem("/"), reg("/a", ""), dirItem("/a")}, "sorted bytewise"},
		{"child of closed dir", []item{dirItem("/"), dirItem("/a"), reg("/b", ""), reg("/a/c", "")}, "not an open directory"},
		{"child of file", []item{dirItem("/"), reg("/a", ""), reg("/a/b", "")}, "not an open directory"},
		{"dot", []item{dirItem("/"), reg("/.", "")}, "invalid name"},
		{"empty name", []item{dirItem("/"), dirItem("/a"), reg("/a/", "")}, "invalid name"},
		{"double slash", []item{dirItem("/"), reg("//a", "")}, "invalid path"},
		{"double slash below", []item{dirItem("/"), dirItem("/a"), reg("/a//b", "")}, "invalid path"},
		{"relative", []item{dirItem("/"), reg("a", "")}, "invalid path"},
		{"unknown type", []item{{Hdr: nar.Header{Path: "/"}}}, "unknown type"},
		{"empty target", []item{{Hdr: nar.Header{Path: "/", Type: nar.TypeSymlink}}}, "invalid symlink target"},
		{"negative size", []item{{Hdr: nar.Header{Path: "/", Type: nar.TypeRegular, Size: -1}}}, "negative size"},
		{"short contents", []item{{nar.Header{Path: "/", Type: nar.TypeRegular, Size: 5}, "abc"}}, "3 of 5 bytes written"},
		{"long contents", []item{{nar.Header{Path: "/", Type: nar.TypeRegular, Size: 2}, "abc"}}, "more than the header's size"},
		{"contents of dir", []item{{dirItem("/").Hdr, "abc"}}, "without a regular file header"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := writeItems(tt.items)
			if err == nil || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("got error %v, want one containing %q", err, tt.msg)
			}
		})
	}
}

func TestDumpUnsupported(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for path, kind := range map[string]string{fifo: "FIFO", sock: "socket", "/dev/null": "character device"} {
		err := nar.Dump(io.Discard, path)
		if !errors.Is(err, nar.ErrUnsupportedType) || !strings.Contains(err.Error(), path+": "+kind) {
			t.Errorf("Dump(%s) = %v, want ErrUnsupportedType naming it a %s", path, err, kind)
		}
	}
	if err := nar.Dump(io.Discard, filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Dump(missing) = %v, want os.ErrNotExist", err)
	}
}

func TestRestoreRefuses(t *testing.T) {
	tmp := t.TempDir()
	existing := filepath.Join(tmp, "existing")
	if err := os.Mkdir(existing, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := nar.Restore(bytes.NewReader(narOf(file("x", false))), existing); !errors.Is(err, os.ErrExist) {
		t.Errorf("Restore over an existing path = %v, want os.ErrExist", err)
	}

	// A NAR that breaks off midway leaves nothing behind.
	b := narOf(dir(entry("a", file("x", false)), entry("b", file(strings.Repeat("y", 100), false))))
	partial := filepath.Join(tmp, "partial")
	if err := nar.Restore(bytes.NewReader(b[:len(b)-60]), partial); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("Restore of a truncated NAR = %v, want io.ErrUnexpectedEOF", err)
	}
	if _, err := os.Lstat(partial); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Restore left %s behind after an error: %v", partial, err)
	}

	// An unsorted NAR (whose duplicate could replace a file) is refused.
	b = narOf(dir(entry("a", file("x", false)), entry("a", symlink("/etc"))))
	if err := nar.Restore(bytes.NewReader(b), filepath.Join(tmp, "dup")); !errors.Is(err, nar.ErrInvalid) {
		t.Errorf("Restore of a NAR with duplicates = %v, want ErrInvalid", err)
	}
}

func TestOpenFile(t *testing.T) {
	contents := strings.Repeat("flat file ", 1000)
	tests := []struct {
		name    string
		nar     []byte
		want    string
		openErr error
		readErr error
	}{
		{"file", narOf(file(contents, false)), contents, nil, nil},
		{"empty", narOf(file("", false)), "", nil, nil},
		{"directory", narOf(dir()), "", nar.ErrNotRegular, nil},
		{"symlink", narOf(symlink("x")), "", nar.ErrNotRegular, nil},
		{"garbage", []byte("not a nar"), "", nar.ErrInvalid, nil},
		{"short", []byte("nix"), "", io.ErrUnexpectedEOF, nil},
		{"trailing data", append(narOf(file("abc", false)), 1), "abc", nil, nar.ErrInvalid},
		{"truncated", narOf(file(contents, false))[:200], contents[:200-96], nil, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, size, err := nar.OpenFile(bytes.NewReader(tt.nar))
			if !errors.Is(err, tt.openErr) {
				t.Fatalf("OpenFile error = %v, want %v", err, tt.openErr)
			}
			if err != nil {
				return
			}
			if tt.readErr == nil && size != int64(len(tt.want)) {
				t.Errorf("size = %d, want %d", size, len(tt.want))
			}
			got, err := io.ReadAll(r)
			if !errors.Is(err, tt.readErr) {
				t.Errorf("read error = %v, want %v", err, tt.readErr)
			}
			if diff := cmp.Diff(tt.want, string(got)); diff != "" {
				t.Errorf("contents (-want +got):\n%s", diff)
			}
		})
	}
}
