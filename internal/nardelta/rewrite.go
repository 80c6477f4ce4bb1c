package nardelta

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Rewrite replaces one store path hash part with another wherever it
// occurs in a base NAR, as a rebuild with new hashes would have written
// it: in file contents, symlink targets and names alike. Both are
// storepath.HashLen nix32 characters, so no offset moves.
type Rewrite struct {
	Old, New string
}

// checkRewrites checks that rws are valid hash parts, sorted by Old and
// unique, as a delta must list them.
func checkRewrites(rws []Rewrite) error {
	for i, rw := range rws {
		if !storepath.IsHashPart(rw.Old) || !storepath.IsHashPart(rw.New) {
			return fmt.Errorf("rewrite %q → %q: not two hash parts", rw.Old, rw.New)
		}
		if i > 0 && rws[i-1].Old >= rw.Old {
			return fmt.Errorf("rewrite %q: rewrites not sorted and unique", rw.Old)
		}
	}
	return nil
}

// SortRewrites sorts rws as a delta lists them and drops those that
// change nothing and repeats of an Old hash part (the first one stays).
func SortRewrites(rws []Rewrite) []Rewrite {
	out := slices.Clone(rws)
	out = slices.DeleteFunc(out, func(rw Rewrite) bool { return rw.Old == rw.New })
	slices.SortStableFunc(out, func(a, b Rewrite) int { return strings.Compare(a.Old, b.Old) })
	return slices.CompactFunc(out, func(a, b Rewrite) bool { return a.Old == b.Old })
}

// rewriter writes what it is given to w with every Old hash part replaced
// by its New one. It scans as Nix's reference scanner does: a window of
// HashLen bytes is looked up only when all of them are nix32 characters,
// and a byte outside the alphabet skips the window past it. Matches never
// overlap: after one, the scan resumes behind it. The result does not
// depend on how the input is cut into writes.
type rewriter struct {
	w    io.Writer
	m    map[string]string
	used map[string]bool // the Old hash parts replaced somewhere
	buf  []byte          // bytes not written yet: the last window's worth at most
	err  error
}

func newRewriter(w io.Writer, rws []Rewrite) *rewriter {
	m := make(map[string]string, len(rws))
	for _, rw := range rws {
		m[rw.Old] = rw.New
	}
	return &rewriter{w: w, m: m, used: map[string]bool{}}
}

func (r *rewriter) Write(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if len(r.m) == 0 {
		if _, err := r.w.Write(p); err != nil {
			r.err = err
			return 0, err
		}
		return len(p), nil
	}
	// Work on a copy, the held-back tail plus p: the caller's bytes stay
	// as they are.
	r.buf = append(r.buf, p...)
	done := rewriteHashes(r.buf, r.m, r.used)
	if _, err := r.w.Write(r.buf[:done]); err != nil {
		r.err = err
		return 0, err
	}
	r.buf = r.buf[:copy(r.buf, r.buf[done:])]
	return len(p), nil
}

// Close writes what is held back: too short to hold a hash part.
func (r *rewriter) Close() error {
	if r.err != nil {
		return r.err
	}
	_, r.err = r.w.Write(r.buf)
	r.buf = r.buf[:0]
	return r.err
}

// rewriteHashes rewrites, in place, every match that starts in b and ends
// in it, noting its Old hash part in used, and returns how many leading
// bytes are final: those no later bytes can make part of a match.
func rewriteHashes(b []byte, m map[string]string, used map[string]bool) int {
	const n = storepath.HashLen
	i := 0
scan:
	for i+n <= len(b) {
		for j := i + n - 1; j >= i; j-- {
			if !storepath.IsNix32(b[j]) {
				i = j + 1
				continue scan
			}
		}
		if nw, ok := m[string(b[i:i+n])]; ok {
			used[string(b[i:i+n])] = true
			copy(b[i:], nw)
			i += n
			continue
		}
		i++
	}
	return min(i, len(b))
}
