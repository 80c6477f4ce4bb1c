package nixstore

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// NARURL is the URL of p's NAR in a narinfo: nar/HASHPART-NARHASH.nar
// and the compression's extension, NARHASH in nix32. The NAR hash lets
// OpenNAR refuse a path that changed since its narinfo was served (one
// collected and built again, differently).
func NARURL(p storepath.Path, narHash storepath.Hash, ext string) string {
	return cache.NarDir + "/" + p.Hash + "-" + narHash.Nix32() + ".nar" + ext
}

// parseNARName splits a name NARURL made, after nar/.
func parseNARName(name string) (hashPart, narHash32, comp string, ok bool) {
	hashPart, rest, ok := strings.Cut(name, "-")
	if !ok || !storepath.IsHashPart(hashPart) {
		return "", "", "", false
	}
	narHash32, ext, ok := strings.Cut(rest, ".nar")
	if !ok || len(narHash32) != 52 {
		return "", "", "", false
	}
	if _, err := storepath.ParseDigest(storepath.SHA256, narHash32); err != nil {
		return "", "", "", false // not a name NARURL makes: serve the cache's file
	}
	switch ext {
	case "":
		comp = compression.None
	case ".zst":
		comp = compression.Zstd
	default:
		return "", "", "", false
	}
	return hashPart, narHash32, comp, true
}

// IsNARName reports whether name, under nar/, is the name of a NAR this
// package serves (not a cache's file).
func IsNARName(name string) bool {
	_, _, _, ok := parseNARName(name)
	return ok
}

// NAR is a store path's NAR, ready to be dumped.
type NAR struct {
	path    storepath.Path
	narHash storepath.Hash
	narSize uint64
	comp    string
	store   *Store
}

// OpenNAR finds the NAR a narinfo's URL names (name is what follows
// nar/). A path no longer there, or no longer the one the URL names, is
// an error wrapping cache.ErrNotFound.
func (s *Store) OpenNAR(ctx context.Context, name string) (*NAR, error) {
	hashPart, narHash32, comp, ok := parseNARName(name)
	if !ok {
		return nil, errNotFound("NAR " + name)
	}
	e, err := s.lookup(ctx, hashPart)
	if err != nil {
		return nil, err
	}
	if e.narHash.Nix32() != narHash32 {
		return nil, errNotFound(fmt.Sprintf("NAR %s: %s has NAR hash %s now", name, e.path, e.narHash))
	}
	if _, err := os.Lstat(e.path.String()); err != nil {
		return nil, fmt.Errorf("NAR %s: %w", name, err)
	}
	return &NAR{path: e.path, narHash: e.narHash, narSize: e.narSize, comp: comp, store: s}, nil
}

// Path is the store path dumped.
func (n *NAR) Path() storepath.Path { return n.path }

// Size is the length of what Dump writes, or -1 when compressed, as it
// is then not known before.
func (n *NAR) Size() int64 {
	if n.comp == compression.None {
		return int64(n.narSize)
	}
	return -1
}

// Dump writes the NAR into w, compressed, hashing it as it goes. A NAR
// that differs from the store's record (the path was changed on disk) is
// an error wrapping cache.ErrCorrupt, once all of it is written: the
// caller must make sure the reader does not take it as complete.
func (n *NAR) Dump(w io.Writer) error {
	var dst io.WriteCloser
	var bw *bufio.Writer
	if n.comp == compression.None {
		// The dump writes headers and padding in pieces of bytes.
		bw = bufio.NewWriterSize(w, 256<<10)
		dst = nopCloser{bw}
	} else {
		zw, err := compression.NewWriter(w, n.comp, compression.WriterOptions{ChunkSize: zstdChunk, SizeHint: int64(n.narSize)})
		if err != nil {
			return err
		}
		dst = zw
	}
	hw := nar.NewHashWriter(dst)
	err := nar.Dump(hw, n.path.String())
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if bw != nil && err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return err
	}
	if sum := hw.Sum(); !sum.Equal(n.narHash) || uint64(hw.Size()) != n.narSize {
		n.store.forget(n.path.Hash)
		return fmt.Errorf("dump %s: %w: NAR hash %s (%d bytes), but the store's record says %s (%d bytes)", n.path, cache.ErrCorrupt, sum, hw.Size(), n.narHash, n.narSize)
	}
	return nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
