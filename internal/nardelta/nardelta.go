// Package nardelta makes and applies binary deltas between NARs: a new
// store path's NAR told as the bytes that differ from a similar path's
// NAR (its base), as docs/bundle-format.md §10 specifies the file.
//
// A rebuild writes its dependencies' new store paths into its files, so
// most bytes of an updated path differ from the old one's only in hash
// parts. Both sides therefore first rewrite the base's hash parts to the
// new ones (the delta lists the pairs), which makes a mass rebuild's
// delta almost empty. The encoder then walks the new NAR entry by entry,
// finds each regular file's counterpart in the base by its path, and
// tells it in segments: a segment equal to the counterpart's bytes at the
// same place is a copy; one that differs is zstd-compressed with the
// counterpart's bytes around that place as a raw dictionary; a file with
// no counterpart, and the NAR's framing, are literals. Everything is
// zstd-compressed once more. Segments and dictionaries are bounded, so
// memory stays bounded however large the NARs are; the base is read from
// a file, never held.
//
// A delta names the base's and the result's NarHash and NarSize: Rebuild
// refuses a base that does not hash to it before it reads a single
// operation, and fails unless the result hashes to what the delta says.
package nardelta

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Magic starts every delta file; Version follows it, as a uvarint.
const (
	Magic   = "nardelta"
	Version = 1
)

// What Encode uses unless told otherwise: a segment's dictionary reaches
// from half a MiB before it to 2.5 MiB after it in the counterpart (the
// next segments are ahead), which covers the shifts between two versions
// of a binary; docs/design.md has the measurements.
const (
	DefaultSegment = 1 << 20
	DefaultDict    = 4 << 20
)

// Bounds a delta must keep. They bound what a decoder allocates: a
// segment, its compressed form and its dictionary are held whole.
const (
	// MaxSegment is the most bytes one patch operation makes.
	MaxSegment = 4 << 20
	// MaxDict is the most base bytes a patch uses as its dictionary.
	MaxDict = 8 << 20
	// MaxRewrites is the most hash parts a delta rewrites.
	MaxRewrites = 1 << 16
	// outerWindow is the window of the zstd stream around everything.
	outerWindow = 8 << 20
	// patchWindow is the most a patch's zstd window may be: it reaches
	// from a segment's end back over the whole dictionary. Encode's
	// windows are patchEncodeWindow, which DefaultSegment and DefaultDict
	// fit in: a smaller window is less history to allocate.
	patchWindow       = 16 << 20
	patchEncodeWindow = 8 << 20
	// dictID names the raw dictionary in a patch's zstd frame.
	dictID = 1
)

// Operations, after the header, until opEnd.
const (
	opEnd   = 0 // the NAR is complete
	opCopy  = 1 // uvarint offset, uvarint length: bytes of the base
	opLit   = 2 // uvarint length, then the bytes
	opPatch = 3 // uvarint dict offset, dict length, length, compressed length, then a zstd frame
)

// Errors callers can check with errors.Is.
var (
	// ErrCorrupt reports a delta that is not well formed, breaks a bound,
	// or does not rebuild the NAR it names.
	ErrCorrupt = errors.New("corrupt NAR delta")
	// ErrVersion reports a delta of a format version this package does
	// not read.
	ErrVersion = errors.New("unsupported NAR delta version")
	// ErrBaseMismatch reports a base NAR other than the delta's.
	ErrBaseMismatch = errors.New("base NAR differs from the delta's base")
)

// Header is what a delta says before its operations.
type Header struct {
	BaseNarHash storepath.Hash
	BaseNarSize uint64
	NarHash     storepath.Hash
	NarSize     uint64
	// Rewrites are applied to the base before any operation reads it,
	// sorted by Old.
	Rewrites []Rewrite
}

// Base is a base NAR with a delta's rewrites applied, in a file: what
// Rebuild reads from and Encode diffs against. Its NarHash and NarSize
// are the NAR's before the rewrites.
type Base struct {
	f        *os.File
	size     int64
	narHash  storepath.Hash
	rewrites []Rewrite
	// used are the rewrites that matched somewhere in the NAR: the only
	// ones a delta made against it lists (Encode), each costing its
	// header 40 bytes. Leaving out one that matched nothing changes no
	// byte of the rewritten base.
	used    []Rewrite
	index   map[string]fileEntry // regular files by NAR path, for Encode
	byShape map[string][]string  // NAR paths by digit-blind shape
}

type fileEntry struct {
	off, size int64
}

// NewBase copies the base NAR narR reads into f (an empty file the caller
// owns, typically a temp file), applying rws, and hashes it as it was.
// Both sides of a delta make their base with the same rewrites.
func NewBase(f *os.File, narR io.Reader, rws []Rewrite) (*Base, error) {
	rws = SortRewrites(rws)
	if err := checkRewrites(rws); err != nil {
		return nil, err
	}
	h := nar.NewHashWriter(io.Discard)
	// Buffered: a NAR dump writes each token of its framing apart, and
	// the rewriter passes each write on.
	bw := bufio.NewWriterSize(f, 1<<20)
	rw := newRewriter(bw, rws)
	buf := make([]byte, 1<<20)
	n, err := io.CopyBuffer(io.MultiWriter(h, rw), narR, buf)
	if err == nil {
		err = rw.Close()
	}
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return nil, fmt.Errorf("base NAR: %w", err)
	}
	used := slices.DeleteFunc(slices.Clone(rws), func(r Rewrite) bool { return !rw.used[r.Old] })
	return &Base{f: f, size: n, narHash: h.Sum(), rewrites: rws, used: used}, nil
}

// NarHash and NarSize are the base NAR's, before rewriting.
func (b *Base) NarHash() storepath.Hash { return b.narHash }
func (b *Base) NarSize() uint64         { return uint64(b.size) }

func (b *Base) readAt(p []byte, off int64) error {
	_, err := b.f.ReadAt(p, off)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// write writes the header: the sizes as uvarints, the hashes' digests,
// and each rewrite as two 20-byte hash parts, decoded.
func (h *Header) write(w io.Writer) error {
	var b []byte
	b = binary.AppendUvarint(b, h.BaseNarSize)
	b = append(b, h.BaseNarHash.Digest...)
	b = binary.AppendUvarint(b, h.NarSize)
	b = append(b, h.NarHash.Digest...)
	b = binary.AppendUvarint(b, uint64(len(h.Rewrites)))
	for _, rw := range h.Rewrites {
		for _, s := range []string{rw.Old, rw.New} {
			d, err := nixbase32.DecodeString(s)
			if err != nil {
				return fmt.Errorf("rewrite %s: %w", s, err)
			}
			b = append(b, d...)
		}
	}
	_, err := w.Write(b)
	return err
}

// hashPartSize is a hash part's size decoded.
const hashPartSize = 20

// readHeader reads a header from the body.
func readHeader(r byteReader) (*Header, error) {
	h := &Header{}
	digest := func() (storepath.Hash, error) {
		d := make([]byte, sha256.Size)
		_, err := io.ReadFull(r, d)
		return storepath.Hash{Algo: storepath.SHA256, Digest: d}, err
	}
	var err error
	if h.BaseNarSize, err = binary.ReadUvarint(r); err != nil {
		return nil, corrupt("header: %v", err)
	}
	if h.BaseNarHash, err = digest(); err != nil {
		return nil, corrupt("header: %v", err)
	}
	if h.NarSize, err = binary.ReadUvarint(r); err != nil {
		return nil, corrupt("header: %v", err)
	}
	if h.NarHash, err = digest(); err != nil {
		return nil, corrupt("header: %v", err)
	}
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, corrupt("header: %v", err)
	}
	if n > MaxRewrites {
		return nil, corrupt("%d rewrites, at most %d allowed", n, MaxRewrites)
	}
	pair := make([]byte, 2*hashPartSize)
	for range n {
		if _, err := io.ReadFull(r, pair); err != nil {
			return nil, corrupt("rewrites: %v", err)
		}
		h.Rewrites = append(h.Rewrites, Rewrite{Old: nixbase32.EncodeToString(pair[:hashPartSize]), New: nixbase32.EncodeToString(pair[hashPartSize:])})
	}
	if err := checkRewrites(h.Rewrites); err != nil {
		return nil, corrupt("%v", err)
	}
	if h.NarSize == 0 || h.BaseNarSize == 0 {
		return nil, corrupt("empty NAR")
	}
	return h, nil
}

type byteReader interface {
	io.Reader
	io.ByteReader
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}
