package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/flakeregistry"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/storage"
)

// checker accounts for every file of a bundle against its signed manifest
// (docs/bundle-format.md §5), whichever source the files come from and in
// whatever order. Each file is read once as it passes: hashed, a NAR file
// also decompressed and its NAR hashed when deep, its bytes copied to the
// sink. When the source is done, account compares what was measured with
// the manifest: every file there and right, none unaccounted for. When the
// manifest comes first (a directory), a file it does not name is never
// read, and a bundle no trusted key signed is not read any further.
type checker struct {
	ctx  context.Context
	opts VerifyOptions
	log  *slog.Logger
	sink sink // nil: the bytes go nowhere
	// countFiles tells Progress of each file's bytes as they are read
	// (a directory, volumes); else the source's reader does (a stream).
	countFiles bool

	mu     sync.Mutex
	report *Report
	seen   map[string]*measured // every file the source yielded
	// checkedNarInfo is what seen holds for every narinfo checked as it
	// was read, shared: one each would be 200 bytes a path.
	checkedNarInfo *measured
	origins        map[string]string // where a source said a file came from

	// Set by trust, before files are checked against it.
	manifest *Manifest
	urls     map[string][]*PathEntry // NAR file → the paths it holds
	expected map[string]bool         // every name the bundle may have

	// What import needs once verification succeeded. A keeper sink
	// holds the manifest's bytes in dataFile instead of data.
	data, sig []byte
	dataFile  string
	narinfos  map[string]*narinfo.NarInfo // by hash part
	registry  []byte
	unsigned  bool
	// kept are the delta files a stream brought before its manifest,
	// spooled to be rebuilt once it is trusted: by name, their temp file.
	kept map[string]string
	// pending are files a volume source does not have whole yet; held
	// are the paths (by hash part) that wait for them: their NAR file
	// or narinfo is pending, or they refer to a held path.
	pending map[string]bool
	held    map[string]bool
	// down is the first error of a store that stopped answering.
	down error
	// refused ends the check once the manifest is trusted, before any
	// problem of the bundle: a cache the bundle is checked against is
	// for another store (sameStore).
	refused error
}

// measured is what reading one file found.
type measured struct {
	// bad reports a file a problem was reported for as it was read:
	// nothing more is said of it.
	bad bool
	// data holds a small file whole: nix-cache-info, the manifest, its
	// signature, a narinfo; checked marks a narinfo checked as it was
	// read, against a manifest read first.
	data    []byte
	checked bool
	nar     *narStats
	// sum and size are an extra file's; keep holds flake-registry.json.
	sum  []byte
	size int64
	keep []byte
	// kept marks a delta file spooled until the manifest is trusted;
	// rebuilt is where the NAR a delta file made is staged.
	kept    bool
	rebuilt rebuiltFile
	// inCache marks a delta file not rebuilt: a cache holds its NAR.
	inCache bool
	// piece marks a piece of a split file, kept for a later import.
	piece bool
}

func newChecker(ctx context.Context, src string, opts VerifyOptions, sk sink) *checker {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &checker{
		ctx: ctx, opts: opts, log: log, sink: sk, report: &Report{Source: src},
		seen: map[string]*measured{}, checkedNarInfo: &measured{checked: true}, origins: map[string]string{}, narinfos: map[string]*narinfo.NarInfo{}, kept: map[string]string{},
	}
}

// problem reports a problem with file, named with where its source said
// it came from (a volume), if anywhere.
func (c *checker) problem(file string, kind Kind, format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if o := c.origins[file]; o != "" {
		file = o + ":" + file
	}
	c.report.Problems = append(c.report.Problems, Problem{File: file, Kind: kind, Problem: fmt.Sprintf(format, args...)})
}

// pathProblem is problem for the store paths it damages.
func (c *checker) pathProblem(file string, paths []string, kind Kind, format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.report.Problems = append(c.report.Problems, Problem{File: file, Kind: kind, Problem: fmt.Sprintf(format, args...), Paths: paths})
}

// sigProblem reports err, why file's signatures are not trusted, for
// the store paths it damages.
func (c *checker) sigProblem(file string, paths []string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if o := c.origins[file]; o != "" {
		file = o + ":" + file
	}
	c.report.Problems = append(c.report.Problems, Problem{File: file, Kind: KindUntrusted, Problem: err.Error(), Paths: paths,
		BadSignature: errors.Is(err, ErrBadSignature), KeyNotGiven: errors.As(err, new(keyNotGiven))})
}

// storeDown reports whether err is no answer from the store
// (storage.ErrUnavailable) rather than one about the file, keeping the
// first such: it says nothing of the file, which is not a problem then.
func (c *checker) storeDown(err error) bool {
	if !errors.Is(err, storage.ErrUnavailable) {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.down == nil {
		c.down = err
	}
	return true
}

// isDown reports whether the store stopped answering.
func (c *checker) isDown() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.down != nil
}

func (c *checker) warn(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.report.Warnings = append(c.report.Warnings, fmt.Sprintf(format, args...))
}

// addBytes counts n bytes read.
func (c *checker) addBytes(n int64) {
	c.mu.Lock()
	c.report.Bytes += n
	c.mu.Unlock()
}

// ProgressReader tells Prog of the bytes read through R, so that a large
// file shows progress within it. A stream is read through one whole; a
// directory's NAR and extra files each (countFiles), which are what the
// manifest gives the sizes of. pack reads the files it copies through one.
type ProgressReader struct {
	R    io.Reader
	Prog Progress
}

func (p ProgressReader) Read(b []byte) (int, error) {
	n, err := p.R.Read(b)
	if n > 0 {
		p.Prog.Step("", "", int64(n))
	}
	return n, err
}

// progressSeeker is a ProgressReader over a file that the tar reader
// seeks past what no one reads: skipped bytes count as done too.
type progressSeeker struct {
	ProgressReader
	s io.Seeker
}

func (p progressSeeker) Seek(offset int64, whence int) (int64, error) {
	before, err := p.s.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, err
	}
	after, err := p.s.Seek(offset, whence)
	if err == nil && after > before {
		p.Prog.Step("", "", after-before)
	}
	return after, err
}

func (c *checker) record(name string, m *measured) {
	c.mu.Lock()
	c.seen[name] = m
	c.mu.Unlock()
}

func (c *checker) measured(name string) (*measured, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.seen[name]
	return m, ok
}

// run checks every file src yields, then accounts for them all.
func (c *checker) run(src source) error {
	if o, ok := src.(opener); ok && !c.readManifest(o) {
		return c.refused
	}
	end, err := src.files(c.ctx, c)
	if err != nil {
		return err
	}
	if c.ctx.Err() != nil {
		return c.ctx.Err()
	}
	if end.stop {
		c.report.Volumes = end.volumes
		return nil
	}
	c.account(src, end)
	return c.refused
}

// readManifest reads and trusts the manifest of a source that can read it
// first. It reports false when nothing more can be checked.
func (c *checker) readManifest(o opener) bool {
	read := func(name string) (*measured, bool) {
		f := &file{name: name, size: -1, open: func() (io.ReadCloser, error) { return o.open(name) }}
		if err := c.small(f, maxSize(name)); err != nil {
			c.problem(name, KindCorrupt, "%v", err)
		}
		m, ok := c.measured(name)
		return m, ok && !m.bad
	}
	data, ok := read(ManifestName)
	if !ok {
		if len(c.report.Problems) > 0 {
			return false
		}
		if ml, ok := o.(manifestless); ok {
			if ps := ml.noManifest(); len(ps) > 0 {
				for _, p := range ps {
					c.problem(p.File, p.Kind, "%s", p.Problem)
				}
				return false
			}
		}
		var ie *inputErr
		if _, err := IdentifyBundle(c.report.Source, true); errors.As(err, &ie) {
			// Said as show, diff and the rest say it.
			file := filepath.Base(c.report.Source)
			if errors.Is(err, errUnfinished) {
				file = ManifestName
			}
			msg := ie.problem
			if !errors.Is(err, ErrMissing) {
				msg = ie.Error() // "not a bundle: …"
			}
			c.problem(file, ie.kind(), "%s", msg)
		} else {
			c.problem(ManifestName, KindMissing, "not found")
		}
		return false
	}
	sig, haveSig := read(SigName)
	if !haveSig {
		sig = &measured{}
	}
	if !c.trust(data.data, sig.data, haveSig) {
		return false
	}
	if c.opts.room != nil {
		if c.refused = c.opts.room(c.manifest, len(data.data), c.opts.Jobs); c.refused != nil {
			return false
		}
	}
	// Now the whole is known: every file the manifest names.
	var total int64
	for _, entries := range c.urls {
		total += int64(entries[0].FileSize)
	}
	for _, f := range c.manifest.Files {
		total += f.Size
	}
	c.opts.Progress.Phase(PhaseVerify, len(c.urls), total)
	return true
}

// file reads one file as its name says: the receiver of the source.
func (c *checker) file(f *file) error {
	if f.origin != "" {
		c.mu.Lock()
		c.origins[f.name] = f.origin
		c.mu.Unlock()
	}
	if f.piece {
		return c.piece(f)
	}
	if f.name == ManifestName || f.name == SigName {
		if _, done := c.measured(f.name); done {
			return nil // read first
		}
	}
	if f.notRegular != "" {
		c.problem(f.name, KindUnexpected, "not a regular file (%s)", f.notRegular)
		c.record(f.name, &measured{bad: true})
		return nil
	}
	if c.manifest != nil && !c.expected[f.name] {
		c.record(f.name, &measured{}) // unexpected: account says so
		return nil
	}
	_, isNarInfo := cache.NarInfoHashPart(f.name)
	switch {
	case isNarInfo || f.name == CacheInfo || f.name == ManifestName || f.name == SigName:
		return c.small(f, maxSize(f.name))
	case isNARFile(f.name) && isDeltaFile(f.name):
		return c.delta(f)
	case isNARFile(f.name):
		return c.nar(f)
	}
	return c.extra(f)
}

// maxSize caps the small files, which are read whole.
func maxSize(name string) int64 {
	switch name {
	case ManifestName:
		return MaxManifestSize
	case SigName:
		return MaxSigSize
	case CacheInfo:
		return maxCacheInfo
	}
	return narinfo.MaxSize
}

// small reads a small file whole. A file that is not there is left for
// account to miss.
func (c *checker) small(f *file, max int64) error {
	if f.size > max {
		c.problem(f.name, KindCorrupt, "larger than %d bytes", max)
		c.record(f.name, &measured{bad: true})
		return nil
	}
	r, err := f.open()
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			c.problem(f.name, KindCorrupt, "%v", err)
			c.record(f.name, &measured{bad: true})
		}
		return nil
	}
	defer r.Close()
	data, err := readSmall(cache.ContextReader(c.ctx, r), f.size, r, max)
	if err != nil {
		c.record(f.name, &measured{bad: true})
		return &readError{err}
	}
	if int64(len(data)) > max {
		c.problem(f.name, KindCorrupt, "larger than %d bytes", max)
		c.record(f.name, &measured{bad: true})
		return nil
	}
	c.addBytes(int64(len(data)))
	if c.manifest != nil && c.checkNarInfoNow(f.name, data) {
		// Checked against the manifest, which a directory's checker
		// read first: only what import needs of it stays.
		c.record(f.name, c.checkedNarInfo)
		return nil
	}
	c.record(f.name, &measured{data: data})
	return nil
}

// readSmall reads r whole, up to max+1 bytes, into a slice of its size
// when size (or, if it is -1, the file f's Stat) tells it: a manifest of
// a channel's 100,000 paths is 100 MB, which io.ReadAll's doubling would
// hold in up to twice that, and a narinfo read by doubling from 512 bytes
// holds twice its size.
func readSmall(r io.Reader, size int64, f any, max int64) ([]byte, error) {
	if s, ok := f.(interface{ Stat() (fs.FileInfo, error) }); ok && size < 0 {
		if fi, err := s.Stat(); err == nil && fi.Mode().IsRegular() {
			size = fi.Size()
		}
	}
	r = io.LimitReader(r, max+1)
	if size < 0 || size > max {
		return io.ReadAll(r)
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(r, data); err != nil {
		return nil, err // cut short
	}
	rest, err := io.ReadAll(r) // none, unless it grew since
	if len(rest) > 0 {
		data = append(data, rest...)
	}
	return data, err
}

// nar reads a NAR file, copying it to the sink: decompressed when deep, or
// when a path it holds has no FileHash, and its flat file hashed when a
// path needs that. Before the manifest, the file name tells the codec.
func (c *checker) nar(f *file) error {
	entries := c.urls[f.name]
	comp, flat, deep := compressionOf(f.name), true, c.opts.Deep
	if entries != nil {
		comp = entries[0].Compression
		flat = slices.ContainsFunc(entries, func(e *PathEntry) bool { return e.Flat != nil })
		deep = deep || slices.ContainsFunc(entries, func(e *PathEntry) bool { return e.FileHash.IsZero() })
	}
	return c.copyFile(f, func(r io.Reader, stage io.WriteCloser) (*measured, int64, error) {
		st, err := checkNARStream(r, comp, flat, deep, stage)
		if entries == nil {
			st.compression = comp
		}
		return &measured{nar: st}, int64(st.FileSize), err
	})
}

// piece reads a piece of a file split across volumes, which its source
// checks, copying it to the sink to keep until the rest comes.
func (c *checker) piece(f *file) error {
	return c.copyFile(f, func(r io.Reader, stage io.WriteCloser) (*measured, int64, error) {
		var sw *stageWriter
		w := io.Discard
		if stage != nil {
			sw = &stageWriter{w: stage}
			w = sw
		}
		n, err := io.CopyBuffer(w, r, make([]byte, 256<<10))
		if sw != nil {
			if serr := sw.close(); err == nil {
				err = serr
			}
		}
		return &measured{piece: true, size: n}, n, err
	})
}

// extra reads a file of the manifest's files (or, before the manifest,
// any other file), copying it to the sink.
func (c *checker) extra(f *file) error {
	return c.copyFile(f, func(r io.Reader, stage io.WriteCloser) (*measured, int64, error) {
		sum, n, keep, err := hashFile(r, f.name, stage)
		return &measured{sum: sum, size: n, keep: keep}, n, err
	})
}

// copyFile opens f and measures it with read, copying it to the sink. Its
// error is a *readError, or a failure that is not the bundle's (the
// sink's, ctx's).
func (c *checker) copyFile(f *file, read func(io.Reader, io.WriteCloser) (*measured, int64, error)) error {
	r, err := f.open()
	if err != nil {
		c.problem(f.name, KindCorrupt, "%v", err)
		c.record(f.name, &measured{bad: true})
		return nil
	}
	defer r.Close()
	var stage io.WriteCloser
	if c.sink != nil {
		if stage, err = c.sink.create(f.name); err != nil {
			return fmt.Errorf("%w: %w", errStage, err)
		}
	}
	in := cache.ContextReader(c.ctx, r)
	if c.countFiles {
		in = ProgressReader{in, c.opts.Progress}
	}
	m, n, err := read(in, stage)
	c.addBytes(n)
	if err != nil {
		if errors.Is(err, errStage) || c.ctx.Err() != nil {
			return err
		}
		c.record(f.name, &measured{bad: true})
		return &readError{err}
	}
	c.log.Debug("checked", "file", f.name, "bytes", n)
	if m.nar != nil {
		c.opts.Progress.Step(f.name, "", 0)
	}
	c.record(f.name, m)
	return nil
}

// hashFile hashes an extra file, copying it to stage, and keeps
// flake-registry.json's bytes.
func hashFile(r io.Reader, name string, stage io.WriteCloser) (sum []byte, n int64, keep []byte, err error) {
	h := sha256.New()
	var buf *bytes.Buffer
	ws := []io.Writer{h}
	if name == RegistryName {
		buf = &bytes.Buffer{}
		ws = append(ws, &limitedBuffer{buf, flakeregistry.MaxSize})
	}
	var sw *stageWriter
	if stage != nil {
		sw = &stageWriter{w: stage}
		ws = append(ws, sw)
	}
	n, err = io.CopyBuffer(io.MultiWriter(ws...), r, make([]byte, 256<<10))
	if sw != nil {
		if serr := sw.close(); serr != nil && err == nil {
			err = serr
		}
	}
	if buf != nil {
		keep = buf.Bytes()
	}
	return h.Sum(nil), n, keep, err
}

type limitedBuffer struct {
	b   *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if l.b.Len()+len(p) > l.max {
		return 0, fmt.Errorf("larger than %d bytes", l.max)
	}
	return l.b.Write(p)
}

// narStats is what reading one NAR file measured.
type narStats struct {
	*cache.NARFileStats
	compression string      // the codec the file name implies, before the manifest
	flat        *FlatHashes // when asked for and the NAR is one regular file
}

// checkNARStream reads a compressed NAR file to its end through
// cache.ReadNARFile, hashing the file and, when deep, decompressing it
// (comp "" or unknown: not at all) and hashing the NAR, and with flat also
// hashing the file a flat NAR holds, all in one pass. It copies the file
// to stage when set. The error is a read error of r or a staging failure
// (wrapping errStage); data that does not decompress is in the stats.
func checkNARStream(r io.Reader, comp string, flat, deep bool, stage io.WriteCloser) (*narStats, error) {
	opts := cache.NARFileOptions{Compression: comp, Deep: deep}
	var sw *stageWriter
	if stage != nil {
		sw = &stageWriter{w: stage}
		opts.Copy = sw
	}
	var fh *flatHasher
	if flat && deep {
		fh = newFlatHasher()
		opts.NAR = fh
	}
	fst, err := cache.ReadNARFile(r, opts)
	st := &narStats{NARFileStats: fst}
	if fh != nil {
		st.flat, _ = fh.finish()
	}
	if sw != nil {
		if serr := sw.close(); err == nil {
			err = serr
		}
	}
	return st, err
}

// mismatch describes how the stats differ from what a manifest entry
// says, or returns "".
func (st *narStats) mismatch(e *PathEntry) string {
	d := st.Mismatch(e.fileInfo(), "manifest")
	if st.compression != "" && st.compression != e.Compression {
		d = strings.TrimSuffix(fmt.Sprintf("file name says %s compression, manifest %s; %s", st.compression, e.Compression, d), "; ")
	}
	return d
}
