package gc

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// BadLineError is a line of a roots file that is not a store path: a
// mistake in what the user gave, not in the cache.
type BadLineError struct {
	Line int
	Err  error
}

func (e *BadLineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e *BadLineError) Unwrap() error { return e.Err }

// maxRootsLine is the longest line a roots file may have; a store path
// is at most a few hundred bytes.
const maxRootsLine = 1 << 20

// ParseRoots reads store paths in dir, one per line, as a channel's
// store-paths file lists them, xz-compressed or not. Blank lines and
// lines starting with # are skipped; anything else that is not a store
// path, or a line too long to be one, is a *BadLineError naming the line.
// Errors do not name the file: the caller does.
func ParseRoots(r io.Reader, dir storepath.Dir) ([]storepath.Path, error) {
	br := bufio.NewReader(r)
	op := "read"
	if head, _ := br.Peek(compression.SniffSize); compression.Sniff(head) == compression.XZ {
		op = "decompress xz"
		xr, err := compression.NewReader(br, compression.XZ)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		defer xr.Close()
		br = bufio.NewReader(xr)
	}
	sc := bufio.NewScanner(br)
	sc.Buffer(nil, maxRootsLine)
	paths := []storepath.Path{}
	line := 1
	for ; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		p, err := dir.Parse(s)
		if err != nil {
			return nil, &BadLineError{Line: line, Err: err}
		}
		paths = append(paths, p)
	}
	if err := sc.Err(); errors.Is(err, bufio.ErrTooLong) {
		return nil, &BadLineError{Line: line, Err: fmt.Errorf("longer than %d bytes", maxRootsLine)}
	} else if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return paths, nil
}
