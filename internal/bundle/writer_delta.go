package bundle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/nardelta"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// DeltaBase is what AddNARDelta may tell a NAR against: a similar path
// that the cache the bundle is for already holds, as a nardelta.Base.
type DeltaBase struct {
	Path storepath.Path
	Base *nardelta.Base
	// FileSize and Compression are the base's NAR file's, as its bundle
	// records them (zero when it travelled as a delta too): the size
	// tells the new NAR's better than the part of it AddNARDelta
	// compresses.
	FileSize    uint64
	Compression string
}

// DeltaResult says what AddNARDelta kept.
type DeltaResult struct {
	// Delta reports that the path travels as a delta.
	Delta bool
	// FileSize is the compressed NAR's size, and DeltaSize the delta's
	// (0 when it could not be made). When the delta won before the NAR
	// was compressed whole, FileSize is told from the base's file size,
	// else from the part compressed.
	FileSize, DeltaSize uint64
}

// AddNARDelta is AddNAR that also makes a binary delta of the NAR
// against base, and keeps the delta when it is smaller than the
// compressed NAR, else the NAR. It reads the NAR twice, each time from a
// reader open gives: first for the delta, whose encoder checks the NAR
// against meta.NarHash and NarSize (which must be set: the delta names
// them), then to compress it, only until the compressed file passes the
// delta's size. A path whose delta wins so costs a MiB or a frame of
// compression (compression.WriterOptions.Limit), not the whole NAR's. A delta that cannot be made (its
// error is logged) leaves the NAR.
func (w *Writer) AddNARDelta(ctx context.Context, p storepath.Path, open func() (io.ReadCloser, error), meta PathMeta, base DeltaBase) (DeltaResult, error) {
	if err := w.checkPath(p); err != nil {
		return DeltaResult{}, err
	}
	tmp, err := os.CreateTemp(w.opts.TempDir, "nix-airgap-delta-")
	if err != nil {
		return DeltaResult{}, fmt.Errorf("add %s to bundle: %w", p, err)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	var res DeltaResult
	dmeta := meta
	// No delta without the NarHash it names.
	if !meta.NarHash.IsZero() {
		if err := w.encodeDelta(ctx, tmp, open, &dmeta, base); err != nil {
			w.log.Warn("no binary delta: shipping the whole NAR", "path", p, "base", base.Path, "err", err)
		} else if st, err := tmp.Stat(); err != nil {
			return DeltaResult{}, fmt.Errorf("add %s to bundle: %w", p, err)
		} else {
			res.DeltaSize = uint64(st.Size())
		}
	}
	narR, err := open()
	if err != nil {
		return DeltaResult{}, fmt.Errorf("add %s to bundle: %w", p, err)
	}
	f, ni, meta, err := w.compressNAR(ctx, p, narR, meta, int64(res.DeltaSize))
	narR.Close()
	var over *compression.LimitError
	switch {
	case errors.As(err, &over):
		// Past the delta's size: the delta wins. The NAR's file size, for
		// the summary, is exact when it was all compressed, else told
		// from the base's, else from the part compressed.
		res.Delta, res.FileSize = true, uint64(over.Out)
		b := base.Base
		switch {
		case uint64(over.In) >= meta.NarSize:
			// Out is the whole file's size.
		case base.FileSize > 0 && base.Compression == w.opts.Compression && b.NarSize() > 0:
			res.FileSize = max(res.FileSize, uint64(float64(base.FileSize)*float64(meta.NarSize)/float64(b.NarSize())))
		case over.In > 0:
			res.FileSize = max(res.FileSize, uint64(float64(over.Out)*float64(meta.NarSize)/float64(over.In)))
		}
		if _, err := tmp.Seek(0, io.SeekStart); err != nil {
			return DeltaResult{}, fmt.Errorf("add %s to bundle: %w", p, err)
		}
		df, err := w.dir.AddFile(ctx, tmp, DeltaExt)
		if err != nil {
			return DeltaResult{}, fmt.Errorf("add %s to bundle: %w", p, err)
		}
		ni := &narinfo.NarInfo{StorePath: p, Compression: w.opts.Compression, NarHash: meta.NarHash, NarSize: meta.NarSize}
		return res, w.publishDelta(ctx, ni, df, dmeta, base)
	case err != nil:
		return DeltaResult{}, err
	}
	res.FileSize = uint64(f.Size)
	return res, w.publish(ctx, ni, f, meta)
}

// encodeDelta writes the delta of the NAR open gives against base to
// tmp, hashing the NAR's file into meta when it is flat.
func (w *Writer) encodeDelta(ctx context.Context, tmp *os.File, open func() (io.ReadCloser, error), meta *PathMeta, base DeltaBase) error {
	narR, err := open()
	if err != nil {
		return err
	}
	defer narR.Close()
	r := cache.ContextReader(ctx, narR)
	var fh *flatHasher
	if meta.Flat {
		fh = newFlatHasher()
		r = io.TeeReader(r, fh)
	}
	err = nardelta.Encode(tmp, r, meta.NarHash, meta.NarSize, base.Base, nardelta.EncodeOptions{})
	return fh.finishInto(meta, err)
}

// AddCompressedDelta is AddCompressed that also makes a binary delta of
// the NAR against base, from the NAR it decompresses to check it, and
// keeps the delta when it is smaller than the upstream's file, else that
// file verbatim.
func (w *Writer) AddCompressedDelta(ctx context.Context, up *narinfo.NarInfo, file io.Reader, meta PathMeta, base DeltaBase) (DeltaResult, error) {
	p := up.StorePath
	if err := w.checkPath(p); err != nil {
		return DeltaResult{}, err
	}
	var f cache.File
	res, df, err := w.withDelta(ctx, p, up.NarHash, up.NarSize, base, func(nar io.Writer) (uint64, error) {
		var fh *flatHasher
		if meta.Flat {
			fh = newFlatHasher()
			nar = io.MultiWriter(nar, fh)
		}
		var err error
		f, err = w.dir.CopyVerified(ctx, file, up, nar)
		if err := fh.finishInto(&meta, err); err != nil {
			return 0, fmt.Errorf("add %s to bundle: %w", p, err)
		}
		return uint64(f.Size), nil
	})
	switch {
	case err != nil:
		return DeltaResult{}, err
	case !res.Delta:
		return res, w.publishCopied(ctx, up, f, meta)
	}
	ni := &narinfo.NarInfo{StorePath: p, Compression: w.opts.Compression, NarHash: up.NarHash, NarSize: up.NarSize}
	meta.References, meta.Deriver, meta.CA = up.References, up.Deriver, up.CA
	if meta.System == "" {
		meta.System = up.System
	}
	meta.Sigs = append(slices.Clone(up.Sigs), meta.Sigs...)
	return res, w.publishDelta(ctx, ni, df, meta, base)
}

// withDelta runs store, which writes the path's NAR file into the bundle
// and its NAR to the writer it is given, while the NAR is also told as a
// delta against base, and says which is smaller; when the delta is, it
// is stored too, as df. The NAR file store wrote stays unpublished either
// way: the caller publishes what won (Close prunes what did not).
func (w *Writer) withDelta(ctx context.Context, p storepath.Path, narHash storepath.Hash, narSize uint64, base DeltaBase, store func(nar io.Writer) (uint64, error)) (DeltaResult, cache.File, error) {
	tmp, err := os.CreateTemp(w.opts.TempDir, "nix-airgap-delta-")
	if err != nil {
		return DeltaResult{}, cache.File{}, fmt.Errorf("add %s to bundle: %w", p, err)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	// The NAR goes to the encoder through a pipe as it is stored: one
	// read of the source, hashed by store, which fails unless the NAR is
	// the one named. An encoder that fails only stops taking it.
	pr, pw := io.Pipe()
	encoded := make(chan error, 1)
	go func() {
		err := nardelta.Encode(tmp, pr, narHash, narSize, base.Base, nardelta.EncodeOptions{NARChecked: true})
		pr.CloseWithError(err)
		encoded <- err
	}()
	fileSize, err := store(&stickyPipe{w: pw})
	pw.CloseWithError(err)
	encErr := <-encoded
	if err != nil {
		return DeltaResult{}, cache.File{}, err
	}
	res := DeltaResult{FileSize: fileSize}
	if encErr != nil {
		w.log.Warn("no binary delta: shipping the whole NAR", "path", p, "base", base.Path, "err", encErr)
		return res, cache.File{}, nil
	}
	st, err := tmp.Stat()
	if err != nil {
		return DeltaResult{}, cache.File{}, fmt.Errorf("add %s to bundle: %w", p, err)
	}
	res.DeltaSize = uint64(st.Size())
	if res.DeltaSize >= res.FileSize {
		return res, cache.File{}, nil
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return DeltaResult{}, cache.File{}, fmt.Errorf("add %s to bundle: %w", p, err)
	}
	df, err := w.dir.AddFile(ctx, tmp, DeltaExt)
	if err != nil {
		return DeltaResult{}, cache.File{}, fmt.Errorf("add %s to bundle: %w", p, err)
	}
	res.Delta = true
	return res, df, nil
}

// compressNAR compresses the NAR narR reads into the bundle's directory,
// as AddNAR does, and returns the file and the narinfo it would have,
// unpublished. A limit above 0 stops it, with a *compression.LimitError,
// when the file would be larger.
func (w *Writer) compressNAR(ctx context.Context, p storepath.Path, narR io.Reader, meta PathMeta, limit int64) (cache.File, *narinfo.NarInfo, PathMeta, error) {
	var fh *flatHasher
	if meta.Flat {
		fh = newFlatHasher()
		narR = io.TeeReader(narR, fh)
	}
	codec := w.opts.Codec
	codec.SizeHint, codec.Limit = int64(meta.NarSize), limit
	if meta.Concurrency != 0 {
		codec.Concurrency = meta.Concurrency
	}
	f, stats, err := w.dir.AddNAR(ctx, narR, w.opts.Compression, codec, cache.NarStats{NarHash: meta.NarHash, NarSize: int64(meta.NarSize)})
	if err := fh.finishInto(&meta, err); err != nil {
		return cache.File{}, nil, meta, fmt.Errorf("add %s to bundle: %w", p, err)
	}
	ni := &narinfo.NarInfo{
		StorePath: p, URL: f.URL, Compression: w.opts.Compression,
		FileHash: f.Hash, FileSize: uint64(f.Size),
		NarHash: stats.NarHash, NarSize: uint64(stats.NarSize),
	}
	return f, ni, meta, nil
}

// publishDelta records a path that travels as the delta file df: no
// narinfo, its signatures in the manifest entry (§10).
func (w *Writer) publishDelta(ctx context.Context, ni *narinfo.NarInfo, df cache.File, meta PathMeta, base DeltaBase) error {
	p := ni.StorePath
	ni.References = sortedRefs(meta.References)
	ni.Deriver, ni.CA, ni.System = meta.Deriver, meta.CA, meta.System
	ni.Sigs = slices.Clone(meta.Sigs)
	if w.opts.Key != nil {
		ni.Sign(*w.opts.Key)
	}
	if meta.Roles == 0 {
		return fmt.Errorf("add %s to bundle: no roles", p)
	}
	entry := PathEntry{
		Path: p, NarHash: ni.NarHash, NarSize: ni.NarSize,
		URL: df.URL, FileHash: df.Hash, FileSize: uint64(df.Size), Compression: ni.Compression,
		References: ni.References, Deriver: ni.Deriver, CA: ni.CA, Roles: meta.Roles, Flat: meta.flat,
		Origin: meta.Origin, Fetch: meta.Fetch,
		Delta: &Delta{Base: base.Path, BaseNarHash: base.Base.NarHash(), BaseNarSize: base.Base.NarSize(), System: ni.System, Sigs: ni.Sigs},
	}
	if !w.addEntry(entry) || w.tw == nil {
		return nil
	}
	w.tarMu.Lock()
	defer w.tarMu.Unlock()
	if w.written[df.URL] {
		return nil
	}
	if err := w.copySpooled(ctx, df); err != nil {
		return fmt.Errorf("add %s to bundle: %w", p, err)
	}
	w.written[df.URL] = true
	return nil
}

// stickyPipe writes to the encoder's pipe until the encoder stops
// reading, and then drops what it is given: the NAR still goes on to the
// compressor.
type stickyPipe struct {
	w   *io.PipeWriter
	err error
}

func (s *stickyPipe) Write(p []byte) (int, error) {
	if s.err == nil {
		_, s.err = s.w.Write(p)
	}
	return len(p), nil
}
