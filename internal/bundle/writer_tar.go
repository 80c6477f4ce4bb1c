package bundle

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/atomicfile"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// NewTarWriter writes a bundle as a tar stream to w, in the order
// docs/bundle-format.md §4 gives. Nothing is written to w after Close.
func NewTarWriter(w io.Writer, storeDir storepath.Dir, opts WriterOptions) (*Writer, error) {
	wr, err := newTarWriter(w, storeDir, opts)
	if err != nil {
		return nil, err
	}
	info, _ := wr.dir.Info().MarshalText()
	if err := wr.writeTarFile(CacheInfo, info); err != nil {
		wr.release(true)
		return nil, err
	}
	return wr, nil
}

// newTarWriter is NewTarWriter but for the tar's first entry.
func newTarWriter(w io.Writer, storeDir storepath.Dir, opts WriterOptions) (*Writer, error) {
	atomicfile.Sweep(opts.TempDir, storage.SpoolPrefix, nil)
	// Held while the spool is in use: a later writer's Sweep removes the
	// spools no one holds, those killed writers left.
	spool, lock, err := atomicfile.MkdirTemp(opts.TempDir, storage.SpoolPrefix)
	if err != nil {
		return nil, fmt.Errorf("write bundle: %w", err)
	}
	// Spooled files live only until they are copied into the tar: never
	// synced.
	d, err := cache.CreateSpoolDir(spool, storeDir, Priority)
	if err != nil {
		os.RemoveAll(spool)
		lock.Close()
		return nil, fmt.Errorf("write bundle: %w", err)
	}
	tw := tar.NewWriter(w)
	wr := newWriter(d, spool, tw, storeDir, opts)
	wr.lock = lock
	return wr, nil
}

// publishTar writes a NAR file and its narinfo into the tar. A tar header
// carries the file's size before its bytes, so the NAR was compressed to a
// spool file first; copy it in now, then its narinfo, and free the spool.
// Two paths with the same NAR share one file, written once.
func (w *Writer) publishTar(ctx context.Context, f cache.File, narinfoName string, text []byte) error {
	w.tarMu.Lock()
	defer w.tarMu.Unlock()
	if !w.written[f.URL] {
		if err := w.copySpooled(ctx, f); err != nil {
			return err
		}
		w.written[f.URL] = true
	}
	return w.writeTarFileLocked(narinfoName, text)
}

// copySpooled copies a spooled NAR file into the tar and removes it.
func (w *Writer) copySpooled(ctx context.Context, f cache.File) error {
	src, err := w.dir.Open(ctx, f.URL)
	if err != nil {
		return err
	}
	defer func() {
		src.Close()
		os.Remove(filepath.Join(w.spool, filepath.FromSlash(f.URL)))
	}()
	if err := w.tw.WriteHeader(tarHeader(f.URL, f.Size)); err != nil {
		return err
	}
	if _, err := io.Copy(w.tw, src); err != nil {
		return fmt.Errorf("%s: %w", f.URL, err)
	}
	return nil
}

// closeTar writes the extra files, the manifest and its signature into
// the tar, and ends it.
func (w *Writer) closeTar(data, sig []byte) error {
	if err := w.checkAdopted(); err != nil {
		return err
	}
	w.tarMu.Lock()
	defer w.tarMu.Unlock()
	names := make([]string, 0, len(w.files)+len(w.spooled))
	for name := range w.files {
		names = append(names, name)
	}
	for name := range w.spooled {
		names = append(names, name)
	}
	// flake-registry.json first, then logs, as §4 orders them.
	slices.SortFunc(names, func(a, b string) int {
		if (a == RegistryName) != (b == RegistryName) {
			if a == RegistryName {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	for _, name := range names {
		if spool, ok := w.spooled[name]; ok {
			if err := w.copySpooledFile(name, spool); err != nil {
				return err
			}
			continue
		}
		if err := w.writeTarFileLocked(name, w.files[name]); err != nil {
			return err
		}
	}
	if err := w.writeTarFileLocked(ManifestName, data); err != nil {
		return err
	}
	if sig != nil {
		if err := w.writeTarFileLocked(SigName, sig); err != nil {
			return err
		}
	}
	if err := w.tw.Close(); err != nil {
		return fmt.Errorf("close bundle: %w", err)
	}
	return nil
}

// copySpooledFile copies an extra file addFileFrom spooled into the tar.
func (w *Writer) copySpooledFile(name, spool string) error {
	f, err := os.Open(spool)
	if err != nil {
		return fmt.Errorf("write bundle %s: %w", name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("write bundle %s: %w", name, err)
	}
	if err := w.tw.WriteHeader(tarHeader(name, fi.Size())); err != nil {
		return fmt.Errorf("write bundle %s: %w", name, err)
	}
	if _, err := io.Copy(w.tw, f); err != nil {
		return fmt.Errorf("write bundle %s: %w", name, err)
	}
	return nil
}

func tarHeader(name string, size int64) *tar.Header {
	return &tar.Header{
		Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644,
		// A fixed time keeps the stream reproducible.
		ModTime: time.Unix(0, 0).UTC(), Format: tar.FormatPAX,
	}
}

func (w *Writer) writeTarFile(name string, data []byte) error {
	w.tarMu.Lock()
	defer w.tarMu.Unlock()
	return w.writeTarFileLocked(name, data)
}

func (w *Writer) writeTarFileLocked(name string, data []byte) error {
	if err := w.tw.WriteHeader(tarHeader(name, int64(len(data)))); err != nil {
		return fmt.Errorf("write bundle %s: %w", name, err)
	}
	if _, err := w.tw.Write(data); err != nil {
		return fmt.Errorf("write bundle %s: %w", name, err)
	}
	return nil
}
