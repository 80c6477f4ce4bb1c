package bundle

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// TarPrefix is the start of a tar a killed pack left that a new pack
// keeps: nix-cache-info, then NAR files and narinfos, each checked.
// ScanTar finds it; ResumeTarWriter writes on after it.
type TarPrefix struct {
	size int64
	// kept are its paths' manifest entries without roles, origin and
	// fetch, which the new pack's Reuse gives: by hash part.
	kept map[string]PathEntry
	// written are its NAR files.
	written map[string]bool
}

// Size is how many bytes of the tar are kept.
func (t *TarPrefix) Size() int64 {
	if t == nil {
		return 0
	}
	return t.size
}

// Paths is how many paths it holds.
func (t *TarPrefix) Paths() int {
	if t == nil {
		return 0
	}
	return len(t.kept)
}

// ScanTar reads the tar file f that a killed pack left from its start and
// keeps what a new pack for storeDir with opts can write on from: every
// entry up to the first that is cut short or unreadable, is no NAR file or
// narinfo (the registry, logs and the manifest come only at the end), is
// a narinfo whose NAR file is not right before it (or, shared, earlier),
// is a NAR file that does not verify deeply against its narinfo, is a
// narinfo not signed by opts.Key (when set), or is for a path want
// refuses. want reports whether the new bundle holds p and, if so,
// whether p is a flat fixed output. It truncates f after the last kept
// narinfo (to nothing, when nix-cache-info is for another store) and
// leaves f's offset there. What it cut is no error: only f's own I/O
// failures are. prog, if not nil, hears the read as phase PhaseResume:
// a tar of tens of GB takes a while to decompress and hash.
func ScanTar(ctx context.Context, f *os.File, storeDir storepath.Dir, opts WriterOptions, want func(p storepath.Path) (flat, ok bool), prog Progress) (*TarPrefix, error) {
	fi, err := f.Stat()
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		return nil, fmt.Errorf("resume bundle %s: %w", f.Name(), err)
	}
	var in io.Reader = f
	if prog != nil {
		prog.Phase(PhaseResume, 0, fi.Size())
		in = ProgressReader{f, prog}
	}
	s := &tarScan{
		storeDir: storeDir, want: want, byURL: map[string]string{},
		prefix: &TarPrefix{kept: map[string]PathEntry{}, written: map[string]bool{}},
		in:     &countReader{r: bufio.NewReaderSize(in, 256<<10)},
	}
	if opts.Key != nil {
		s.key = signing.NewKeyring(opts.Key.Public())
	}
	why := s.scan(ctx)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p := s.prefix
	if p.size == 0 {
		p.kept, p.written = map[string]PathEntry{}, map[string]bool{}
	}
	log := opts.Log
	if log != nil {
		log.Info("resuming the tar a killed pack left", "file", f.Name(), "paths", len(p.kept), "bytes", p.size, "stop", why)
	}
	if err := f.Truncate(p.size); err != nil {
		return nil, fmt.Errorf("resume bundle %s: %w", f.Name(), err)
	}
	if _, err := f.Seek(p.size, io.SeekStart); err != nil {
		return nil, fmt.Errorf("resume bundle %s: %w", f.Name(), err)
	}
	return p, nil
}

// PhaseResume is ScanTar's phase: reading the tar a killed pack left.
const PhaseResume = "resume"

// tarScan is ScanTar's state.
type tarScan struct {
	storeDir storepath.Dir
	want     func(storepath.Path) (bool, bool)
	key      *signing.Keyring
	in       *countReader
	prefix   *TarPrefix
	// byURL maps each kept NAR file to the first path it holds.
	byURL map[string]string
	// pending is the NAR file read last, which its narinfo must follow.
	pending   string
	pendingSt *narStats
}

// scan reads entries until one is not kept, and says why.
func (s *tarScan) scan(ctx context.Context) string {
	tr := tar.NewReader(s.in)
	for i := 0; ; i++ {
		if ctx.Err() != nil {
			return "interrupted"
		}
		hdr, err := tr.Next()
		if err != nil {
			return fmt.Sprintf("entry %d: %v", i, err)
		}
		if hdr.Typeflag != tar.TypeReg {
			return fmt.Sprintf("%s: not a regular file", hdr.Name)
		}
		var why string
		switch _, isNarInfo := cache.NarInfoHashPart(hdr.Name); {
		case i == 0:
			why = s.cacheInfo(tr, hdr)
		case isNarInfo:
			why = s.narInfo(tr, hdr)
		case checkURL(hdr.Name) == nil:
			why = s.narFile(tr, hdr)
		default:
			why = "neither a NAR file nor a narinfo"
		}
		if why != "" {
			return hdr.Name + ": " + why
		}
	}
}

// entryEnd is where the entry just read ends: tar pads it to a block.
func (s *tarScan) entryEnd() int64 {
	return (s.in.n + 511) &^ 511
}

func (s *tarScan) cacheInfo(tr *tar.Reader, hdr *tar.Header) string {
	if hdr.Name != CacheInfo {
		return "not " + CacheInfo
	}
	data, why := readEntry(tr, hdr, maxCacheInfo)
	if why != "" {
		return why
	}
	info, err := cache.ParseCacheInfo(bytes.NewReader(data))
	if err != nil {
		return err.Error()
	}
	if info.StoreDir != s.storeDir {
		return fmt.Sprintf("for store %s, not %s", info.StoreDir, s.storeDir)
	}
	s.prefix.size = s.entryEnd()
	return ""
}

func (s *tarScan) narFile(tr *tar.Reader, hdr *tar.Header) string {
	comp := compressionOf(hdr.Name)
	switch {
	case s.pending != "":
		return "a second NAR file before a narinfo"
	case s.byURL[hdr.Name] != "":
		return "a second time"
	case comp == "":
		return "not a NAR file"
	}
	// Flat or not is known once the narinfo comes: hashing the file of
	// a NAR that is not flat stops at its start.
	st, err := checkNARStream(tr, comp, true, true, nil)
	if err != nil {
		return err.Error()
	}
	s.pending, s.pendingSt = hdr.Name, st
	return ""
}

func (s *tarScan) narInfo(tr *tar.Reader, hdr *tar.Header) string {
	data, why := readEntry(tr, hdr, narinfo.MaxSize)
	if why != "" {
		return why
	}
	ni, err := narinfo.Parse(bytes.NewReader(data), s.storeDir)
	if err != nil {
		return err.Error()
	}
	p := ni.StorePath
	h, _ := cache.NarInfoHashPart(hdr.Name)
	flat, wanted := s.want(p)
	switch {
	case p.Hash != h:
		return "describes " + p.String()
	case !wanted:
		return p.String() + " is not in the new bundle"
	case s.prefix.kept[h].URL != "":
		return "a second time"
	case s.key != nil && !ni.Verify(s.key):
		return "not signed by the writer's key"
	case checkURL(ni.URL) != nil:
		return checkURL(ni.URL).Error()
	case ni.FileHash.IsZero() || ni.FileSize == 0:
		// The signature does not cover them: a writer always sets them.
		return "no FileHash or FileSize"
	}
	e := PathEntry{
		Path: p, NarHash: ni.NarHash, NarSize: ni.NarSize,
		URL: ni.URL, FileHash: ni.FileHash, FileSize: ni.FileSize, Compression: ni.Compression,
		References: sortedRefs(ni.References), Deriver: ni.Deriver, CA: ni.CA,
	}
	if first, ok := s.byURL[ni.URL]; ok && s.pending == "" {
		// A NAR file two paths share: it is the first one's.
		fe := s.prefix.kept[first]
		if ni.Compression != fe.Compression || ni.FileSize != fe.FileSize || !ni.FileHash.Equal(fe.FileHash) ||
			ni.NarSize != fe.NarSize || !ni.NarHash.Equal(fe.NarHash) {
			return "differs from the narinfo of " + fe.Path.String() + ", which shares its NAR file"
		}
		if flat && fe.Flat == nil {
			return "a flat path whose NAR is not one regular file"
		}
		e.Flat = fe.Flat
	} else {
		if ni.URL != s.pending {
			return ni.URL + " is not the NAR file before it"
		}
		st := s.pendingSt
		if ni.Compression != compressionOf(ni.URL) {
			return fmt.Sprintf("Compression %s, the file name says %s", ni.Compression, compressionOf(ni.URL))
		}
		if d := st.Mismatch(ni, "narinfo"); d != "" {
			return d
		}
		if flat && st.flat == nil {
			return "a flat path whose NAR is not one regular file"
		}
		// Kept even when p is not flat, for a flat path that shares the
		// file; Reuse drops them when not.
		e.Flat = st.flat
		s.pending, s.pendingSt = "", nil
		s.byURL[ni.URL] = h
		s.prefix.written[ni.URL] = true
	}
	s.prefix.kept[h] = e
	s.prefix.size = s.entryEnd()
	return ""
}

// readEntry reads a small entry whole.
func readEntry(tr *tar.Reader, hdr *tar.Header, max int64) ([]byte, string) {
	if hdr.Size > max {
		return nil, fmt.Sprintf("larger than %d bytes", max)
	}
	data := make([]byte, hdr.Size)
	if _, err := io.ReadFull(tr, data); err != nil {
		return nil, err.Error()
	}
	return data, ""
}

// ResumeTarWriter is NewTarWriter for w, which goes on after prefix: the
// start of a tar file ScanTar kept, for the same store and options. Reuse
// adopts each of prefix's paths without writing it again; each must be
// adopted before Close. prefix is the writer's from then. An empty prefix
// starts the tar.
func ResumeTarWriter(w io.Writer, prefix *TarPrefix, storeDir storepath.Dir, opts WriterOptions) (*Writer, error) {
	if prefix.Size() == 0 {
		return NewTarWriter(w, storeDir, opts)
	}
	wr, err := newTarWriter(w, storeDir, opts)
	if err != nil {
		return nil, err
	}
	wr.kept, wr.written = prefix.kept, prefix.written
	return wr, nil
}

// reuseTar adopts p from the kept prefix of a resumed tar, where it is
// written already.
func (w *Writer) reuseTar(p storepath.Path, meta PathMeta) (bool, error) {
	if err := w.checkPath(p); err != nil {
		return false, err
	}
	w.mu.Lock()
	e, ok := w.kept[p.Hash]
	delete(w.kept, p.Hash)
	w.mu.Unlock()
	switch {
	case !ok:
		return false, nil
	case meta.Roles == 0:
		return false, fmt.Errorf("add %s to bundle: no roles", p)
	case meta.Flat && e.Flat == nil:
		return false, fmt.Errorf("add %s to bundle: flat, but the resumed tar did not keep it as flat", p)
	}
	if !meta.Flat {
		e.Flat = nil
	}
	e.Roles, e.Origin, e.Fetch = meta.Roles, meta.Origin, meta.Fetch
	w.addEntry(e)
	return true, nil
}

// errNotAdopted reports paths a resumed tar holds that the manifest would
// miss.
var errNotAdopted = errors.New("paths the resumed tar holds were not added again")

// checkAdopted fails when a path of the resumed tar was not adopted.
func (w *Writer) checkAdopted() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n := len(w.kept); n > 0 {
		return fmt.Errorf("close bundle: %d %w", n, errNotAdopted)
	}
	return nil
}
