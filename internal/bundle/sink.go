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
// cache directory, under a name readers skip.
type staging struct {
	cacheDir string
	dir      string
	dirty    map[string]bool // cache subdirectories that got renames
}

func newStaging(cacheDir string) (*staging, error) {
	var b [8]byte
	rand.Read(b[:])
	dir := filepath.Join(cacheDir, ".staging-"+hex.EncodeToString(b[:]))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	return &staging{cacheDir: cacheDir, dir: dir, dirty: map[string]bool{}}, nil
}

// create stages a NAR file or log unless the cache has a file of that
// name: NAR files are named by their hash, logs by their derivation.
// flake-registry.json is merged from the checker's copy instead.
func (s *staging) create(rel string) (io.WriteCloser, error) {
	if rel == RegistryName {
		return nil, nil
	}
	if fi, err := os.Lstat(filepath.Join(s.cacheDir, filepath.FromSlash(rel))); err == nil && fi.Mode().IsRegular() {
		return nil, nil
	}
	name := filepath.Join(s.dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	return syncCloser{f}, nil
}

// syncCloser fsyncs a staged file as it closes it, so that a rename can
// publish it at once.
type syncCloser struct{ f *os.File }

func (s syncCloser) Write(p []byte) (int, error) { return s.f.Write(p) }
func (s syncCloser) Close() error {
	err := s.f.Sync()
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// moveIn renames a staged file into the cache, unless the cache has it
// already, and returns its size when it moved.
func (s *staging) moveIn(rel string) (int64, error) {
	dst := filepath.Join(s.cacheDir, filepath.FromSlash(rel))
	if fi, err := os.Lstat(dst); err == nil && fi.Mode().IsRegular() {
		return 0, nil
	}
	src := filepath.Join(s.dir, filepath.FromSlash(rel))
	fi, err := os.Stat(src)
	if err != nil {
		return 0, fmt.Errorf("not staged: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return 0, err
	}
	if err := os.Rename(src, dst); err != nil {
		return 0, err
	}
	s.dirty[filepath.Dir(dst)] = true
	return fi.Size(), nil
}

func (s *staging) syncDirs() error {
	for _, dir := range slices.Sorted(maps.Keys(s.dirty)) {
		if err := atomicfile.SyncDir(dir); err != nil {
			return err
		}
	}
	return nil
}

func (s *staging) remove() { os.RemoveAll(s.dir) }

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
