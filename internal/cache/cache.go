// Package cache reads and writes Nix binary caches: a local directory (Dir),
// the layout bundles and long-lived caches share, and a remote cache over
// HTTP (HTTP). Both are a Source; WithRetry wraps them with retries.
// ReadNARFile is the one pass every NAR file is checked in (CheckNAR,
// CopyVerified, and bundles' verify and import).
package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Sentinel errors.
var (
	// ErrNotFound reports a missing narinfo or file; HTTP 404, 403 and 410
	// map to it, as they do in Nix.
	ErrNotFound = errors.New("not found")
	// ErrCorrupt reports a file or NAR whose hash or size differs from
	// what its narinfo says, or a narinfo for another path.
	ErrCorrupt = errors.New("corrupt")
)

// Source is a binary cache to read from.
type Source interface {
	// NarInfo returns the narinfo of the store path with hash part
	// hashPart, or an error wrapping ErrNotFound.
	NarInfo(ctx context.Context, hashPart string) (*narinfo.NarInfo, error)
	// Open opens the file a narinfo's URL names, relative to the cache or
	// absolute.
	Open(ctx context.Context, url string) (io.ReadCloser, error)
}

// File is a file stored in a Dir.
type File struct {
	// URL is the file's name relative to the cache: nar/NIX32.nar.EXT.
	URL string
	// Hash is the sha256 of the file.
	Hash storepath.Hash
	// Size is its length in bytes.
	Size int64
}

// NarStats describes the uncompressed NAR of a file AddNAR stored.
type NarStats struct {
	NarHash storepath.Hash // sha256
	NarSize int64
}

// Open opens the cache at location: "file://DIR", "http://…", "https://…",
// or a plain directory path. client is used for HTTP; nil means a client
// with sane timeouts (see OpenHTTP). A file:// URL's query (such as
// ?compression=zstd, meaningful to nix copy --to) is ignored.
func Open(ctx context.Context, location string, client *http.Client) (Source, error) {
	switch {
	case strings.HasPrefix(location, "http://"), strings.HasPrefix(location, "https://"):
		return OpenHTTP(ctx, location, client)
	case strings.HasPrefix(location, "file://"):
		p := strings.TrimPrefix(location, "file://")
		if i := strings.IndexByte(p, '?'); i >= 0 {
			p = p[:i]
		}
		if p == "" {
			return nil, fmt.Errorf("open cache %s: no directory", location)
		}
		return OpenDir(p)
	case strings.Contains(location, "://"):
		return nil, fmt.Errorf("open cache %s: unsupported scheme", location)
	}
	return OpenDir(location)
}
