package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"

	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// NarInfo reads HASHPART.narinfo. A missing file gives ErrNotFound; one that
// does not parse, or describes another path, gives ErrCorrupt.
func (c *Cache) NarInfo(ctx context.Context, hashPart string) (*narinfo.NarInfo, error) {
	if err := checkHashPart(hashPart); err != nil {
		return nil, fmt.Errorf("narinfo %q in %s: %w", hashPart, c.b, err)
	}
	rel := NarInfoFile(hashPart)
	f, err := c.b.Open(ctx, rel)
	if err != nil {
		if storage.IsNotExist(err) {
			err = ErrNotFound
		}
		return nil, &NarInfoError{Name: c.name(rel), File: rel, Err: storage.UnwrapPath(err)}
	}
	defer f.Close()
	return parseNarInfo(f, c.info.StoreDir, hashPart, c.name(rel))
}

// NarInfoError is a narinfo that cannot be had: missing, unreadable, or
// corrupt.
type NarInfoError struct {
	// Name is the narinfo as messages show it: a path or a URL.
	Name string
	// File is its name in the cache, HASHPART.narinfo.
	File string
	Err  error
}

func (e *NarInfoError) Error() string { return "narinfo " + e.Name + ": " + e.Err.Error() }
func (e *NarInfoError) Unwrap() error { return e.Err }

func parseNarInfo(r io.Reader, storeDir storepath.Dir, hashPart, name string) (*narinfo.NarInfo, error) {
	ni, err := narinfo.Parse(r, storeDir)
	if err != nil {
		if errors.Is(err, narinfo.ErrCorrupt) || errors.Is(err, narinfo.ErrTooLarge) {
			err = corrupt{err}
		}
		return nil, &NarInfoError{Name: name, File: NarInfoFile(hashPart), Err: err}
	}
	if ni.StorePath.Hash != hashPart {
		return nil, &NarInfoError{Name: name, File: NarInfoFile(hashPart), Err: fmt.Errorf("describes %s: %w", ni.StorePath, ErrCorrupt)}
	}
	return ni, nil
}

// corrupt marks an error from a parser as ErrCorrupt too, keeping its text.
type corrupt struct{ err error }

func (c corrupt) Error() string   { return c.err.Error() }
func (c corrupt) Unwrap() []error { return []error{c.err, ErrCorrupt} }

// checkHashPart accepts exactly the 32 nix32 characters of a store path's
// hash part, which also keeps a name from leaving the cache.
func checkHashPart(h string) error {
	if !storepath.IsHashPart(h) {
		return fmt.Errorf("not a store path hash part: %w", ErrNotFound)
	}
	return nil
}

// Has reports whether HASHPART.narinfo exists. A store that fails to say
// (a 403, a store that does not answer) gives its error, naming the file:
// neither answer would be true.
func (c *Cache) Has(ctx context.Context, hashPart string) (bool, error) {
	if !storepath.IsHashPart(hashPart) {
		return false, nil
	}
	return storage.Exists(ctx, c.b, NarInfoFile(hashPart))
}

// Open opens the file url names, relative to the cache. It refuses
// absolute URLs and any name leading outside the cache. The result is a
// storage.File (use OpenFile to get one typed so).
func (c *Cache) Open(ctx context.Context, url string) (io.ReadCloser, error) {
	f, err := c.OpenFile(ctx, url)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// OpenFile is Open returning the storage.File, for callers that seek or
// want its size.
func (c *Cache) OpenFile(ctx context.Context, url string) (storage.File, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rel, err := localURL(url)
	if err != nil {
		return nil, fmt.Errorf("open %q in cache %s: %w", url, c.b, err)
	}
	f, err := c.b.Open(ctx, rel)
	if err != nil {
		// The backend's error names the file already: name it once,
		// as an *fs.PathError, so that a caller naming it too can drop
		// it (storage.UnwrapPath).
		err = storage.UnwrapPath(err)
		if storage.IsNotExist(err) {
			err = ErrNotFound
		}
		return nil, &fs.PathError{Op: "open", Path: c.name(rel), Err: err}
	}
	return f, nil
}

// NarInfos yields every narinfo at the top of the cache in name order, and
// an error naming the file for each one that cannot be read; the caller
// decides whether to go on. Where each read is a request (an object
// store), narinfoReaders are read at once.
func (c *Cache) NarInfos(ctx context.Context) iter.Seq2[*narinfo.NarInfo, error] {
	return func(yield func(*narinfo.NarInfo, error) bool) {
		var hashes []string
		for info, err := range c.b.List(ctx, "") {
			if err != nil {
				if !yield(nil, fmt.Errorf("list cache %s: %w", c.b, err)) {
					return
				}
				continue
			}
			if hashPart, ok := NarInfoHashPart(info.Name); ok && !info.Dir {
				hashes = append(hashes, hashPart)
			}
		}
		readers := 1
		if _, local := c.b.(storage.Mover); !local {
			readers = narinfoReaders
		}
		type result struct {
			ni  *narinfo.NarInfo
			err error
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		// A window of readers ahead of the one yielded, in order.
		slots := make(chan chan result, readers)
		go func() {
			defer close(slots)
			for _, h := range hashes {
				ch := make(chan result, 1)
				select {
				case slots <- ch:
				case <-ctx.Done():
					return
				}
				go func() {
					ni, err := c.NarInfo(ctx, h)
					ch <- result{ni, err}
				}()
			}
		}()
		for ch := range slots {
			r := <-ch
			if !yield(r.ni, r.err) {
				return
			}
		}
	}
}

// narinfoReaders is how many narinfos NarInfos reads at once from an
// object store.
const narinfoReaders = 32
