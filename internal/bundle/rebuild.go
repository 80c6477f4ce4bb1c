package bundle

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/nardelta"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// The delta stage, between the source and the checker: a binary delta's
// file (docs/bundle-format.md §10) is turned back into the NAR it stands
// for before the checker measures it, so that the NAR is checked as any
// other (NarHash, NarSize, flat hashes against the signed manifest) and
// the sink gets it compressed as the manifest says, to be published as an
// ordinary NAR file: the cache stays a plain binary cache.
//
//	source ──delta file──▶ rebuild ──NAR──▶ checker ──▶ sink
//	                          ▲
//	              base NAR from the cache (Against)
//
// The base is read from the caches the bundle is checked against (the
// cache an import goes into), checked against its narinfo and the delta's
// own record of it, and spooled, rewritten, into a temp file; a base that
// is missing or damaged is a problem naming both paths, and the bundle is
// refused. A stream brings its manifest last: its delta files are spooled
// as they pass and rebuilt once the manifest is trusted, so that nothing
// is rebuilt from untrusted input.

// rebuiltFile is a rebuilt NAR, compressed and staged in the sink.
type rebuiltFile struct {
	staged string // its name in the sink
	url    string // its name in the cache
	hash   storepath.Hash
	size   uint64
}

// delta reads a delta file as the delta stage does: rebuilt when deep and
// the manifest is known, kept for later when it is not, else only hashed
// as any file.
func (c *checker) delta(f *file) error {
	entries := c.urls[f.name]
	r, err := f.open()
	if err != nil {
		c.problem(f.name, KindCorrupt, "%v", err)
		c.record(f.name, &measured{bad: true})
		return nil
	}
	defer r.Close()
	in := cache.ContextReader(c.ctx, r)
	if c.countFiles {
		in = ProgressReader{in, c.opts.Progress}
	}
	var sw *stageWriter
	if c.sink != nil && entries != nil && len(c.manifest.Volumes) > 0 {
		// A volume import keeps the delta file itself for a path that
		// waits for other volumes (keepWaiting), to rebuild it then.
		stage, err := c.sink.create(f.name)
		if err != nil {
			return fmt.Errorf("%w: %w", errStage, err)
		}
		sw = &stageWriter{w: stage}
		in = io.TeeReader(in, sw)
	}
	var m *measured
	switch {
	case entries == nil && c.rebuilds():
		m, err = c.keepDelta(f.name, in)
	case entries == nil || !c.rebuilds():
		var st *narStats
		st, err = checkNARStream(in, "", false, false, nil)
		m = &measured{nar: st}
	case c.waits(entries):
		m, err = c.waitingDelta(in, entries)
	default:
		m, err = c.rebuild(in, entries)
	}
	if sw != nil {
		if serr := sw.close(); err == nil {
			err = serr
		}
	}
	if err != nil {
		if errors.Is(err, errStage) || c.ctx.Err() != nil {
			return err
		}
		c.record(f.name, &measured{bad: true})
		return &readError{err}
	}
	if m.nar != nil {
		c.addBytes(int64(m.nar.FileSize))
		c.opts.Progress.Step(f.name, "", 0)
	}
	c.record(f.name, m)
	return nil
}

// pendingFiles notes, for a volume import, the files the volumes given
// and kept leave pending, so that the paths that wait for them are known
// before any file is read (holdBack): a delta file of such a path is
// kept as it is, and rebuilt only by the run that publishes the path.
// verify rebuilds every delta it can: that is its check.
func (c *checker) pendingFiles(pending map[string]bool) {
	if c.sink == nil {
		return
	}
	c.pending = pending
	c.holdBack()
}

// waits reports whether every path a delta file stands for waits for
// other volumes.
func (c *checker) waits(entries []*PathEntry) bool {
	return !slices.ContainsFunc(entries, func(e *PathEntry) bool { return !c.held[e.Path.Hash] })
}

// waitingDelta hashes the delta file of a path that waits for other
// volumes, which the import keeps (keepWaiting), and checks that its base
// is in the cache: a missing base refuses the run now, not on the last
// volume. The run that publishes the path rebuilds it.
func (c *checker) waitingDelta(r io.Reader, entries []*PathEntry) (*measured, error) {
	e := entries[0]
	if c.holds(entries) {
		st, err := checkNARStream(r, "", false, false, nil)
		return &measured{nar: st, inCache: true}, err
	}
	if src, _, kind, problem := c.findBase(e); problem != "" || src == nil {
		if problem != "" {
			c.problem(e.URL, kind, "%s: %s", e.Path, problem)
		}
		_, err := io.Copy(io.Discard, r)
		return &measured{bad: true}, err
	}
	st, err := checkNARStream(r, "", false, false, nil)
	return &measured{nar: st}, err
}

// rebuilds reports whether delta files are rebuilt: when deep, with a
// cache to find their bases in (import's, or verify's --against).
func (c *checker) rebuilds() bool {
	return c.opts.Deep && (len(c.opts.Against) > 0 || c.opts.into != nil)
}

// warnUnrebuilt says, when deep, that deltas were not rebuilt for want of
// a cache.
func (c *checker) warnUnrebuilt() {
	if !c.opts.Deep || c.rebuilds() {
		return
	}
	n := 0
	for i := range c.manifest.Paths {
		if c.manifest.Paths[i].Delta != nil {
			n++
		}
	}
	switch {
	case n == 1:
		c.warn("1 path travels as a binary delta: its file was checked, not the NAR it makes, which import rebuilds and checks (as does verify --deep --against a cache that holds its base)")
	case n > 1:
		c.warn("%d paths travel as binary deltas: their files were checked, not the NARs they make, which import rebuilds and checks (as does verify --deep --against a cache that holds their bases)", n)
	}
}

// warnDeltaBases says, with no cache to find them in (import's, or
// verify's --against), that import needs the bases of the bundle's
// binary deltas that it does not carry, as a delta's references outside
// it are said: one line, however many.
func (c *checker) warnDeltaBases() {
	if len(c.opts.Against) > 0 || c.opts.into != nil {
		return
	}
	carried := make(map[string]bool, len(c.manifest.Paths))
	for i := range c.manifest.Paths {
		carried[c.manifest.Paths[i].Path.Hash] = true
	}
	var bases []storepath.Path
	for i := range c.manifest.Paths {
		if d := c.manifest.Paths[i].Delta; d != nil && !carried[d.Base.Hash] {
			carried[d.Base.Hash] = true // counted once
			bases = append(bases, d.Base)
		}
	}
	c.report.DeltaBases = len(bases)
	switch {
	case len(bases) == 1:
		c.warn("%s: the base of a binary delta, not in this bundle; the cache it is imported into must have it (checked on import, or now by verify --against CACHE)", bases[0].Base())
	case len(bases) > 1:
		c.warn("%d store paths, such as %s: the bases of binary deltas, not in this bundle; the cache it is imported into must have them (checked on import, or now by verify --against CACHE)", len(bases), bases[0].Base())
	}
}

// keepDelta spools a delta file a stream brings before its manifest, and
// hashes it.
func (c *checker) keepDelta(name string, r io.Reader) (*measured, error) {
	tmp, err := os.CreateTemp(c.opts.TempDir, ".delta-*")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errStage, err)
	}
	c.mu.Lock()
	c.kept[name] = tmp.Name()
	c.mu.Unlock()
	st, err := checkNARStream(r, "", false, false, tmp) // closes tmp
	return &measured{nar: st, kept: true}, err
}

// rebuildKept rebuilds the delta files a stream brought, now that its
// manifest is trusted.
func (c *checker) rebuildKept() {
	for name, tmp := range c.kept {
		m, ok := c.seen[name]
		entries := c.urls[name]
		if !ok || m.bad || entries == nil {
			continue
		}
		f, err := os.Open(tmp)
		if err != nil {
			c.problem(name, KindCorrupt, "reopen the kept delta: %v", err)
			m.bad = true
			continue
		}
		nm, err := c.rebuild(f, entries)
		f.Close()
		if err != nil {
			c.problem(name, KindCorrupt, "%v", err)
			m.bad = true
			continue
		}
		c.seen[name] = nm
	}
}

// removeKept removes the spooled delta files.
func (c *checker) removeKept() {
	for _, tmp := range c.kept {
		os.Remove(tmp)
	}
}

// rebuild reads a delta file and rebuilds the NAR it stands for against
// its base, hashing the file as it goes, and hands the NAR, compressed as
// the manifest says, to the sink. Problems with the delta or its base are
// reported here, naming the path and its base, and the measurement is
// marked bad; the error is a read error or the sink's.
func (c *checker) rebuild(r io.Reader, entries []*PathEntry) (*measured, error) {
	e := entries[0]
	if c.holds(entries) {
		// Nothing to rebuild, so no base needed: the file is checked
		// against the manifest as any other.
		st, err := checkNARStream(r, "", false, false, nil)
		c.mu.Lock()
		c.report.InCache++
		c.mu.Unlock()
		return &measured{nar: st, inCache: true}, err
	}
	fr := &hashReader{r: r, h: sha256.New()}
	bad := func(kind Kind, format string, args ...any) (*measured, error) {
		c.problem(e.URL, kind, "%s: %s", e.Path, fmt.Sprintf(format, args...))
		// Read to the end: a volume's pieces are checked as they pass,
		// and a damaged one is named by its volume.
		_, err := io.Copy(io.Discard, fr)
		return &measured{bad: true}, err
	}
	for _, o := range entries[1:] {
		if o.Delta == nil || o.Delta.Base != e.Delta.Base {
			return bad(KindCorrupt, "the delta file is also %s's, against another base", o.Path)
		}
	}
	dr, err := nardelta.NewReader(fr)
	if err != nil {
		if fr.err != nil {
			return nil, fr.err
		}
		return bad(KindCorrupt, "%v", err)
	}
	defer dr.Close()
	if d := checkDeltaHeader(dr.Header(), e); d != "" {
		return bad(KindCorrupt, "the delta %s", d)
	}
	base, kind, problem := c.openBase(e, dr.Header().Rewrites)
	switch {
	case problem != "":
		return bad(kind, "%s", problem)
	case base == nil: // the store stopped answering: no problem of the path
		_, err := io.Copy(io.Discard, fr)
		return &measured{bad: true}, err
	}
	defer base.remove()

	// Rebuild hashes the NAR and fails unless it is the delta's, which
	// is the manifest's: no second hash here.
	n := &nar.CountingWriter{W: io.Discard}
	outs := []io.Writer{n}
	var fh *flatHasher
	if e.Flat != nil {
		fh = newFlatHasher()
		outs = append(outs, fh)
	}
	var st *stagedNAR
	if c.sink != nil {
		if st, err = c.stageRebuilt(e); err != nil {
			return nil, err
		}
		defer st.abort()
		outs = append(outs, st)
	}
	rerr := dr.Rebuild(io.MultiWriter(outs...), base.Base)
	switch {
	case fr.err != nil:
		return nil, fr.err
	case errors.Is(rerr, errStage):
		return nil, rerr
	case rerr != nil:
		return bad(KindCorrupt, "rebuild against %s: %v", e.Delta.Base, rerr)
	}
	if _, err := io.Copy(io.Discard, fr); err != nil {
		return nil, err
	}
	stats := &narStats{NARFileStats: &cache.NARFileStats{
		FileHash: storepath.Hash{Algo: storepath.SHA256, Digest: fr.h.Sum(nil)}, FileSize: fr.n,
		Deep: true, NarHash: dr.Header().NarHash, NarSize: uint64(n.N),
	}}
	if fh != nil {
		stats.flat, _ = fh.finish()
	}
	m := &measured{nar: stats}
	if st != nil {
		if m.rebuilt, err = st.finish(); err != nil {
			return nil, err
		}
	}
	c.mu.Lock()
	c.report.Rebuilt++
	c.mu.Unlock()
	return m, nil
}

// holds reports whether a cache the bundle is checked against holds the
// paths a delta file stands for whole, as the delta makes them: then the
// delta needs no base, which gc may have removed. For a repair the cache's
// copy must also be trusted and intact, or the delta is rebuilt to
// replace it.
func (c *checker) holds(entries []*PathEntry) bool {
	for _, e := range entries {
		if !slices.ContainsFunc(c.opts.Against, func(src cache.Source) bool { return c.sourceHolds(src, e) }) {
			return false
		}
	}
	return true
}

func (c *checker) sourceHolds(src cache.Source, e *PathEntry) bool {
	ni, err := src.NarInfo(c.ctx, e.Path.Hash)
	if err != nil || ni.StorePath != e.Path || !ni.NarHash.Equal(e.NarHash) || ni.NarSize != e.NarSize {
		return false
	}
	if !c.opts.repair {
		return true
	}
	if !c.opts.AllowUnsigned && !ni.Verify(c.opts.Keys) && !ni.IsContentAddressed() {
		return false
	}
	return checkCacheFile(c.ctx, src, ni, nopProgress{}) == nil
}

// spooledBase is a base NAR spooled into a temp file.
type spooledBase struct {
	*nardelta.Base
	f *os.File
}

func (b *spooledBase) remove() {
	b.f.Close()
	os.Remove(b.f.Name())
}

// openBase finds e's base in the caches the bundle is checked against and
// spools it, rewritten, or says why it cannot, naming both paths: the
// base is missing, or its NAR in the cache is damaged (corrupt). It
// returns no base and no problem if the store stopped answering
// (storeDown).
func (c *checker) openBase(e *PathEntry, rws []nardelta.Rewrite) (*spooledBase, Kind, string) {
	src, ni, kind, problem := c.findBase(e)
	if problem != "" || src == nil {
		return nil, kind, problem
	}
	b, err := c.spoolBase(src, ni, rws)
	if c.storeDown(err) {
		return nil, 0, ""
	}
	if err != nil {
		return nil, KindCorrupt, fmt.Sprintf("its delta is against %s, whose NAR in the cache is damaged (%v); repair the cache, or import a bundle that carries %s whole", e.Delta.Base, err, e.Path)
	}
	return b, 0, ""
}

// findBase finds the narinfo of e's base in the caches the bundle is
// checked against, or says why it cannot, naming both paths. A narinfo
// it cannot read is not a missing base; one a store that stopped
// answering did not give is no problem of e's either, but the run's
// (storeDown): then it returns no source and no problem.
func (c *checker) findBase(e *PathEntry) (cache.Source, *narinfo.NarInfo, Kind, string) {
	d := e.Delta
	var failed error
	for _, src := range c.opts.Against {
		ni, err := src.NarInfo(c.ctx, d.Base.Hash)
		if err != nil && !errors.Is(err, cache.ErrNotFound) && failed == nil {
			failed = err
		}
		if err != nil || ni.StorePath != d.Base {
			continue
		}
		if !ni.NarHash.Equal(d.BaseNarHash) || ni.NarSize != d.BaseNarSize {
			return nil, nil, KindMissing, fmt.Sprintf("its delta is against %s with NarHash %s, but the cache holds it with NarHash %s: another build of it; import a bundle that carries %s whole", d.Base, d.BaseNarHash, ni.NarHash, e.Path)
		}
		return src, ni, 0, ""
	}
	if c.storeDown(failed) {
		return nil, nil, 0, ""
	}
	if failed != nil {
		return nil, nil, readKind(failed, KindCorrupt), fmt.Sprintf("its delta is against %s, which cannot be read from the cache: %v", d.Base, failed)
	}
	// pack makes deltas only against paths its --since bases hold: a
	// base bundle not yet imported (a week skipped) is the usual cause,
	// and importing it the fix.
	var from []string
	for _, b := range c.manifest.Bases {
		if b.Kind != BaseInventory {
			from = append(from, describeBase(b))
		}
	}
	if len(from) > 0 {
		return nil, nil, KindMissing, fmt.Sprintf("its delta is against %s, which is not in the cache; it came with base %s or a bundle before it: import that first (or, if gc removed it, a bundle that carries %s whole)", d.Base, strings.Join(from, " or "), e.Path)
	}
	return nil, nil, KindMissing, fmt.Sprintf("its delta is against %s, which is not in the cache (never imported, or garbage-collected); import a bundle that carries %s whole", d.Base, e.Path)
}

// spoolBase decompresses a base NAR into a temp file, rewriting it, and
// checks it against its narinfo.
func (c *checker) spoolBase(src cache.Source, ni *narinfo.NarInfo, rws []nardelta.Rewrite) (*spooledBase, error) {
	rc, err := src.Open(c.ctx, ni.URL)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	dr, err := compression.NewReader(cache.ContextReader(c.ctx, rc), ni.Compression)
	if err != nil {
		return nil, err
	}
	defer dr.Close()
	f, err := os.CreateTemp(c.opts.TempDir, ".base-*")
	if err != nil {
		return nil, err
	}
	b := &spooledBase{f: f}
	if b.Base, err = nardelta.NewBase(f, dr, rws); err != nil {
		b.remove()
		return nil, err
	}
	if !b.NarHash().Equal(ni.NarHash) || b.NarSize() != ni.NarSize {
		b.remove()
		return nil, fmt.Errorf("file %s holds a NAR with hash %s and size %d, its narinfo says %s and %d", ni.URL, b.NarHash(), b.NarSize(), ni.NarHash, ni.NarSize)
	}
	return b, nil
}

// stagedNAR compresses a rebuilt NAR into the sink, hashing the file.
type stagedNAR struct {
	e      *PathEntry
	name   string
	sw     *stageWriter
	cw     io.WriteCloser
	h      hash.Hash
	n      uint64
	closed bool
}

func (c *checker) stageRebuilt(e *PathEntry) (*stagedNAR, error) {
	name := path.Join(rebuiltDir, e.Path.Hash)
	w, err := c.sink.create(name)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errStage, err)
	}
	if w == nil {
		return nil, fmt.Errorf("%w: %s: the sink took nothing", errStage, name)
	}
	st := &stagedNAR{e: e, name: name, sw: &stageWriter{w: w}, h: sha256.New()}
	st.cw, err = compression.NewWriter(writerFunc(st.writeFile), e.Compression, rebuiltWriterOptions(e))
	if err != nil {
		st.sw.close()
		return nil, fmt.Errorf("%w: %w", errStage, err)
	}
	return st, nil
}

// rebuiltZstdLevel is the zstd level rebuilt NARs are stored at: the
// fastest, which costs three quarters of the CPU of the default level
// that pack uses, for a tenth more bytes (docs/design.md); recompressing
// is most of what import spends on a delta. Any level is a NAR file Nix
// reads; the manifest names the compression, not its level.
const rebuiltZstdLevel = 1

func rebuiltWriterOptions(e *PathEntry) compression.WriterOptions {
	opts := compression.WriterOptions{SizeHint: int64(e.NarSize)}
	if e.Compression == compression.Zstd {
		opts.Level = rebuiltZstdLevel
	}
	return opts
}

func (s *stagedNAR) Write(p []byte) (int, error) { return s.cw.Write(p) }

func (s *stagedNAR) writeFile(p []byte) (int, error) {
	s.h.Write(p)
	s.n += uint64(len(p))
	return s.sw.Write(p)
}

// finish closes the compressed file and says where it goes in the cache.
func (s *stagedNAR) finish() (rebuiltFile, error) {
	s.closed = true
	err := s.cw.Close()
	if serr := s.sw.close(); err == nil {
		err = serr
	}
	if err != nil {
		return rebuiltFile{}, fmt.Errorf("%w: %w", errStage, err)
	}
	ext, _ := compression.Ext(s.e.Compression)
	sum := storepath.Hash{Algo: storepath.SHA256, Digest: s.h.Sum(nil)}
	return rebuiltFile{staged: s.name, url: cache.NarURL(sum, ext), hash: sum, size: s.n}, nil
}

func (s *stagedNAR) abort() {
	if !s.closed {
		s.cw.Close()
		s.sw.close()
	}
}

// rebuiltDir is where the sink keeps rebuilt NARs until they are
// published under their own names.
const rebuiltDir = "rebuilt"

// hashReader hashes and counts what it reads; its first error that is
// not io.EOF is kept.
type hashReader struct {
	r   io.Reader
	h   hash.Hash
	n   uint64
	err error
}

func (h *hashReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	h.n += uint64(n)
	if err != nil && err != io.EOF && h.err == nil {
		h.err = err
	}
	return n, err
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
