package nar_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/nar"
)

// FuzzReader checks that the Reader never panics, fails only with
// ErrInvalid, truncation or a read error, and accepts only canonical NARs:
// whatever it accepts, the Writer writes back byte for byte.
func FuzzReader(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		items, err := readAll(data)
		if err != nil {
			if !errors.Is(err, nar.ErrInvalid) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("error is neither ErrInvalid nor truncation: %v", err)
			}
			if _, lerr := nar.List(bytes.NewReader(data)); lerr == nil {
				t.Fatalf("List accepted a NAR the Reader rejects with %v", err)
			}
			return
		}
		again, err := writeItems(items)
		if err != nil {
			t.Fatalf("Writer rejects what the Reader accepted: %v", err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("Reader accepted a NAR the Writer writes differently:\n%q\n%q", data, again)
		}
		root, err := nar.List(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if err := nar.WriteListing(io.Discard, root); err != nil {
			t.Fatal(err)
		}
		if r, _, err := nar.OpenFile(bytes.NewReader(data)); err == nil {
			if _, err := io.ReadAll(r); err != nil {
				t.Fatalf("OpenFile of a valid NAR: %v", err)
			}
		}
	})
}

// FuzzRoundTrip writes the objects that spec describes, one per line:
// "TYPE PATH REST" with TYPE d (directory), f or x (regular file, x
// executable, REST its contents) or l (symlink to REST). Whatever the
// Writer accepts, the Reader must read back unchanged.
func FuzzRoundTrip(f *testing.F) {
	f.Fuzz(func(t *testing.T, spec string) {
		var items []item
		for line := range strings.Lines(spec) {
			line = strings.TrimSuffix(line, "\n")
			kind, rest, _ := strings.Cut(line, " ")
			path, arg, _ := strings.Cut(rest, " ")
			it := item{Hdr: nar.Header{Path: path}}
			switch kind {
			case "d":
				it.Hdr.Type = nar.TypeDirectory
			case "f", "x":
				it.Hdr.Type, it.Hdr.Executable, it.Hdr.Size, it.Contents = nar.TypeRegular, kind == "x", int64(len(arg)), arg
			case "l":
				it.Hdr.Type, it.Hdr.LinkTarget = nar.TypeSymlink, arg
			default:
				continue
			}
			items = append(items, it)
		}
		data, err := writeItems(items)
		if err != nil {
			return
		}
		got, err := readAll(data)
		if err != nil {
			t.Fatalf("Reader rejects what the Writer wrote: %v", err)
		}
		for i := range got {
			got[i].Hdr.Offset = 0
		}
		if diff := cmp.Diff(items, got); diff != "" {
			t.Fatalf("round trip (-written +read):\n%s", diff)
		}
	})
}
