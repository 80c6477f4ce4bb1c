package bundle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/channel"
	"github.com/nix-airgap/nix-airgap/internal/storage"
)

// A sink decides what happens to a bundle's bytes as the checker reads
// them (source.go). Verify has none; Import's is a staging spool,
// published into the cache only once the whole bundle verified.
type sink interface {
	// create returns where to copy the file name, or nil for nowhere.
	// Nothing copied is trustworthy before the bundle verified.
	create(name string) (io.WriteCloser, error)
}

// A keeper holds bytes a sink's import needs again only at its end: the
// manifest, 100 MB for a channel's 100,000 paths, which its record is.
type keeper interface {
	// keep spools data and returns where.
	keep(data []byte) (string, error)
}

var errStage = errors.New("staging copy")

// stageWriter passes writes to a staging copy, remembering a failure
// instead of returning it, so that verification goes on; close reports it.
type stageWriter struct {
	w   io.WriteCloser
	err error
}

func (s *stageWriter) Write(p []byte) (int, error) {
	if s.err == nil {
		if _, err := s.w.Write(p); err != nil {
			s.err = err
		}
	}
	return len(p), nil
}

func (s *stageWriter) close() error {
	if err := s.w.Close(); s.err == nil {
		s.err = err
	}
	if s.err != nil {
		return fmt.Errorf("%w: %w", errStage, s.err)
	}
	return nil
}

// staging holds verified-to-be copies of a bundle's files in a spool: in
// the cache directory, under a name readers skip, for a directory cache
// (published by renaming); in a local temp directory for an object store
// (published by uploading).
type staging struct {
	ctx   context.Context
	b     storage.Backend
	spool *storage.Spool
	// jobs is how many files go in at once: one where they are renamed
	// in, more where each is an upload.
	jobs int
	// present is, for a backend that is no local directory, what the
	// cache held as the import began: one listing answers faster than a
	// request per file. A file added since is uploaded again, which is
	// harmless: it is named by its content. Each file's size is kept:
	// its narinfo goes up without looking it up again.
	present map[string]int64
	// all stages every file, also those the cache has: a repair may
	// replace them.
	all bool
	// room is the space of a directory cache's file system; nil for
	// an object store.
	room *room
}

// uploadJobs is how many files go up to an object store at once.
const uploadJobs = 16

func newStaging(ctx context.Context, b storage.Backend, tempDir string) (*staging, error) {
	sp, err := storage.NewSpool(b, tempDir)
	if err != nil {
		return nil, err
	}
	st := &staging{ctx: ctx, b: b, spool: sp, jobs: 1}
	if _, local := b.(storage.Mover); !local {
		st.jobs = uploadJobs
		st.present = map[string]int64{}
		for _, dir := range []string{"", cache.NarDir, cache.LogDir} {
			for info, err := range b.List(ctx, dir) {
				if err != nil {
					sp.Close()
					return nil, err
				}
				if !info.Dir {
					st.present[info.Name] = info.Size
				}
			}
		}
	}
	return st, nil
}

// has reports whether the cache has the file rel already: NAR files are
// named by their hash, logs by their derivation.
func (s *staging) has(rel string) bool {
	if s.present != nil {
		_, ok := s.present[rel]
		return ok
	}
	_, err := s.b.Stat(s.ctx, rel)
	return err == nil
}

// listedSize is the size of rel as the cache's listing had it, or -1.
func (s *staging) listedSize(rel string) int64 {
	if n, ok := s.present[rel]; ok {
		return n
	}
	return -1
}

// hasNarInfo reports whether the cache has the narinfo of hashPart, or
// the error of a store that cannot say (cache.Cache.Has).
func (s *staging) hasNarInfo(d *cache.Cache, hashPart string) (bool, error) {
	if s.present != nil {
		_, ok := s.present[cache.NarInfoFile(hashPart)]
		return ok, nil
	}
	return d.Has(s.ctx, hashPart)
}

// create stages a NAR file or log unless the cache has it (or, for a
// repair, whether it has it or not), and a channel's tarball always (a
// newer one replaces the cache's). flake-registry.json is merged from the
// checker's copy instead, and the SBOM stays with the bundle.
func (s *staging) create(rel string) (io.WriteCloser, error) {
	_, isChannel := channel.NameOf(rel)
	if rel == RegistryName || rel == SBOMName || !s.all && !isChannel && s.has(rel) {
		return nil, nil
	}
	return s.spool.Create(rel)
}

func (s *staging) keep(data []byte) (string, error) {
	f, err := s.spool.CreateTemp()
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return f.Name(), err
}

// moveInAs publishes the staged file staged in the cache as rel (another
// name for a rebuilt NAR, staged before its name was known), unless the
// cache has it already, and returns its size when it moved. into is the
// cache's backend, or a batched view of its directory (cache.Cache.Batched)
// that renames it in without an fsync. It is durable once into is synced.
// count hears the bytes as they go in (storage.Spool.CommitCounting).
func (s *staging) moveInAs(ctx context.Context, into storage.Backend, staged, rel string, count func(int64)) (int64, error) {
	if s.has(rel) {
		return 0, nil
	}
	p := filepath.Join(s.spool.Dir(), filepath.FromSlash(staged))
	fi, err := os.Stat(p)
	if err != nil {
		return 0, fmt.Errorf("not staged: %w", err)
	}
	if m, ok := into.(storage.Mover); ok {
		if err := m.Move(ctx, p, rel); err != nil {
			return 0, err
		}
		count(fi.Size())
	} else if err := s.spool.CommitCounting(ctx, p, rel, count); err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// toMove is the size of the staged file staged that moveInAs would move
// in as rel: 0 if the cache has rel already or it is not staged.
func (s *staging) toMove(staged, rel string) int64 {
	if s.has(rel) {
		return 0
	}
	fi, err := os.Stat(filepath.Join(s.spool.Dir(), filepath.FromSlash(staged)))
	if err != nil {
		return 0
	}
	return fi.Size()
}

// replaceAs publishes the staged file staged in the cache as rel, in
// place of the file there, whole and atomically, and returns its size. It
// is durable once the backend is synced. count hears the bytes as they go
// in (storage.Spool.CommitCounting).
func (s *staging) replaceAs(staged, rel string, count func(int64)) (int64, error) {
	p := filepath.Join(s.spool.Dir(), filepath.FromSlash(staged))
	fi, err := os.Stat(p)
	if err != nil {
		return 0, fmt.Errorf("not staged: %w", err)
	}
	if err := s.spool.CommitCounting(s.ctx, p, rel, count); err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// local is where rel is staged.
func (s *staging) local(rel string) string {
	return filepath.Join(s.spool.Dir(), filepath.FromSlash(rel))
}

// staged reports whether rel was staged.
func (s *staging) staged(rel string) bool {
	fi, err := os.Stat(s.local(rel))
	return err == nil && fi.Mode().IsRegular()
}

// commit publishes the staged rel in the cache as name, replacing any
// file there. It is durable once the backend is synced.
func (s *staging) commit(rel, name string) error {
	if !s.staged(rel) {
		return fmt.Errorf("%s: not staged", rel)
	}
	return s.spool.Commit(s.ctx, s.local(rel), name)
}

// hasSize reports whether the cache has the file rel, of size bytes.
func (s *staging) hasSize(rel string, size int64) bool {
	info, err := s.b.Stat(s.ctx, rel)
	return err == nil && info.Size == size
}

func (s *staging) remove() { s.spool.Close() }

// path is the local directory the staging spools in, where the delta
// stage spools base NARs too: for a directory cache, on its file system,
// which has room for what it receives.
func (s *staging) path() string { return s.spool.Dir() }
