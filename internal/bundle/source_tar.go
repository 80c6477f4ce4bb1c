package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/progress"
)

// tarSource is a bundle's tar form (docs/bundle-format.md §4), read once
// from start to end: a file, or a stream with no going back. The manifest
// comes last, so every file is measured before anything can be checked.
type tarSource struct {
	r io.Reader
	// name is the file's name, "" for standard input: what is wrong
	// before the first entry is said of it.
	name string
}

func (s *tarSource) absent() string { return "not in the stream" }

// files passes each regular file to r as it passes. Directories other than
// nar/ and log/, names that are not clean, and a name seen twice are
// problems; names starting with "." are skipped.
func (s *tarSource) files(ctx context.Context, r receiver) (ending, error) {
	tail := &zeroTail{r: cache.ContextReader(ctx, s.r)}
	if sk, ok := s.r.(io.Seeker); ok {
		tail.seeker = sk
	}
	tr := tar.NewReader(tail)
	seen := map[string]bool{}
	last := s.name
	if last == "" {
		last = "(start of stream)"
	}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			if len(seen) == 0 && tail.n == 0 {
				r.problem(last, KindCorrupt, "not a bundle: empty")
				return ending{cut: true, notTar: true}, nil
			}
			if tail.zeros < 2*512 {
				return ending{unterminated: last}, nil
			}
			return ending{}, nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return ending{}, ctx.Err()
			}
			if jerr := jsonNotBundle(tail.head); len(seen) == 0 && jerr != nil {
				// A cache inventory or a manifest.json on standard input
				// or through a pipe, which runOn cannot read ahead of
				// this: told by the first bytes, read for the first header.
				r.problem(last, KindCorrupt, "%v", jerr)
				return ending{cut: true, notTar: true}, nil
			}
			if len(seen) == 0 && errors.Is(err, tar.ErrHeader) {
				// Not a tar at all: a text file, a compressed tar.
				r.problem(last, KindCorrupt, "not a bundle: not a tar stream (no tar header at its start)")
				return ending{cut: true, notTar: true}, nil
			}
			if len(seen) == 0 && errors.Is(err, io.ErrUnexpectedEOF) && tail.n < 512 {
				if startsLikeTar(tail.head) {
					r.problem(last, KindCorrupt, "tar stream cut short inside its first header, after %d bytes", tail.n)
					return ending{cut: true}, nil
				}
				// Not even one tar header: a short text file.
				r.problem(last, KindCorrupt, "not a bundle: not a tar stream (%d bytes, less than one tar header)", tail.n)
				return ending{cut: true, notTar: true}, nil
			}
			r.problem(last, KindCorrupt, "tar stream cut short or damaged after this file: %v", err)
			return ending{cut: true}, nil
		}
		name := hdr.Name
		last = name
		switch {
		case hdr.Typeflag == tar.TypeDir:
			if d := strings.TrimSuffix(name, "/"); d != cache.NarDir && d != cache.LogDir {
				r.problem(name, KindUnexpected, "directory not allowed in a bundle")
			}
			continue
		case name != path.Clean(name) || path.IsAbs(name) || strings.HasPrefix(name, "../") || strings.HasPrefix(name, "./"):
			r.problem(name, KindUnexpected, "not a clean relative name")
			continue
		case strings.HasPrefix(path.Base(name), "."):
			continue
		case hdr.Typeflag == tar.TypeReg && seen[name]:
			r.problem(name, KindCorrupt, "appears twice in the stream")
			continue
		}
		f := &file{name: name, size: hdr.Size, open: func() (io.ReadCloser, error) { return io.NopCloser(tr), nil }}
		if hdr.Typeflag != tar.TypeReg {
			f.notRegular = fmt.Sprintf("tar type %q", hdr.Typeflag)
		}
		seen[name] = f.notRegular == ""
		err = r.file(f)
		if re := (*readError)(nil); errors.As(err, &re) {
			if ctx.Err() != nil {
				return ending{}, ctx.Err()
			}
			r.problem(name, KindCorrupt, "tar stream cut short in this file: %v", re.err)
			return ending{cut: true}, nil
		}
		if err != nil {
			return ending{}, err
		}
	}
}

// tarFileSource is a bundle's tar form given as a whole file, its headers
// scanned first (seeking over the data) for the manifest, which comes
// last: the checker then reads and trusts the manifest first, as in a
// directory, and so knows before reading each NAR file whether a path
// needs its flat hashes (four hashes of the whole file otherwise), checks
// narinfos as they pass, and reads nothing of a bundle it does not trust.
// The files are then read as a stream's are, once from start to end.
type tarFileSource struct {
	tarSource
	data, sig []byte
}

func (s *tarFileSource) open(name string) (io.ReadCloser, error) {
	switch {
	case name == ManifestName:
		// Read once, first: the checker keeps what it needs of it.
		data := s.data
		s.data = nil
		return io.NopCloser(bytes.NewReader(data)), nil
	case name == SigName && s.sig != nil:
		return io.NopCloser(bytes.NewReader(s.sig)), nil
	}
	return nil, fs.ErrNotExist
}

// ReadTar reads a bundle's tar form from r in one pass and calls fn with
// each regular file's name and content as it passes; what fn does not
// read is skipped (by seeking, when r can). A stream cut short, and an
// entry no bundle has, are errors naming the file; so is fn's error. A
// stream that ends after the manifest or its signature without tar's
// end-of-archive marker is whole.
// Nothing is checked against the manifest: Verify does that.
func ReadTar(ctx context.Context, r io.Reader, fn func(name string, r io.Reader) error) error {
	w := &tarWalker{fn: fn}
	end, err := (&tarSource{r: r}).files(ctx, w)
	switch {
	case err != nil:
		return err
	case w.err != nil:
		return w.err
	case end.cut:
		return errors.New("tar stream cut short")
	case end.unterminated != "" && end.unterminated != SigName && end.unterminated != ManifestName:
		// Without the end-of-archive marker after what comes last, a
		// stream is whole all the same (docs/bundle-format.md §4).
		return fmt.Errorf("tar stream cut short: it ends after %s without tar's end-of-archive marker", end.unterminated)
	}
	return nil
}

// tarWalker is ReadTar's receiver: the first problem is its error.
type tarWalker struct {
	fn  func(name string, r io.Reader) error
	err error
}

func (w *tarWalker) file(f *file) error {
	if f.notRegular != "" {
		w.problem(f.name, KindUnexpected, "not a regular file (%s)", f.notRegular)
		return nil
	}
	rc, _ := f.open()
	return w.fn(f.name, rc)
}

func (w *tarWalker) problem(name string, kind Kind, format string, args ...any) {
	if w.err == nil {
		w.err = fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...))
	}
}

// zeroTail counts the zero bytes at the end of what it has read: tar's
// end-of-archive marker is two zero blocks. It seeks when its reader can,
// so that archive/tar skips what no one reads.
type zeroTail struct {
	r      io.Reader
	seeker io.Seeker
	zeros  int
	n      int64  // bytes read, not counting what was sought over
	head   []byte // the first bytes read, up to a tar header's size
}

func (z *zeroTail) Read(p []byte) (int, error) {
	n, err := z.r.Read(p)
	z.n += int64(n)
	if len(z.head) < 512 {
		z.head = append(z.head, p[:min(n, 512-len(z.head))]...)
	}
	i := n
	for i > 0 && p[i-1] == 0 {
		i--
	}
	if i > 0 {
		z.zeros = 0
	}
	z.zeros += n - i
	return n, err
}

func (z *zeroTail) Seek(offset int64, whence int) (int64, error) {
	if z.seeker == nil {
		return 0, errors.ErrUnsupported
	}
	if offset != 0 || whence != io.SeekCurrent {
		z.zeros = 0 // what was skipped is unknown
	}
	return z.seeker.Seek(offset, whence)
}

// startsLikeTar reports whether b, less than a tar header, begins as a
// header's name field does: a name of printable characters ended by NULs
// to the field's end (100 bytes). A bundle's tar cut inside its first
// header does; a short text file does not.
func startsLikeTar(b []byte) bool {
	name, pad, ended := bytes.Cut(b[:min(len(b), 100)], []byte{0})
	if !ended || len(name) == 0 || bytes.ContainsFunc(name, func(r rune) bool { return r <= ' ' || r > '~' }) {
		return false
	}
	return len(bytes.Trim(pad, "\x00")) == 0
}

// scanTar scans the tar file f as scanVolume does, and seeks it back to
// its start.
func scanTar(name string, f *os.File) (*volumeFile, error) {
	v := &volumeFile{path: name, f: f, entries: map[string]tarEntry{}, index: -1}
	// Nothing but archive/tar reads or seeks f meanwhile, so f's offset
	// is where it is in the tar.
	tail := &zeroTail{r: f, seeker: f}
	tr := tar.NewReader(tail)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			v.ended = tail.zeros >= 2*512
			break
		}
		if err != nil {
			v.cut = fmt.Sprintf("the tar is damaged or cut short after %s: %v", progress.Plural(len(v.order), "file"), err)
			v.noTar = len(v.order) == 0
			break
		}
		off, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			return nil, err
		}
		e := tarEntry{off: off, size: hdr.Size, regular: hdr.Typeflag == tar.TypeReg}
		if _, dup := v.entries[hdr.Name]; dup {
			v.cut = fmt.Sprintf("%s appears twice", hdr.Name)
			break
		}
		v.entries[hdr.Name] = e
		v.order = append(v.order, hdr.Name)
		switch hdr.Name {
		case ManifestName:
			v.data, err = io.ReadAll(io.LimitReader(tr, MaxManifestSize+1))
		case SigName:
			v.sig, err = io.ReadAll(io.LimitReader(tr, MaxSigSize+1))
		}
		if err != nil {
			v.data, v.sig = nil, nil
			v.cut = fmt.Sprintf("the tar is cut short in %s: %v", hdr.Name, err)
			break
		}
	}
	if v.cut == "" && v.data == nil {
		v.cut = fmt.Sprintf("it ends without %s, which comes last in every volume: cut short", ManifestName)
	}
	read, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, err
	}
	v.noTar = v.noTar || read == 0
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, err
	}
	v.size = size
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return v, nil
}
