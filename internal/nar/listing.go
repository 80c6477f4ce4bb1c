package nar

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
)

// Entry is one object of a NAR listing, the tree that Nix's .ls files and
// nix store ls describe.
type Entry struct {
	Type       Type
	Size       int64 // regular files
	Executable bool  // regular files
	NarOffset  int64 // regular files: where the contents start in the NAR
	LinkTarget string
	Entries    map[string]*Entry // directories
}

// List reads a NAR and returns the tree of its objects, skipping file
// contents.
func List(r io.Reader) (*Entry, error) {
	nr := NewReader(r)
	var root *Entry
	dirs := map[string]*Entry{}
	for {
		hdr, err := nr.Next()
		if errors.Is(err, io.EOF) {
			return root, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list nar: %w", err)
		}
		e := &Entry{Type: hdr.Type, Size: hdr.Size, Executable: hdr.Executable, NarOffset: hdr.Offset, LinkTarget: hdr.LinkTarget}
		if hdr.Type == TypeDirectory {
			e.Entries = map[string]*Entry{}
			dirs[hdr.Path] = e
		}
		if root == nil {
			root = e
			continue
		}
		parent, name := splitPath(hdr.Path)
		dirs[parent].Entries[name] = e // the Reader guarantees the parent
	}
}

func splitPath(p string) (parent, name string) {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			if i == 0 {
				return "/", p[1:]
			}
			return p[:i], p[i+1:]
		}
	}
	return "", p
}

// WriteListing writes root as the .ls file Nix 2.8 writes next to a NAR
// for write-nar-listing=true: {"version":1,"root":{...}}, byte for byte.
func WriteListing(w io.Writer, root *Entry) error {
	bw := bufio.NewWriter(w)
	bw.WriteString(`{"version":1,"root":`)
	writeEntry(bw, root)
	bw.WriteString("}")
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write nar listing: %w", err)
	}
	return nil
}

// writeEntry follows Nix's listNar: keys in its order, "executable" and
// "narOffset" only when set.
func writeEntry(bw *bufio.Writer, e *Entry) {
	bw.WriteString(`{"type":`)
	writeJSONString(bw, e.Type.String())
	switch e.Type {
	case TypeRegular:
		bw.WriteString(`,"size":`)
		bw.WriteString(strconv.FormatInt(e.Size, 10))
		if e.Executable {
			bw.WriteString(`,"executable":true`)
		}
		if e.NarOffset != 0 {
			bw.WriteString(`,"narOffset":`)
			bw.WriteString(strconv.FormatInt(e.NarOffset, 10))
		}
	case TypeDirectory:
		bw.WriteString(`,"entries":{`)
		names := make([]string, 0, len(e.Entries))
		for name := range e.Entries {
			names = append(names, name)
		}
		slices.Sort(names)
		for i, name := range names {
			if i > 0 {
				bw.WriteByte(',')
			}
			writeJSONString(bw, name)
			bw.WriteByte(':')
			writeEntry(bw, e.Entries[name])
		}
		bw.WriteByte('}')
	case TypeSymlink:
		bw.WriteString(`,"target":`)
		writeJSONString(bw, e.LinkTarget)
	}
	bw.WriteByte('}')
}

// writeJSONString escapes as Nix 2.8's toJSON does: quote, backslash,
// \n \r \t, other control bytes as \u00XX, everything else (including
// non-UTF-8 bytes) verbatim. encoding/json would differ (<, >, &, U+2028,
// invalid UTF-8).
func writeJSONString(bw *bufio.Writer, s string) {
	const hex = "0123456789abcdef"
	bw.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			bw.WriteByte('\\')
			bw.WriteByte(c)
		case c == '\n':
			bw.WriteString(`\n`)
		case c == '\r':
			bw.WriteString(`\r`)
		case c == '\t':
			bw.WriteString(`\t`)
		case c < 0x20:
			bw.WriteString(`\u00`)
			bw.WriteByte(hex[c>>4])
			bw.WriteByte(hex[c&0xf])
		default:
			bw.WriteByte(c)
		}
	}
	bw.WriteByte('"')
}
