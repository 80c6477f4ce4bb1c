package gc

import (
	"bufio"
	"encoding/json"
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

// ParseRoots reads store paths in dir, one per line, as a channel's
// store-paths file lists them, xz-compressed or not. Blank lines and
// lines starting with # are skipped; anything else that is not a store
// path is a *BadLineError naming the line.
func ParseRoots(r io.Reader, dir storepath.Dir) ([]storepath.Path, error) {
	br := bufio.NewReader(r)
	if head, _ := br.Peek(compression.SniffSize); compression.Sniff(head) == compression.XZ {
		xr, err := compression.NewReader(br, compression.XZ)
		if err != nil {
			return nil, fmt.Errorf("roots: %w", err)
		}
		defer xr.Close()
		br = bufio.NewReader(xr)
	}
	sc := bufio.NewScanner(br)
	sc.Buffer(nil, 1<<20)
	paths := []storepath.Path{}
	for line := 1; sc.Scan(); line++ {
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
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("roots: %w", err)
	}
	return paths, nil
}

// pruneRegistry drops the entries of a flake registry (version 2) that
// lock a store path gc removes, and returns the registry left and how
// many entries went. Entries it cannot read are kept.
func pruneRegistry(data []byte, dir storepath.Dir, gone func(hashPart string) bool) ([]byte, int, error) {
	var reg struct {
		Version int               `json:"version"`
		Flakes  []json.RawMessage `json:"flakes"`
	}
	if err := json.Unmarshal(data, &reg); err != nil {
		return nil, 0, err
	}
	kept := reg.Flakes[:0]
	dropped := 0
	for _, f := range reg.Flakes {
		var e struct {
			To struct {
				Path string `json:"path"`
			} `json:"to"`
		}
		if json.Unmarshal(f, &e) == nil {
			if p, _, err := dir.ParseBelow(e.To.Path); err == nil && gone(p.Hash) {
				dropped++
				continue
			}
		}
		kept = append(kept, f)
	}
	if dropped == 0 {
		return data, 0, nil
	}
	reg.Flakes = kept
	out, err := json.Marshal(reg)
	if err != nil {
		return nil, 0, err
	}
	return append(out, '\n'), dropped, nil
}
