package cache

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// WriteFile atomically and durably writes an extra file such as
// manifest.json or nix-airgap/bundles/ID.json. name is relative to the
// cache and must stay inside it. With GroupCommit the file appears with
// the next batch, as a narinfo does (see Sync), whole.
func (c *Cache) WriteFile(ctx context.Context, name string, data []byte) error {
	rel, err := localURL(name)
	if err != nil {
		return fmt.Errorf("write %q in cache %s: %w", name, c.b, err)
	}
	if c.GroupCommit {
		return c.queue(rel, slices.Clone(data))
	}
	if err := c.b.Put(ctx, rel, strings.NewReader(string(data)), int64(len(data))); err != nil {
		return fmt.Errorf("write %s: %w", c.name(rel), err)
	}
	return nil
}

// PutNarInfo atomically writes ni as HASHPART.narinfo, replacing any
// earlier one. It refuses a narinfo for another store dir, one whose URL is
// not a file of this cache, and one whose file is missing (ErrNotFound) or
// has another size than FileSize (ErrCorrupt): a narinfo never appears
// before its NAR, which the backend is synced for first. With GroupCommit
// the narinfo appears with its batch (see Sync), not before PutNarInfo
// returns.
func (c *Cache) PutNarInfo(ctx context.Context, ni *narinfo.NarInfo) error {
	return c.PutNarInfoOf(ctx, ni, -1)
}

// PutNarInfoOf is PutNarInfo for a caller that knows ni's file is in the
// cache, durably, with size bytes (it put the file itself, or listed it
// with the cache locked against removals): when size is FileSize, the
// file is not looked up again, which in an object store saves a request
// a path. Any other size, -1 for unknown, is checked as PutNarInfo does.
func (c *Cache) PutNarInfoOf(ctx context.Context, ni *narinfo.NarInfo, size int64) error {
	if ni.StorePath.Dir != c.info.StoreDir {
		return fmt.Errorf("put narinfo %s in %s: %w: cache is for store %s", ni.StorePath, c.b, storepath.ErrWrongDir, c.info.StoreDir)
	}
	data, err := ni.MarshalText()
	if err != nil {
		return fmt.Errorf("put narinfo %s in %s: %w", ni.StorePath, c.b, err)
	}
	rel, err := localURL(ni.URL)
	if err != nil {
		return fmt.Errorf("put narinfo %s: URL %q: %w", ni.StorePath, ni.URL, err)
	}
	st := storage.Info{Size: size}
	if size < 0 || ni.FileSize == 0 || uint64(size) != ni.FileSize {
		st, err = c.b.Stat(ctx, rel)
	}
	switch {
	case storage.IsNotExist(err):
		return fmt.Errorf("put narinfo %s: its file %s is missing: %w", ni.StorePath, c.name(rel), ErrNotFound)
	case err != nil:
		return fmt.Errorf("put narinfo %s: %w", ni.StorePath, err)
	case ni.FileSize != 0 && uint64(st.Size) != ni.FileSize:
		return fmt.Errorf("put narinfo %s: %s has %d bytes, narinfo says %d: %w", ni.StorePath, c.name(rel), st.Size, ni.FileSize, ErrCorrupt)
	}
	name := NarInfoFile(ni.StorePath.Hash)
	if c.GroupCommit {
		return c.queue(name, data)
	}
	if err := storage.Sync(ctx, c.b); err != nil {
		return fmt.Errorf("put narinfo %s: %w", ni.StorePath, err)
	}
	if err := c.b.Put(ctx, name, strings.NewReader(string(data)), int64(len(data))); err != nil {
		return fmt.Errorf("put narinfo %s: %w", ni.StorePath, err)
	}
	return nil
}

// AddFile stores r's bytes as nar/NIX32(sha256).nar + ext (such as
// ".zst"), durably, and returns its URL, hash and size. If that file exists
// already with the same size, it is left alone.
func (c *Cache) AddFile(ctx context.Context, r io.Reader, ext string) (File, error) {
	return c.store(ctx, ext, func(w io.Writer) error {
		_, err := storage.Copy(ctx, w, r)
		return err
	})
}

// AddNAR compresses the NAR nar reads with the named compression and
// stores it as AddFile does, hashing the NAR and the compressed file in the
// same pass. It does not check that nar is a valid NAR. If want is not
// zero, it is what the NAR must hash to (the store's record, say): a NAR
// that differs is refused, wrapping ErrCorrupt, and nothing is left behind.
func (c *Cache) AddNAR(ctx context.Context, narR io.Reader, comp string, opts compression.WriterOptions, want NarStats) (File, NarStats, error) {
	ext, err := compression.Ext(comp)
	if err != nil {
		return File{}, NarStats{}, fmt.Errorf("add NAR to %s: %w", c.b, err)
	}
	var stats NarStats
	f, err := c.store(ctx, ext, func(w io.Writer) error {
		cw, err := compression.NewWriter(w, comp, opts)
		if err != nil {
			return err
		}
		hw := nar.NewHashWriter(cw)
		// A NAR source that writes itself out (a nar.DumpReader) skips
		// the copy through a buffer.
		if wt, ok := narR.(io.WriterTo); ok {
			_, err = wt.WriteTo(ctxWriter{ctx, hw})
		} else {
			_, err = storage.Copy(ctx, hw, narR)
		}
		if err != nil {
			cw.Close()
			return err
		}
		if err := cw.Close(); err != nil {
			return fmt.Errorf("compress: %w", err)
		}
		stats = NarStats{NarHash: hw.Sum(), NarSize: hw.Size()}
		if !want.NarHash.IsZero() && (!stats.NarHash.Equal(want.NarHash) || stats.NarSize != want.NarSize) {
			return fmt.Errorf("%w: NAR hashes to %s (%d bytes), want %s (%d bytes)", ErrCorrupt, stats.NarHash, stats.NarSize, want.NarHash, want.NarSize)
		}
		return nil
	})
	if err != nil {
		return File{}, NarStats{}, err
	}
	return f, stats, nil
}

var errExt = errors.New("extension must be empty or a dot and up to 8 lower-case letters or digits")

func checkExt(ext string) error {
	if ext == "" {
		return nil
	}
	if len(ext) < 2 || len(ext) > 9 || ext[0] != '.' {
		return errExt
	}
	for _, c := range ext[1:] {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return errExt
		}
	}
	return nil
}

// spoolDir returns the cache's spool, made on first use.
func (c *Cache) spoolDir() (*storage.Spool, error) {
	c.spoolOnce.Do(func() { c.spool, c.spoolErr = storage.NewSpool(c.b, c.TempDir) })
	return c.spool, c.spoolErr
}

// store writes a file with write into the spool, hashing what it writes,
// then commits it under its hash. Any error leaves nothing behind.
func (c *Cache) store(ctx context.Context, ext string, write func(io.Writer) error) (File, error) {
	if err := checkExt(ext); err != nil {
		return File{}, fmt.Errorf("add file to %s: %q: %w", c.b, ext, err)
	}
	sp, err := c.spoolDir()
	if err != nil {
		return File{}, fmt.Errorf("add file to %s: %w", c.b, err)
	}
	tmp, err := sp.CreateTemp()
	if err != nil {
		return File{}, fmt.Errorf("add file to %s: %w", c.b, err)
	}
	defer func() {
		if tmp != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	cw := &nar.CountingWriter{W: io.MultiWriter(tmp, h)}
	bw, done := storage.BufferedWriter(cw)
	defer done()
	if err := write(bw); err != nil {
		return File{}, fmt.Errorf("add file to %s: %w", c.b, err)
	}
	if err := bw.Flush(); err != nil {
		return File{}, fmt.Errorf("add file to %s: %w", c.b, err)
	}
	sum, _ := storepath.NewHash(storepath.SHA256, h.Sum(nil))
	file := File{URL: NarURL(sum, ext), Hash: sum, Size: cw.N}
	// A file of the same size is the same file, unless a crash left
	// it unsynced: with GroupCommit it is replaced.
	if st, err := c.b.Stat(ctx, file.URL); err == nil && st.Size == file.Size && !c.GroupCommit {
		return file, nil
	}
	name := tmp.Name()
	err = tmp.Close()
	tmp = nil
	if err == nil {
		err = sp.Commit(ctx, name, file.URL)
	}
	if err != nil {
		os.Remove(name)
		return File{}, fmt.Errorf("add file %s: %w", c.name(file.URL), err)
	}
	return file, nil
}

// ContextReader returns a reader of r that fails with ctx's error once
// ctx is done, so that a long copy stops when its command is cancelled.
func ContextReader(ctx context.Context, r io.Reader) io.Reader { return storage.ContextReader(ctx, r) }

// ctxWriter stops a copy when ctx is done.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}
