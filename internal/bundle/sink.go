package bundle

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/atomicfile"
)

// A sink decides what happens to a bundle's bytes as the checker reads
// them (source.go). Verify has none; Import's is a staging directory,
// published into the cache only once the whole bundle verified.
type sink interface {
	// create returns where to copy the file name, or nil for nowhere.
	// Nothing copied is trustworthy before the bundle verified.
	create(name string) (io.WriteCloser, error)
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

// staging holds verified-to-be copies of a bundle's files inside the
// cache directory, under a name readers skip. Every access goes through
// an os.Root of the cache.
type staging struct {
	root  *os.Root
	dir   string          // .staging-RANDOM
	dirty map[string]bool // cache directories that got moves
}

func newStaging(cacheDir string) (*staging, error) {
	root, err := os.OpenRoot(cacheDir)
	if err != nil {
		return nil, err
	}
	var b [8]byte
	rand.Read(b[:])
	dir := ".staging-" + hex.EncodeToString(b[:])
	if err := root.Mkdir(dir, 0o755); err != nil {
		root.Close()
		return nil, err
	}
	return &staging{root: root, dir: dir, dirty: map[string]bool{}}, nil
}

// create stages a NAR file or log unless the cache has a file of that
// name: NAR files are named by their hash, logs by their derivation.
// flake-registry.json is merged from the checker's copy instead.
func (s *staging) create(rel string) (io.WriteCloser, error) {
	if rel == RegistryName || s.has(rel) {
		return nil, nil
	}
	name := path.Join(s.dir, rel)
	if err := s.root.MkdirAll(path.Dir(name), 0o755); err != nil {
		return nil, err
	}
	f, err := s.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	return sealer{f}, nil
}

// has reports whether the cache has the regular file rel.
func (s *staging) has(rel string) bool {
	fi, err := s.root.Lstat(rel)
	return err == nil && fi.Mode().IsRegular()
}

// sealer fsyncs a staged file as it closes it, so that a move can publish
// it at once.
type sealer struct{ *os.File }

func (s sealer) Close() error { return atomicfile.Seal(s.File) }

// moveIn moves a staged file into the cache, unless the cache has it
// already, and returns its size when it moved.
func (s *staging) moveIn(rel string) (int64, error) {
	if s.has(rel) {
		return 0, nil
	}
	from := path.Join(s.dir, rel)
	fi, err := s.root.Stat(from)
	if err != nil {
		return 0, fmt.Errorf("not staged: %w", err)
	}
	if err := atomicfile.Move(s.root, from, rel); err != nil {
		return 0, err
	}
	s.dirty[path.Dir(rel)] = true
	return fi.Size(), nil
}

// syncDirs makes the moves durable.
func (s *staging) syncDirs() error {
	for _, dir := range slices.Sorted(maps.Keys(s.dirty)) {
		if err := atomicfile.SyncDirIn(s.root, dir); err != nil {
			return err
		}
	}
	return nil
}

// remove removes the staging directory; the staging is done with.
func (s *staging) remove() {
	if s.root != nil {
		s.root.RemoveAll(s.dir)
		s.root.Close()
		s.root = nil
	}
}

// removeStaleStaging removes staging directories an interrupted import
// left; the caller holds the lock, so none is in use.
func removeStaleStaging(cacheDir string, log *slog.Logger) {
	ents, _ := os.ReadDir(cacheDir)
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), ".staging-") {
			log.Debug("removing an interrupted import's staging directory", "dir", e.Name())
			os.RemoveAll(filepath.Join(cacheDir, e.Name()))
		}
	}
}
