package bundle

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/nix-airgap/nix-airgap/internal/atomicfile"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// NewDirWriter writes a bundle into the directory path, creating it. An
// existing bundle there is reused: Reuse adopts its NAR files once they
// verify, and Close removes what the new bundle no longer holds, so
// anything else (a directory of other things, a long-lived cache with
// nix-airgap/, a binary cache Nix made) is refused, as Finished does.
func NewDirWriter(dirPath string, storeDir storepath.Dir, opts WriterOptions) (*Writer, error) {
	if err := checkDirOut(dirPath); err != nil {
		return nil, fmt.Errorf("write bundle %s: %w", dirPath, err)
	}
	if err := os.MkdirAll(dirPath, 0o755); err != nil {
		return nil, fmt.Errorf("write bundle: %w", err)
	}
	lock, err := lockDir(dirPath)
	if err != nil {
		return nil, fmt.Errorf("write bundle %s: %w", dirPath, err)
	}
	w, err := lockedDirWriter(dirPath, lock, storeDir, opts, cache.CreateBatchedDir)
	if err != nil {
		lock.Close()
		return nil, err
	}
	return w, nil
}

// lockedDirWriter is NewDirWriter, with the cache made by create, once
// lock, on dirPath, is held; the Writer keeps it, but not when it fails.
func lockedDirWriter(dirPath string, lock *os.File, storeDir storepath.Dir, opts WriterOptions, create func(string, storepath.Dir, int) (*cache.Cache, error)) (*Writer, error) {
	// nix-cache-info is written under the lock: a spool that has one
	// and that nobody holds is a killed writer's (NewVolumeWriter). Close
	// syncs once before it writes the manifest; NAR files and narinfos
	// are made durable in batches until then.
	d, err := create(dirPath, storeDir, Priority)
	if err != nil {
		return nil, fmt.Errorf("write bundle: %w", err)
	}
	// The directory is no longer the old bundle: drop its manifest and
	// signature first, durably, so that nothing vouches for a
	// half-rewritten one, even after a power cut.
	removed := false
	for _, name := range []string{ManifestName, SigName} {
		err := os.Remove(filepath.Join(dirPath, name))
		removed = removed || err == nil
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			d.Close()
			return nil, fmt.Errorf("write bundle %s: %w", dirPath, err)
		}
	}
	if removed {
		if err := atomicfile.SyncDir(dirPath); err != nil {
			d.Close()
			return nil, fmt.Errorf("write bundle %s: %w", dirPath, err)
		}
	}
	w := newWriter(d, "", nil, storeDir, opts)
	w.lock = lock
	removeTemps(dirPath, w.log)
	return w, nil
}

// errBusy reports a bundle directory another writer holds.
var errBusy = errors.New("another nix-airgap is writing this bundle")

// lockDir takes an exclusive flock(2) on the directory itself, held until
// the writer closes: two packs into one directory would mix their files.
func lockDir(dir string) (*os.File, error) {
	f, err := atomicfile.Lock(dir, os.O_RDONLY, syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return nil, errBusy
	}
	return f, err
}

// removeTemps removes the temp files (.tmp-*) a killed writer left in a
// bundle directory; the caller holds its lock, so none is in use.
func removeTemps(dir string, log *slog.Logger) {
	for _, sub := range []string{dir, filepath.Join(dir, cache.NarDir)} {
		ents, _ := os.ReadDir(sub)
		for _, e := range ents {
			if isTemp(e) && !e.IsDir() {
				log.Debug("removing a killed writer's temp file", "file", filepath.Join(sub, e.Name()))
				os.Remove(filepath.Join(sub, e.Name()))
			}
		}
	}
}

// isTemp tells a temp file or staging directory a writer made, which a
// killed one leaves.
func isTemp(e fs.DirEntry) bool {
	return e.Type().IsRegular() && strings.HasPrefix(e.Name(), ".tmp-") ||
		e.IsDir() && strings.HasPrefix(e.Name(), ".staging-")
}

// Reuse adopts p from a bundle already in the writer's directory, when its
// narinfo is there and its NAR file verifies, and reports whether it did.
// pack calls it before building or fetching p again. The tar form reuses
// only what a resumed tar kept (ResumeTarWriter).
func (w *Writer) Reuse(ctx context.Context, p storepath.Path, meta PathMeta) (bool, error) {
	if w.tw != nil {
		return w.reuseTar(p, meta)
	}
	if err := w.checkPath(p); err != nil {
		return false, err
	}
	old, err := w.dir.NarInfo(ctx, p.Hash)
	if err != nil {
		return false, nil
	}
	if old.StorePath != p || checkURL(old.URL) != nil {
		return false, nil
	}
	file, meta, ok := w.verifyLeft(ctx, old.URL, old, "narinfo", meta)
	if !ok {
		return false, nil
	}
	meta.References, meta.Deriver, meta.CA = old.References, old.Deriver, old.CA
	if meta.System == "" {
		meta.System = old.System
	}
	meta.Sigs = append(slices.Clone(old.Sigs), meta.Sigs...)
	ni := *old
	return true, w.publish(ctx, &ni, file, meta)
}

// Adopt adopts the NAR file of up, an upstream narinfo whose signatures
// the caller checked, when a killed pack left it in the writer's
// directory without a narinfo (group commit publishes narinfos in
// batches) and it verifies against up; it reports whether it did. A
// resumed pack thus fetches again only what was in flight. The tar form
// never adopts.
func (w *Writer) Adopt(ctx context.Context, up *narinfo.NarInfo, meta PathMeta) (bool, error) {
	// The file's name is the hash of its content, as cache.Cache.store
	// names it.
	ext, err := compression.Ext(up.Compression)
	if w.tw != nil || err != nil || up.FileHash.Algo != storepath.SHA256 {
		return false, nil
	}
	if err := w.checkPath(up.StorePath); err != nil {
		return false, err
	}
	url := cache.NarURL(up.FileHash, ext)
	file, meta, ok := w.verifyLeft(ctx, url, up, "upstream narinfo", meta)
	if !ok {
		return false, nil
	}
	// The killed pack did not sync it, but the directory is NoSync, so
	// the batch's Sync before its narinfo appears is a syncfs, which
	// makes it durable too.
	return true, w.publishCopied(ctx, up, file, meta)
}

// verifyLeft reads the file url an earlier pack left in the directory,
// deeply, and reports whether it is the one ni describes; meta gains its
// flat hashes.
func (w *Writer) verifyLeft(ctx context.Context, url string, ni *narinfo.NarInfo, says string, meta PathMeta) (cache.File, PathMeta, bool) {
	f, err := w.dir.Open(ctx, url)
	if err != nil {
		return cache.File{}, meta, false
	}
	defer f.Close()
	st, err := checkNARStream(f, ni.Compression, meta.Flat, true, nil)
	if err != nil || st.Mismatch(ni, says) != "" {
		w.log.Debug("not reusing", "path", ni.StorePath, "file", url, "problem", st.Mismatch(ni, says), "err", err)
		return cache.File{}, meta, false
	}
	if meta.Flat {
		if st.flat == nil {
			return cache.File{}, meta, false
		}
		meta.flat = st.flat
	}
	return cache.File{URL: url, Hash: st.FileHash, Size: int64(st.FileSize)}, meta, true
}

// stale lists what an earlier bundle left in the directory and this one
// does not hold: narinfos, and NAR files and extra files.
func (w *Writer) stale(ctx context.Context, m *Manifest) (narinfos, others []string, err error) {
	keepNAR := map[string]bool{}
	for _, e := range m.Paths {
		keepNAR[e.URL] = true
	}
	keepFile := map[string]bool{}
	for _, f := range m.Files {
		keepFile[f.Name] = true
	}
	for info, err := range storage.Walk(ctx, w.dir.Backend(), "") {
		if err != nil {
			return nil, nil, err
		}
		rel := info.Name
		h, isNarInfo := cache.NarInfoHashPart(rel)
		switch {
		case rel == CacheInfo, rel == ManifestName, rel == SigName, keepFile[rel], keepNAR[rel]:
		case isNarInfo:
			if _, ok := m.path(h); !ok {
				narinfos = append(narinfos, rel)
			}
		default:
			others = append(others, rel)
		}
	}
	return narinfos, others, nil
}

// prune removes what stale listed: the narinfos first, then the rest.
func (w *Writer) prune(ctx context.Context, narinfos, others []string) error {
	for i, rel := range append(narinfos, others...) {
		if i == len(narinfos) {
			// The narinfos' removal is durable before their files go.
			if err := w.dir.Sync(ctx); err != nil {
				return err
			}
		}
		w.log.Debug("removing stale file", "file", storage.Where(w.dir.Backend(), rel))
		if err := w.dir.Backend().Remove(ctx, rel); err != nil {
			return err
		}
	}
	return nil
}

// Abort drops a bundle that will not be finished, as when its pack is
// interrupted: the tar form's spool goes; a directory, and a volume set's
// spool, keep what they have, which the next pack reuses. A writer that
// was closed, or aborted, is left alone.
func (w *Writer) Abort() {
	w.mu.Lock()
	done := w.closed
	w.closed = true
	w.mu.Unlock()
	if done {
		return
	}
	if w.vol != nil {
		// The spool is never synced, so publishing the narinfos group
		// commit held back costs nothing, and the next pack reuses
		// their paths.
		w.dir.Sync(context.Background())
	}
	w.release(w.vol == nil)
}

// release closes the writer's files and, with removeSpool, removes its
// spool.
func (w *Writer) release(removeSpool bool) {
	w.dir.Close()
	// Removed before the lock goes: a Sweep takes up an unheld spool.
	if w.spool != "" && removeSpool {
		os.RemoveAll(w.spool)
	}
	if w.lock != nil {
		w.lock.Close()
	}
}
