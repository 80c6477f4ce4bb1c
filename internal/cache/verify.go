package cache

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Checking NAR files. Every compressed NAR file nix-airgap reads from a
// cache or a bundle, to verify, import, copy or reuse it, passes once
// through ReadNARFile: its bytes are hashed and, when deep, decompressed
// and the NAR hashed, in one pass, while a copy of the bytes may go
// elsewhere. Mismatch then compares what was measured with what a narinfo
// (or a bundle's manifest) says.

// NARFileOptions say how ReadNARFile reads a compressed NAR file. The zero
// value hashes the file's bytes with sha256 and nothing more.
type NARFileOptions struct {
	// Compression names the file's codec, as a narinfo's Compression.
	Compression string
	// Deep decompresses the file and hashes the NAR, as Nix checks a NAR
	// it substitutes.
	Deep bool
	// FileHash is the algorithm the file is hashed with; 0 means sha256.
	FileHash storepath.Algo
	// MaxSize, if not 0, stops the read once the file is longer, so that
	// a stream cannot run on (NARFileStats.TooLong).
	MaxSize uint64
	// Copy, if set, receives the file's bytes as they are read. An error
	// writing to it stops the read and is returned.
	Copy io.Writer
	// NAR, if set, receives the decompressed NAR when Deep, such as a flat
	// file's hasher. An error writing to it only stops what it receives.
	NAR io.Writer
}

// NARFileStats is what ReadNARFile measured.
type NARFileStats struct {
	FileHash storepath.Hash
	FileSize uint64
	// TooLong reports a file that ran past NARFileOptions.MaxSize: the
	// read stopped there.
	TooLong bool
	// Deep reports that the file was decompressed: NarHash and NarSize
	// are the NAR's, or DecodeErr says why it did not decompress.
	Deep      bool
	NarHash   storepath.Hash
	NarSize   uint64
	DecodeErr error
}

// errTooLong stops a read at NARFileOptions.MaxSize.
var errTooLong = errors.New("longer than expected")

// ReadNARFile reads the compressed NAR file r reads to its end, as opts
// says. Data that is wrong (or does not decompress) is not an error but
// what the stats describe; the error is r's, or Copy's.
func ReadNARFile(r io.Reader, opts NARFileOptions) (*NARFileStats, error) {
	algo := opts.FileHash
	if algo == 0 {
		algo = storepath.SHA256
	}
	fr := &fileReader{r: r, h: algo.New(), copy: opts.Copy, max: opts.MaxSize}
	buf, done := storage.Buffer()
	defer done()
	st := &NARFileStats{Deep: opts.Deep}
	if opts.Deep {
		st.decode(fr, opts.Compression, opts.NAR, buf)
	}
	// Whatever follows the compressed stream (all of it, when not deep)
	// still counts for the file. (io.Discard's own ReadFrom would read
	// in 8 KiB steps.)
	io.CopyBuffer(struct{ io.Writer }{io.Discard}, fr, buf)
	st.FileHash = storepath.Hash{Algo: algo, Digest: fr.h.Sum(nil)}
	st.FileSize = fr.n
	st.TooLong = fr.err == errTooLong
	if fr.err == errTooLong {
		return st, nil
	}
	return st, fr.err
}

// decode decompresses r to its end, hashing the NAR and passing it to nar.
func (st *NARFileStats) decode(r io.Reader, comp string, narW io.Writer, buf []byte) {
	dr, err := compression.NewReader(r, comp)
	if err != nil {
		st.DecodeErr = err
		return
	}
	defer dr.Close()
	hw := nar.NewHashWriter(io.Discard)
	var dst io.Writer = hw
	if narW != nil {
		dst = io.MultiWriter(hw, &stickyWriter{w: narW})
	}
	if _, err := io.CopyBuffer(dst, dr, buf); err != nil {
		st.DecodeErr = err
	}
	st.NarHash, st.NarSize = hw.Sum(), uint64(hw.Size())
}

// fileReader hashes and counts what it reads, copies it, and stops at a
// size limit. Its first error (r's, the copy's, errTooLong) is sticky.
type fileReader struct {
	r    io.Reader
	h    hash.Hash
	n    uint64
	copy io.Writer
	max  uint64
	err  error
}

func (f *fileReader) Read(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	if f.max > 0 && uint64(len(p)) > f.max+1-f.n {
		p = p[:f.max+1-f.n] // one byte past the limit tells
	}
	n, err := f.r.Read(p)
	f.n += uint64(n)
	f.h.Write(p[:n])
	if f.copy != nil && n > 0 {
		if _, werr := f.copy.Write(p[:n]); werr != nil {
			f.err = werr
			return n, werr
		}
	}
	switch {
	case f.max > 0 && f.n > f.max:
		f.err = errTooLong
		return n, f.err
	case err != nil && err != io.EOF:
		f.err = err
	}
	return n, err
}

// stickyWriter stops writing after its first error and hides it.
type stickyWriter struct {
	w   io.Writer
	err error
}

func (s *stickyWriter) Write(p []byte) (int, error) {
	if s.err == nil {
		_, s.err = s.w.Write(p)
	}
	return len(p), nil
}

// Mismatch describes how st differs from what ni says of the file (its
// size and hash and, when deep, its decompression and NAR), or returns ""
// when it does not. says names where ni's values come from in the
// description: "narinfo", "manifest". A file read without decompressing
// checks nothing when ni has no FileHash: that is a mismatch too.
func (st *NARFileStats) Mismatch(ni *narinfo.NarInfo, says string) string {
	if d := st.fileMismatch(ni, says); d != "" {
		return d
	}
	return st.narMismatch(ni, says)
}

func (st *NARFileStats) fileMismatch(ni *narinfo.NarInfo, says string) string {
	if st.TooLong {
		return fmt.Sprintf("longer than FileSize %d", ni.FileSize)
	}
	var d []string
	if ni.FileSize != 0 && st.FileSize != ni.FileSize {
		d = append(d, fmt.Sprintf("%d bytes, %s says FileSize %d", st.FileSize, says, ni.FileSize))
	}
	if !ni.FileHash.IsZero() && !st.FileHash.Equal(ni.FileHash) {
		d = append(d, fmt.Sprintf("file hash %s, %s says FileHash %s", st.FileHash, says, ni.FileHash))
	}
	return strings.Join(d, "; ")
}

func (st *NARFileStats) narMismatch(ni *narinfo.NarInfo, says string) string {
	switch {
	case !st.Deep && ni.FileHash.IsZero():
		return "no FileHash to check the file against"
	case !st.Deep:
		return ""
	case st.DecodeErr != nil:
		return fmt.Sprintf("decompress %s: %v", ni.Compression, st.DecodeErr)
	}
	var d []string
	if st.NarSize != ni.NarSize {
		d = append(d, fmt.Sprintf("NAR has %d bytes, %s says NarSize %d", st.NarSize, says, ni.NarSize))
	}
	if !st.NarHash.Equal(ni.NarHash) {
		d = append(d, fmt.Sprintf("NAR hash %s, %s says NarHash %s", st.NarHash, says, ni.NarHash))
	}
	return strings.Join(d, "; ")
}

// NARFileError is a NAR file that is not what its narinfo says, or that
// this build cannot decompress.
type NARFileError struct {
	URL  string
	Path storepath.Path
	// Problem says what is wrong, as Mismatch does; "" when Err says it.
	Problem string
	// Err is ErrCorrupt, or an error wrapping compression.ErrUnsupported.
	Err error
}

func (e *NARFileError) Error() string {
	if e.Problem == "" {
		return fmt.Sprintf("file %s of %s: %v", e.URL, e.Path, e.Err)
	}
	return fmt.Sprintf("file %s of %s: %s: %v", e.URL, e.Path, e.Problem, e.Err)
}

func (e *NARFileError) Unwrap() error { return e.Err }

// check is Mismatch as a *NARFileError wrapping ErrCorrupt, except that a
// compression this build cannot decompress is one wrapping
// compression.ErrUnsupported: the file may well be right.
func (st *NARFileStats) check(ni *narinfo.NarInfo) error {
	d := st.fileMismatch(ni, "narinfo")
	if d == "" && errors.Is(st.DecodeErr, compression.ErrUnsupported) {
		return &NARFileError{URL: ni.URL, Path: ni.StorePath, Err: st.DecodeErr}
	}
	if d == "" {
		d = st.narMismatch(ni, "narinfo")
	}
	if d != "" {
		return &NARFileError{URL: ni.URL, Path: ni.StorePath, Problem: d, Err: ErrCorrupt}
	}
	return nil
}

// checkOptions reads a file as deeply as Nix checks it on substitution.
func checkOptions(ni *narinfo.NarInfo) NARFileOptions {
	return NARFileOptions{Compression: ni.Compression, Deep: true, FileHash: ni.FileHash.Algo, MaxSize: ni.FileSize}
}

// CheckNAR reads a compressed NAR file to its end, checking FileSize and
// FileHash (when set) and, decompressing as it goes, NarSize and NarHash.
// A mismatch or undecodable data gives an error wrapping ErrCorrupt that
// names the file; a read error from compressed is returned as it is.
func CheckNAR(compressed io.Reader, ni *narinfo.NarInfo) error {
	st, err := ReadNARFile(compressed, checkOptions(ni))
	if err != nil {
		return readError(ni, err)
	}
	return st.check(ni)
}

// CopyVerified stores the compressed NAR file src reads verbatim in c, as
// AddFile does, while checking it as CheckNAR does; nar, if not nil, also
// receives the decompressed NAR. On any mismatch it returns an error
// wrapping ErrCorrupt and stores nothing. The returned File's URL is where
// c keeps it, which is the name Nix gives such a file; set ni.URL to it
// before PutNarInfo.
func (c *Cache) CopyVerified(ctx context.Context, src io.Reader, ni *narinfo.NarInfo, nar io.Writer) (File, error) {
	ext, err := compression.Ext(ni.Compression)
	if err != nil {
		return File{}, fmt.Errorf("copy %s of %s: %w", ni.URL, ni.StorePath, err)
	}
	return c.store(ctx, ext, func(w io.Writer) error {
		var werr error
		opts := checkOptions(ni)
		opts.NAR = nar
		opts.Copy = writerFunc(func(p []byte) (int, error) {
			n, err := w.Write(p)
			if err != nil {
				werr = err
			}
			return n, err
		})
		st, err := ReadNARFile(storage.ContextReader(ctx, src), opts)
		switch {
		case werr != nil:
			return werr
		case err != nil:
			return readError(ni, err)
		}
		return st.check(ni)
	})
}

// readError is a read error of ni's NAR file, which it names once: a
// storage file's own error names it too, so only its problem is kept.
func readError(ni *narinfo.NarInfo, err error) error {
	if pe, ok := err.(*fs.PathError); ok {
		err = pe.Err
	}
	return fmt.Errorf("read %s of %s: %w", ni.URL, ni.StorePath, err)
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
