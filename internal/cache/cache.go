// Package cache reads and writes Nix binary caches: a cache kept in a
// storage.Backend (Cache: a local directory, the layout bundles and
// long-lived caches share, or an object store), and a remote cache over
// HTTP (HTTP). Both are a Source; WithRetry wraps them with retries.
// ReadNARFile is the one pass every NAR file is checked in (CheckNAR,
// CopyVerified, and bundles' verify and import).
package cache

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/storage"
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

// File is a NAR file stored in a Cache.
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

// Open opens the cache at location: "http://…", "https://…", or a
// location storage.Open takes (a directory, "file://DIR"). client is used
// for HTTP; nil means a client with sane timeouts (see OpenHTTP). A
// file:// URL's query (such as ?compression=zstd, meaningful to nix copy
// --to) is ignored.
func Open(ctx context.Context, location string, client *http.Client) (Source, error) {
	if IsHTTP(location) {
		return OpenHTTP(ctx, location, client)
	}
	return OpenStored(ctx, location)
}

// IsHTTP reports whether location is a binary cache served over HTTP.
func IsHTTP(location string) bool {
	return strings.HasPrefix(location, "http://") || strings.HasPrefix(location, "https://")
}

// OpenStored opens the cache kept at location, as storage.Open takes it.
// The Cache owns its backend.
func OpenStored(ctx context.Context, location string) (*Cache, error) {
	b, err := storage.Open(ctx, location)
	if err != nil {
		return nil, err
	}
	c, err := OpenBackend(ctx, b)
	if err != nil {
		b.Close()
	}
	return own(c, err)
}
