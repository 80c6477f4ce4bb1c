package bundle

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/channel"
	"github.com/nix-airgap/nix-airgap/internal/progress"
	"github.com/nix-airgap/nix-airgap/internal/storage"
)

// room is what an import into a directory cache knows of the space on
// the cache's file system: how much was free as it began and, once the
// manifest is trusted, about how much it needs. An object store has none.
type room struct {
	cache string // the cache's directory
	mount string // where its file system is mounted
	free  int64
	block int64
	// need and paths are set by check: the bytes this import adds, and
	// the store paths; need is -1 until known (a stream brings its
	// manifest last, after its files were staged).
	need  int64
	paths int
}

// newRoom measures the free space of the cache b, a directory; nil for
// any other backend, or where the file system cannot say.
func newRoom(b storage.Backend) *room {
	d, ok := b.(*storage.Dir)
	if !ok {
		return nil
	}
	free, block, ok := fsSpace(d.Path())
	if !ok {
		return nil
	}
	// Found now: a refused first import removes the cache it made.
	return &room{cache: d.Path(), mount: mountPoint(d.Path()), free: free, block: block, need: -1}
}

// NoRoomError refuses an import, before anything was written, whose
// files would not fit on the cache's file system.
type NoRoomError struct {
	Cache      string
	Free, Need int64
	Paths      int
}

func (e *NoRoomError) Error() string {
	return fmt.Sprintf("%s has %s free, this import needs about %s (%s): free space or use another --cache",
		e.Cache, progress.IEC(uint64(e.Free)), progress.IEC(uint64(e.Need)), progress.Plural(e.Paths, "path"))
}

// check refuses m, whose manifest is manifestSize bytes, if what
// importing it adds to the cache st stages into does not fit in the space
// free. limit, when positive, is a bound known otherwise: the size of
// the volumes of a set given, which holds unless a binary delta grows
// into its NAR.
func (r *room) check(st *staging, m *Manifest, manifestSize int, jobs int, limit int64) error {
	r.need, r.paths = st.need(m, manifestSize, jobs, r.block)
	if limit > 0 && limit < r.need && !slices.ContainsFunc(m.Paths, func(e PathEntry) bool { return e.Delta != nil }) {
		r.need = limit
	}
	if r.need > r.free {
		return &NoRoomError{Cache: r.cache, Free: r.free, Need: r.need, Paths: r.paths}
	}
	return nil
}

// explain adds to err, if the disk filled all the same (another writer
// took the space meanwhile, or the estimate fell short), which file
// system it was, what was free as the import began and what it needed.
func (r *room) explain(err error) error {
	if r == nil || !errors.Is(err, syscall.ENOSPC) {
		return err
	}
	need := "an amount not known before its files were staged"
	if r.need >= 0 {
		need = "about " + progress.IEC(uint64(r.need))
	}
	return fmt.Errorf("%w; the file system of %s (mounted on %s) had %s free as the import began, and it needed %s",
		err, r.cache, r.mount, progress.IEC(uint64(r.free)), need)
}

// mountPoint is the directory dir's file system is mounted on: the
// highest of its parents on the same device.
func mountPoint(dir string) string {
	dev := func(p string) (uint64, bool) {
		fi, err := os.Stat(p)
		if err != nil {
			return 0, false
		}
		s, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return 0, false
		}
		return uint64(s.Dev), true
	}
	d, err := filepath.Abs(dir)
	if err != nil {
		return dir
	}
	own, ok := dev(d)
	if !ok {
		return dir
	}
	for {
		up := filepath.Dir(d)
		if up == d {
			return d
		}
		if n, ok := dev(up); !ok || n != own {
			return d
		}
		d = up
	}
}

// need is about how many bytes importing m adds to the cache st stages
// into, each file rounded up to the file system's block, and how many
// store paths. It counts what import writes: the NAR files and narinfos
// of the paths the cache lacks, the rebuilt NAR of a binary delta (at most
// its NAR's size, with zstd's worst-case overhead) and the base NARs
// spooled to rebuild them, the bundle's other files, and the manifest,
// kept while staging and again as the bundle's record. NAR files are
// staged in the cache's directory and moved in, not copied: each counts
// once.
func (st *staging) need(m *Manifest, manifestSize int, jobs int, block int64) (int64, int) {
	blocks := func(n int64) int64 { return (n + block - 1) / block * block }
	var bytes, base int64
	paths, deltas := 0, 0
	urls := map[string]bool{}
	for i := range m.Paths {
		e := &m.Paths[i]
		if !st.all && st.has(cache.NarInfoFile(e.Path.Hash)) {
			continue
		}
		paths++
		// A narinfo: its fields, and room for its signatures.
		bytes += blocks(int64(len(e.narInfo("", nil).String())) + 1024)
		switch {
		case e.Delta != nil:
			n := int64(e.NarSize)
			bytes += blocks(n + n/128 + 1<<17)
			base = max(base, int64(e.Delta.BaseNarSize))
			deltas++
		case !urls[e.URL] && (st.all || !st.has(e.URL)):
			bytes += blocks(int64(e.FileSize))
		}
		urls[e.URL] = true
	}
	bytes += base * int64(min(jobs, deltas))
	for _, f := range m.Files {
		if _, isChannel := channel.NameOf(f.Name); f.Name == SBOMName || !isChannel && !st.all && st.has(f.Name) {
			continue
		}
		bytes += blocks(f.Size)
	}
	return bytes + 2*blocks(int64(manifestSize)+4096), paths
}
