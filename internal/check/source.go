package check

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// NarInfoSource answers narinfo queries: a *cache.Cache, a *cache.HTTP, or
// the index of a bundle tar.
type NarInfoSource interface {
	// NarInfo returns the narinfo of the store path with hash part
	// hashPart, or an error wrapping cache.ErrNotFound (or
	// fs.ErrNotExist) when the source lacks it.
	NarInfo(ctx context.Context, hashPart string) (*narinfo.NarInfo, error)
}

// Mirror is a hashed mirror: it answers whether it serves the flat file
// with a given hash, as builtin:fetchurl would ask it.
type Mirror interface {
	// HasFlat reports whether the mirror serves mirrorPath, "ALGO/HEX"
	// as derivation.MirrorPath spells it.
	HasFlat(ctx context.Context, mirrorPath string) (bool, error)
}

// Source is one place the check counts paths as available from.
type Source struct {
	// Name is the source as the user gave it, for reports.
	Name string
	// NarInfos answers for store paths.
	NarInfos NarInfoSource
	// Mirror answers for flat fixed-output files; nil when the source
	// is no hashed mirror.
	Mirror Mirror
	// closer is what OpenSource opened and Close releases, or nil.
	closer io.Closer
}

// Close releases what OpenSource opened for s: a cache's directory or
// bucket. A Source made otherwise has nothing to release.
func (s Source) Close() error {
	if s.closer == nil {
		return nil
	}
	return s.closer.Close()
}

// OpenSource opens the source at location:
//
//   - "http://…" or "https://…": a binary cache over HTTP, also asked as
//     a hashed mirror (nix-airgap serve answers ALGO/HEX at its root);
//   - "file://DIR" or a directory: a binary cache, bundle or long-lived
//     cache directory, whose manifests (manifest.json,
//     nix-airgap/bundles/*.json) give its hashed-mirror index;
//   - a file: a bundle tar, read once to its end for its narinfos and
//     manifest (NAR contents are skipped, never held in memory).
//
// client serves HTTP sources; nil means cache.NewHTTPClient(). dir is the
// store dir the source must be for. The caller closes the Source.
// Nothing here checks signatures: a check answers whether paths are
// there, verify whether to trust them.
func OpenSource(ctx context.Context, location string, dir storepath.Dir, client *http.Client) (Source, error) {
	src := Source{Name: storage.Redact(location)}
	switch {
	case cache.IsHTTP(location):
		h, err := cache.OpenHTTP(ctx, location, client)
		if err != nil {
			return Source{}, fmt.Errorf("check: %w", err) // it names location
		}
		if h.StoreDir() != dir {
			return Source{}, fmt.Errorf("check source %s: %w: cache is for store %s, not %s", src.Name, ErrStoreDir, h.StoreDir(), dir)
		}
		src.NarInfos = cache.WithRetry(h, cache.RetryAttempts, cache.RetryBackoff)
		src.Mirror = &httpMirror{base: h.URL(), client: h.Client()}
		return src, nil
	}
	if p, local := storage.LocalPath(location); local {
		// A bundle, a cache, or a binary cache: what is none is said as
		// every command says it.
		shape, err := bundle.Identify(p)
		if errors.Is(err, fs.ErrNotExist) && hostPort(location) {
			return Source{}, fmt.Errorf("check source %s: %w (a binary cache's URL starts with http:// or https://)", location, err)
		}
		if err != nil {
			return Source{}, fmt.Errorf("check source %s: %w", location, err) // location names it
		}
		switch shape {
		case bundle.ShapeInventory:
			return Source{}, fmt.Errorf("check source %s: %w", location, bundle.InventoryError(bundle.ErrNotBundle))
		case bundle.ShapeFile:
			return tarSource(src, p, dir)
		}
	}
	d, err := cache.OpenStored(ctx, location)
	if err != nil {
		if errors.Is(err, cache.ErrNoCacheInfo) {
			return Source{}, fmt.Errorf("check source %s: %w", location, cache.ErrNoCacheInfo) // as bundle.CacheOpenError says it
		}
		return Source{}, fmt.Errorf("check: %w", err) // it names the file of location that failed
	}
	if d.StoreDir() != dir {
		d.Close()
		return Source{}, fmt.Errorf("check source %s: %w: cache is for store %s, not %s", location, ErrStoreDir, d.StoreDir(), dir)
	}
	src.NarInfos, src.closer = d, d
	flat := flatIndex{bundle.FlatIndex{}}
	err = flat.AddStored(ctx, d.Backend(), dir, func(name string, err error) error {
		return fmt.Errorf("manifest %s: %w", storage.Where(d.Backend(), name), err)
	})
	if err != nil {
		d.Close()
		return Source{}, fmt.Errorf("check source %s: %w", location, err)
	}
	if len(flat.FlatIndex) > 0 {
		src.Mirror = flat
	}
	return src, nil
}

// tarSource is the source of the bundle tar at p.
func tarSource(src Source, p string, dir storepath.Dir) (Source, error) {
	// What is no bundle tar, or is cut short, is said as every command
	// says it.
	if _, _, err := bundle.ReadTarManifest(p); err != nil {
		return Source{}, fmt.Errorf("check source %s: %w", p, err)
	}
	idx, err := readTarFile(p, dir)
	if err != nil {
		return Source{}, err
	}
	src.NarInfos = idx
	if len(idx.flat.FlatIndex) > 0 {
		src.Mirror = idx.flat
	}
	return src, nil
}

// flatIndex answers for the flat files in a bundle's or a cache's
// manifests.
type flatIndex struct{ bundle.FlatIndex }

// HasFlat reports whether the index holds mirrorPath, "ALGO/HEX".
func (f flatIndex) HasFlat(_ context.Context, mirrorPath string) (bool, error) {
	algo, hex, ok := strings.Cut(mirrorPath, "/")
	a, err := storepath.ParseAlgo(algo)
	if !ok || err != nil {
		return false, nil
	}
	h, err := storepath.ParseDigest(a, hex)
	if err != nil {
		return false, nil
	}
	_, found := f.Lookup(h)
	return found, nil
}

// tarIndex is what a bundle tar holds: its narinfos and its manifest's
// hashed-mirror index. It is a NarInfoSource.
type tarIndex struct {
	name     string
	narinfos map[string]*narinfo.NarInfo // by hash part
	flat     flatIndex
}

// readTarFile reads the bundle tar at name to its end, keeping its
// narinfos and the flat hashes of its manifest. NAR files are skipped
// unread (seeking over them). A narinfo or manifest that does not parse, a
// missing manifest (a truncated tar) or a store dir other than dir is an
// error naming the file.
func readTarFile(name string, dir storepath.Dir) (*tarIndex, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("check source %s: %w", name, storage.UnwrapPath(err)) // name names it
	}
	defer f.Close()
	return readTar(f, name, dir)
}

// readTar reads a bundle tar stream; NAR files are skipped, by seeking
// when r can, such as an *os.File.
func readTar(r io.Reader, name string, dir storepath.Dir) (*tarIndex, error) {
	idx := &tarIndex{name: name, narinfos: map[string]*narinfo.NarInfo{}, flat: flatIndex{bundle.FlatIndex{}}}
	sawManifest := false
	err := bundle.ReadTar(context.Background(), r, func(file string, r io.Reader) error {
		hashPart, isNarInfo := cache.NarInfoHashPart(file)
		switch {
		case file == bundle.CacheInfo:
			info, err := cache.ParseCacheInfo(r) // it caps what it reads
			if err != nil {
				return fmt.Errorf("%s: %w: %w", file, ErrBadSource, err)
			}
			if info.StoreDir != dir {
				return fmt.Errorf("%w: bundle is for store %s, not %s", ErrStoreDir, info.StoreDir, dir)
			}
		case file == bundle.ManifestName:
			data, err := io.ReadAll(io.LimitReader(r, bundle.MaxManifestSize+1))
			if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			m, err := bundle.ParseManifest(data)
			if err != nil {
				return fmt.Errorf("%s: %w: %w", file, ErrBadSource, err)
			}
			idx.flat.Add(m)
			sawManifest = true
		case isNarInfo:
			ni, err := narinfo.Parse(r, dir)
			if err != nil {
				return fmt.Errorf("%s: %w: %w", file, ErrBadSource, err)
			}
			if ni.StorePath.Hash != hashPart {
				return fmt.Errorf("%s: %w: describes %s", file, ErrBadSource, ni.StorePath)
			}
			idx.narinfos[hashPart] = ni
		}
		return nil
	})
	switch {
	case errors.Is(err, ErrBadSource), errors.Is(err, ErrStoreDir):
		return nil, fmt.Errorf("check source %s: %w", name, err)
	case err != nil:
		return nil, fmt.Errorf("check source %s: %w: %w", name, ErrBadSource, err)
	case !sawManifest:
		// pack writes the manifest last but for its signatures: without
		// it the tar is truncated, or no bundle.
		return nil, fmt.Errorf("check source %s: %w: no %s (a truncated tar, or not a bundle)", name, ErrBadSource, bundle.ManifestName)
	}
	return idx, nil
}

// NarInfo returns the narinfo for hashPart, or cache.ErrNotFound.
func (t *tarIndex) NarInfo(_ context.Context, hashPart string) (*narinfo.NarInfo, error) {
	if ni, ok := t.narinfos[hashPart]; ok {
		return ni, nil
	}
	return nil, fmt.Errorf("%s: %s: %w", t.name, cache.NarInfoFile(hashPart), cache.ErrNotFound)
}

// Len is how many narinfos the tar holds.
func (t *tarIndex) Len() int { return len(t.narinfos) }

// httpMirror asks a server with HEAD BASE/ALGO/HEX, tried as its
// narinfos are.
type httpMirror struct {
	base   string
	client *http.Client
}

func (m *httpMirror) HasFlat(ctx context.Context, mirrorPath string) (bool, error) {
	return cache.Retry(ctx, cache.RetryAttempts, cache.RetryBackoff, func() (bool, error) { return m.hasFlat(ctx, mirrorPath) })
}

func (m *httpMirror) hasFlat(ctx context.Context, mirrorPath string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, m.base+"/"+mirrorPath, nil)
	if err != nil {
		return false, err
	}
	resp, err := cache.Do(m.client, req, http.MethodHead)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return true, nil
	}
	err = &cache.StatusError{Op: http.MethodHead, URL: req.URL.String(), Status: resp.Status, Code: resp.StatusCode}
	// A miss as Nix counts one, or a server that is no hashed mirror.
	if errors.Is(err, cache.ErrNotFound) || resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusMethodNotAllowed {
		return false, nil
	}
	return false, err
}

// hostPort reports whether location, not a local path, starts as
// HOST:PORT does: a server's address without its URL's scheme.
func hostPort(location string) bool {
	first, _, _ := strings.Cut(location, "/")
	host, port, ok := strings.Cut(first, ":")
	if !ok || host == "" || port == "" {
		return false
	}
	_, err := strconv.ParseUint(port, 10, 16)
	return err == nil
}
