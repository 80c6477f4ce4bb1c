package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// maxRegistry caps flake-registry.json, which import reads whole.
const maxRegistry = 16 << 20

// Kind classifies a Problem.
type Kind int

// The kinds of problem, each with its sentinel error.
const (
	KindUntrusted  Kind = iota + 1 // ErrUntrusted
	KindCorrupt                    // ErrCorrupt
	KindMissing                    // ErrMissing
	KindUnexpected                 // ErrUnexpected, and ErrCorrupt
)

func (k Kind) String() string {
	switch k {
	case KindUntrusted:
		return "untrusted"
	case KindCorrupt:
		return "corrupt"
	case KindMissing:
		return "missing"
	case KindUnexpected:
		return "unexpected"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// MarshalText writes the kind's name, for --json.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// Problem is one thing wrong with one file of a bundle.
type Problem struct {
	// File is the file's name relative to the bundle ("nar/….nar.zst",
	// "manifest.json.sig").
	File    string `json:"file"`
	Kind    Kind   `json:"kind"`
	Problem string `json:"problem"`
}

func (p Problem) String() string { return p.File + ": " + p.Problem }

// Report is what Verify found.
type Report struct {
	Source string `json:"source"`
	// ID is the bundle id; zero when manifest.json could not be read.
	ID storepath.Hash `json:"-"`
	// Manifest is the parsed manifest.json, nil when it did not parse.
	Manifest *Manifest `json:"-"`
	// Signer names the trusted key that signed the manifest, "" when
	// unsigned input was allowed.
	Signer string `json:"signer"`
	// Paths and Files count what was checked; Bytes is what was read.
	Paths    int           `json:"paths"`
	Files    int           `json:"files"`
	Bytes    int64         `json:"bytes"`
	Elapsed  time.Duration `json:"elapsedNs"`
	Problems []Problem     `json:"problems"`
	// Warnings are findings that do not fail verification, such as an
	// unsigned bundle accepted with AllowUnsigned.
	Warnings []string `json:"warnings"`
}

// OK reports whether the bundle verified.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// VerifyError is a bundle that failed verification: every problem found.
// errors.Is matches the sentinel of each kind of problem in it.
type VerifyError struct {
	Source   string
	Problems []Problem
	unsigned bool // the untrusted manifest had no signature at all
}

func (e *VerifyError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "verify %s: ", e.Source)
	if len(e.Problems) > 1 {
		fmt.Fprintf(&b, "%d problems: ", len(e.Problems))
	}
	const shown = 10
	for i, p := range e.Problems {
		if i == shown {
			fmt.Fprintf(&b, "; and %d more", len(e.Problems)-shown)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.String())
	}
	return b.String()
}

// Unwrap returns the sentinels of the kinds of problem found.
func (e *VerifyError) Unwrap() []error {
	var errs []error
	add := func(err error) {
		if !slices.Contains(errs, err) {
			errs = append(errs, err)
		}
	}
	if e.unsigned {
		add(ErrUnsigned)
	}
	for _, p := range e.Problems {
		switch p.Kind {
		case KindUntrusted:
			add(ErrUntrusted)
		case KindCorrupt:
			add(ErrCorrupt)
		case KindMissing:
			add(ErrMissing)
		case KindUnexpected:
			add(ErrUnexpected)
			add(ErrCorrupt)
		}
	}
	return errs
}

// VerifyOptions configure Verify. The zero value trusts no key and so
// refuses every bundle.
type VerifyOptions struct {
	// Keys are the trusted public keys.
	Keys *signing.Keyring
	// AllowUnsigned accepts a manifest no trusted key signed (reported
	// as a warning). Everything else is still checked.
	AllowUnsigned bool
	// Against are caches where references outside the bundle may
	// resolve, such as the cache an import goes into.
	Against []cache.Source
	// Deep also decompresses every NAR file of a bundle and checks its
	// NarHash, NarSize and flat hashes against the manifest, as Nix
	// checks a NAR it substitutes. The zero value checks each NAR file's
	// size and sha256 (FileHash) only: a signed manifest's FileHash pins
	// every byte, so that finds any damage as surely, at the speed of the
	// disk. A file without a FileHash is always checked deeply.
	Deep bool
	// Jobs is how many files a directory is checked with at once; 0
	// means GOMAXPROCS.
	Jobs int
	// Stdin is read when the source is "-".
	Stdin io.Reader
	// Log receives progress at debug level; nil discards it.
	Log *slog.Logger
}

// Verify checks the bundle at src, a directory, a .tar file, or "-" for a
// tar stream on opts.Stdin, as docs/bundle-format.md §5 says, and names
// every bad file. A directory that is a binary cache without manifest.json
// is checked as a long-lived cache (§6): record signatures, narinfo
// signatures, NAR files and references. A bundle that fails gives the report and a *VerifyError;
// any other error (an unreadable source, a cancelled ctx) is returned as
// it is.
func Verify(ctx context.Context, src string, opts VerifyOptions) (*Report, error) {
	c, err := check(ctx, src, opts, nil)
	if c == nil {
		return nil, err
	}
	return c.report, err
}

// stager receives copies of a bundle's files as they are verified. stage
// returns where to copy the file rel, or nil for none; the copy is only
// trustworthy once the whole bundle verified.
type stager interface {
	stage(rel string) (io.WriteCloser, error)
}

// checker holds one verification's state.
type checker struct {
	ctx    context.Context
	opts   VerifyOptions
	log    *slog.Logger
	stager stager

	mu     sync.Mutex
	report *Report

	// What import needs once verification succeeded.
	data, sig []byte
	manifest  *Manifest
	narinfos  map[string]*narinfo.NarInfo // by hash part
	registry  []byte
	unsigned  bool
}

func (c *checker) problem(file string, kind Kind, format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.report.Problems = append(c.report.Problems, Problem{File: file, Kind: kind, Problem: fmt.Sprintf(format, args...)})
}

func (c *checker) warn(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.report.Warnings = append(c.report.Warnings, fmt.Sprintf(format, args...))
}

func (c *checker) addBytes(n int64) {
	c.mu.Lock()
	c.report.Bytes += n
	c.mu.Unlock()
}

// check runs a verification and returns its state; the error is a
// *VerifyError when the bundle is bad.
func check(ctx context.Context, src string, opts VerifyOptions, st stager) (*checker, error) {
	if opts.Jobs <= 0 {
		opts.Jobs = runtime.GOMAXPROCS(0)
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &checker{ctx: ctx, opts: opts, log: log, stager: st, report: &Report{Source: src}, narinfos: map[string]*narinfo.NarInfo{}}
	start := time.Now()
	var err error
	switch {
	case src == "-":
		if opts.Stdin == nil {
			return nil, errors.New("verify -: no input stream")
		}
		err = c.tar(opts.Stdin)
	default:
		fi, serr := os.Stat(src)
		if serr != nil {
			return nil, fmt.Errorf("verify %s: %w", src, serr)
		}
		switch {
		case fi.IsDir() && isCache(src):
			err = c.cacheDir(src)
		case fi.IsDir():
			err = c.dir(src)
		default:
			f, oerr := os.Open(src)
			if oerr != nil {
				return nil, fmt.Errorf("verify %s: %w", src, oerr)
			}
			err = c.tar(f)
			f.Close()
		}
	}
	c.report.Elapsed = time.Since(start)
	if err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	slices.SortStableFunc(c.report.Problems, func(a, b Problem) int { return strings.Compare(a.File, b.File) })
	if len(c.report.Problems) > 0 {
		return c, &VerifyError{Source: src, Problems: c.report.Problems, unsigned: c.unsigned}
	}
	return c, nil
}

// trust checks the manifest's signature and parses it. It reports false
// when nothing more can be checked.
func (c *checker) trust(data, sig []byte, haveSig bool) bool {
	c.data, c.sig = data, sig
	c.report.ID = ID(data)
	pk, err := VerifySignatures(data, sig, c.opts.Keys)
	switch {
	case err == nil:
		c.report.Signer = pk.Name
	case errors.Is(err, ErrCorrupt):
		c.problem(SigName, KindCorrupt, "%v", err)
		return false
	case c.opts.AllowUnsigned:
		c.warn("%s: %v; accepted because unsigned input is allowed", ManifestName, err)
	default:
		c.unsigned = errors.Is(err, ErrUnsigned)
		file := SigName
		if !haveSig {
			file = ManifestName
		}
		c.problem(file, KindUntrusted, "%v", err)
		return false
	}
	m, err := ParseManifest(data)
	if err != nil {
		c.problem(ManifestName, KindCorrupt, "%v", err)
		return false
	}
	c.manifest = m
	c.report.Manifest = m
	c.report.Paths = len(m.Paths)
	c.report.Files = len(m.Files)
	return true
}

func (c *checker) checkCacheInfo(data []byte) {
	info, err := cache.ParseCacheInfo(bytes.NewReader(data))
	if err != nil {
		c.problem(CacheInfo, KindCorrupt, "%v", err)
		return
	}
	if info.StoreDir != c.manifest.StoreDir {
		c.problem(CacheInfo, KindCorrupt, "StoreDir %s, manifest says %s", info.StoreDir, c.manifest.StoreDir)
	}
}

// checkNarInfo parses a narinfo and compares it with its manifest entry.
func (c *checker) checkNarInfo(e *PathEntry, data []byte) {
	name := e.Path.Hash + ".narinfo"
	ni, err := narinfo.Parse(bytes.NewReader(data), c.manifest.StoreDir)
	if err != nil {
		c.problem(name, KindCorrupt, "%v", err)
		return
	}
	if d := disagree(ni, e); d != "" {
		c.problem(name, KindCorrupt, "disagrees with %s: %s", ManifestName, d)
		return
	}
	c.mu.Lock()
	c.narinfos[e.Path.Hash] = ni
	c.mu.Unlock()
}

// disagree lists the fields where ni and e differ.
func disagree(ni *narinfo.NarInfo, e *PathEntry) string {
	var d []string
	add := func(field string, got, want any) {
		d = append(d, fmt.Sprintf("%s %v, manifest %v", field, got, want))
	}
	if ni.StorePath != e.Path {
		add("StorePath", ni.StorePath, e.Path)
	}
	if ni.URL != e.URL {
		add("URL", ni.URL, e.URL)
	}
	if ni.Compression != e.Compression {
		add("Compression", ni.Compression, e.Compression)
	}
	if !ni.FileHash.Equal(e.FileHash) {
		add("FileHash", ni.FileHash, e.FileHash)
	}
	if ni.FileSize != e.FileSize {
		add("FileSize", ni.FileSize, e.FileSize)
	}
	if !ni.NarHash.Equal(e.NarHash) {
		add("NarHash", ni.NarHash, e.NarHash)
	}
	if ni.NarSize != e.NarSize {
		add("NarSize", ni.NarSize, e.NarSize)
	}
	if !slices.Equal(ni.References, e.References) {
		add("References", ni.References, e.References)
	}
	if ni.Deriver != e.Deriver {
		add("Deriver", ni.Deriver, e.Deriver)
	}
	if ni.CA != e.CA {
		add("CA", ni.CA, e.CA)
	}
	return strings.Join(d, "; ")
}

// checkNARStats compares a NAR file's measured stats with every entry
// that names it.
func (c *checker) checkNARStats(url string, st *narStats, entries []*PathEntry) {
	for _, e := range entries {
		if msg := st.mismatch(e); msg != "" {
			c.problem(url, KindCorrupt, "%s (%s)", msg, e.Path)
			continue
		}
		if e.Flat != nil && st.Deep {
			switch {
			case st.flat == nil:
				c.problem(url, KindCorrupt, "manifest has flat hashes for %s, but its NAR is not one regular file", e.Path)
			case !flatEqual(st.flat, e.Flat):
				c.problem(url, KindCorrupt, "the file in the NAR of %s does not match the manifest's flat hashes", e.Path)
			}
		}
	}
}

func flatEqual(a, b *FlatHashes) bool {
	return bytes.Equal(a.MD5, b.MD5) && bytes.Equal(a.SHA1, b.SHA1) && bytes.Equal(a.SHA256, b.SHA256) && bytes.Equal(a.SHA512, b.SHA512)
}

// checkReferences checks §5.6: every reference resolves inside the
// bundle, or in a cache it is checked against. Without such a cache, a
// delta's outside references are left to import, with a warning.
func (c *checker) checkReferences() {
	m := c.manifest
	found := map[string]bool{}
	for _, e := range m.Paths {
		for _, r := range e.References {
			if _, ok := m.path(r.Hash); ok || found[r.Hash] {
				continue
			}
			if c.resolveOutside(r) {
				found[r.Hash] = true
				continue
			}
			if len(c.opts.Against) == 0 && len(m.Bases) > 0 {
				c.warn("%s: reference %s is not in this delta bundle; it must be in a base (checked on import)", e.Path, r.Base())
				found[r.Hash] = true
				continue
			}
			c.problem(e.Path.Hash+".narinfo", KindMissing, "reference %s of %s is neither in the bundle nor in a cache it is checked against", r.Base(), e.Path.Base())
		}
	}
}

func (c *checker) resolveOutside(r storepath.Path) bool {
	for _, src := range c.opts.Against {
		ni, err := src.NarInfo(c.ctx, r.Hash)
		if err == nil && ni.StorePath == r {
			return true
		}
	}
	return false
}

// byURL groups manifest entries by NAR file: two paths with the same NAR
// share one file.
func byURL(m *Manifest) map[string][]*PathEntry {
	out := map[string][]*PathEntry{}
	for i := range m.Paths {
		e := &m.Paths[i]
		out[e.URL] = append(out[e.URL], e)
	}
	return out
}

// dir verifies a bundle directory: the manifest and its signature first,
// then every NAR file in parallel, streaming.
func (c *checker) dir(dirPath string) error {
	root, err := os.OpenRoot(dirPath)
	if err != nil {
		return fmt.Errorf("verify %s: %w", dirPath, err)
	}
	defer root.Close()
	read := func(name string, max int64) ([]byte, bool) {
		f, err := root.Open(name)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				c.problem(name, KindCorrupt, "%v", err)
			}
			return nil, false
		}
		defer f.Close()
		data, err := io.ReadAll(io.LimitReader(f, max+1))
		if err != nil {
			c.problem(name, KindCorrupt, "%v", err)
			return nil, false
		}
		if int64(len(data)) > max {
			c.problem(name, KindCorrupt, "larger than %d bytes", max)
			return nil, false
		}
		c.addBytes(int64(len(data)))
		return data, true
	}
	data, ok := read(ManifestName, MaxManifestSize)
	if !ok {
		if len(c.report.Problems) == 0 {
			c.problem(ManifestName, KindMissing, "not found: %s is not a bundle", dirPath)
		}
		return nil
	}
	sig, haveSig := read(SigName, MaxSigSize)
	if !c.trust(data, sig, haveSig) {
		return nil
	}
	m := c.manifest
	if info, ok := read(CacheInfo, 64<<10); ok {
		c.checkCacheInfo(info)
	} else {
		c.problem(CacheInfo, KindMissing, "not found")
	}

	// §5.5: no file the manifest does not account for.
	expected := map[string]bool{CacheInfo: true, ManifestName: true, SigName: true}
	for _, e := range m.Paths {
		expected[e.Path.Hash+".narinfo"] = true
		expected[e.URL] = true
	}
	for _, f := range m.Files {
		expected[f.Name] = true
	}
	err = fs.WalkDir(root.FS(), ".", func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			c.problem(p, KindCorrupt, "%v", err)
			return nil
		}
		if p == "." {
			return nil
		}
		if strings.HasPrefix(de.Name(), ".") {
			if de.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		switch {
		case de.IsDir():
		case !de.Type().IsRegular():
			c.problem(p, KindUnexpected, "not a regular file (%s)", de.Type())
		case !expected[p]:
			c.problem(p, KindUnexpected, "not in %s", ManifestName)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("verify %s: %w", dirPath, err)
	}

	// §5.2, §5.3: narinfos and NAR files, in parallel.
	sem := make(chan struct{}, c.opts.Jobs)
	var wg sync.WaitGroup
	var fatalMu sync.Mutex
	var fatal error
	urls := byURL(m)
	for url, entries := range urls {
		if c.ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			for _, e := range entries {
				if data, ok := read(e.Path.Hash+".narinfo", narinfo.MaxSize); ok {
					c.checkNarInfo(e, data)
				} else if !hasProblem(c, e.Path.Hash+".narinfo") {
					c.problem(e.Path.Hash+".narinfo", KindMissing, "not found (narinfo of %s)", e.Path)
				}
			}
			if err := c.checkNARFile(root, url, entries); err != nil {
				fatalMu.Lock()
				fatal = errors.Join(fatal, err)
				fatalMu.Unlock()
			}
		}()
	}
	wg.Wait()
	if fatal != nil {
		return fatal
	}

	// §5.4: extra files.
	for _, f := range m.Files {
		if err := c.checkExtraFile(root, f); err != nil {
			return err
		}
	}
	c.checkReferences()
	return c.ctx.Err()
}

func hasProblem(c *checker, file string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.ContainsFunc(c.report.Problems, func(p Problem) bool { return p.File == file })
}

// checkNARFile streams one NAR file of a directory. The error is for
// failures that are not the bundle's fault (staging).
func (c *checker) checkNARFile(root *os.Root, url string, entries []*PathEntry) error {
	f, err := root.Open(url)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			c.problem(url, KindMissing, "not found (NAR file of %s)", entries[0].Path)
		} else {
			c.problem(url, KindCorrupt, "%v", err)
		}
		return nil
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		c.problem(url, KindCorrupt, "not a regular file")
		return nil
	}
	var stage io.WriteCloser
	if c.stager != nil {
		if stage, err = c.stager.stage(url); err != nil {
			return err
		}
	}
	flat := slices.ContainsFunc(entries, func(e *PathEntry) bool { return e.Flat != nil })
	deep := c.opts.Deep || slices.ContainsFunc(entries, func(e *PathEntry) bool { return e.FileHash.IsZero() })
	st, err := checkNARStream(ctxReader{c.ctx, f}, entries[0].Compression, flat, deep, stage)
	c.addBytes(int64(st.FileSize))
	if err != nil {
		if errors.Is(err, errStage) || c.ctx.Err() != nil {
			return err
		}
		c.problem(url, KindCorrupt, "read: %v", err)
		return nil
	}
	c.log.Debug("checked", "file", url, "bytes", st.FileSize)
	c.checkNARStats(url, st, entries)
	return nil
}

func (c *checker) checkExtraFile(root *os.Root, f File) error {
	r, err := root.Open(f.Name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			c.problem(f.Name, KindMissing, "not found")
		} else {
			c.problem(f.Name, KindCorrupt, "%v", err)
		}
		return nil
	}
	defer r.Close()
	var stage io.WriteCloser
	if c.stager != nil {
		if stage, err = c.stager.stage(f.Name); err != nil {
			return err
		}
	}
	sum, n, keep, err := hashFile(ctxReader{c.ctx, r}, f.Name, stage)
	c.addBytes(n)
	if err != nil {
		if errors.Is(err, errStage) || c.ctx.Err() != nil {
			return err
		}
		c.problem(f.Name, KindCorrupt, "read: %v", err)
		return nil
	}
	c.checkFileStats(f, sum, n, keep)
	return nil
}

func (c *checker) checkFileStats(f File, sum []byte, n int64, keep []byte) {
	switch {
	case n != f.Size:
		c.problem(f.Name, KindCorrupt, "%d bytes, manifest says %d", n, f.Size)
	case !bytes.Equal(sum, f.SHA256):
		c.problem(f.Name, KindCorrupt, "sha256 %x, manifest says %x", sum, f.SHA256)
	case f.Name == RegistryName:
		c.registry = keep
	}
}

// hashFile hashes an extra file, copying it to stage, and keeps
// flake-registry.json's bytes.
func hashFile(r io.Reader, name string, stage io.WriteCloser) (sum []byte, n int64, keep []byte, err error) {
	h := sha256.New()
	var buf *bytes.Buffer
	ws := []io.Writer{h}
	if name == RegistryName {
		buf = &bytes.Buffer{}
		ws = append(ws, &limitedBuffer{buf, maxRegistry})
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

// tar verifies a tar stream in one pass: every file is hashed (and each
// NAR decompressed and hashed) as it passes, and checked against the
// manifest, which comes last, at the end.
func (c *checker) tar(r io.Reader) error {
	tail := &zeroTail{r: ctxReader{c.ctx, r}}
	tr := tar.NewReader(tail)
	small := map[string][]byte{} // nix-cache-info, manifest, sig, narinfos
	nars := map[string]*narStats{}
	type fileStat struct {
		sum  []byte
		n    int64
		keep []byte
	}
	files := map[string]fileStat{}
	seen := map[string]bool{}
	current := "(start of stream)"
	// Whether the stream reached its end, rather than being cut short in
	// an entry (reported there), and did with tar's end-of-archive marker.
	atEnd, ended := false, false
stream:
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			atEnd, ended = true, tail.zeros >= 2*512
			break
		}
		if err != nil {
			if c.ctx.Err() != nil {
				return c.ctx.Err()
			}
			c.problem(current, KindCorrupt, "tar stream cut short or damaged after this file: %v", err)
			break stream
		}
		name := hdr.Name
		current = name
		if hdr.Typeflag == tar.TypeDir {
			if d := strings.TrimSuffix(name, "/"); d != "nar" && d != "log" {
				c.problem(name, KindUnexpected, "directory not allowed in a bundle")
			}
			continue
		}
		if name != path.Clean(name) || path.IsAbs(name) || strings.HasPrefix(name, "../") || strings.HasPrefix(name, "./") {
			c.problem(name, KindUnexpected, "not a clean relative name")
			continue
		}
		if strings.HasPrefix(path.Base(name), ".") {
			continue
		}
		if hdr.Typeflag != tar.TypeReg {
			c.problem(name, KindUnexpected, "not a regular file (tar type %q)", hdr.Typeflag)
			continue
		}
		if seen[name] {
			c.problem(name, KindCorrupt, "appears twice in the stream")
			continue
		}
		seen[name] = true
		c.addBytes(hdr.Size)
		var stage io.WriteCloser
		if c.stager != nil && name != ManifestName && name != SigName && name != CacheInfo {
			if stage, err = c.stager.stage(name); err != nil {
				return err
			}
		}
		switch {
		case name == CacheInfo || name == ManifestName || name == SigName || isNarInfoName(name):
			max := int64(narinfo.MaxSize)
			switch name {
			case ManifestName:
				max = MaxManifestSize
			case SigName:
				max = MaxSigSize
			}
			if hdr.Size > max {
				c.problem(name, KindCorrupt, "larger than %d bytes", max)
				continue
			}
			data, err := io.ReadAll(tr)
			if err == nil && stage != nil {
				sw := &stageWriter{w: stage}
				sw.Write(data)
				err = sw.close()
			}
			if err != nil {
				if errors.Is(err, errStage) || c.ctx.Err() != nil {
					return err
				}
				c.problem(name, KindCorrupt, "tar stream cut short in this file: %v", err)
				break stream
			}
			small[name] = data
		case strings.HasPrefix(name, "nar/") && !strings.Contains(name[4:], "/"):
			comp := compressionOf(name)
			st, err := checkNARStream(tr, comp, true, c.opts.Deep, stage)
			if err != nil {
				if errors.Is(err, errStage) || c.ctx.Err() != nil {
					return err
				}
				c.problem(name, KindCorrupt, "tar stream cut short in this file: %v", err)
				break stream
			}
			st.compression = comp
			nars[name] = st
		default:
			sum, n, keep, err := hashFile(tr, name, stage)
			if err != nil {
				if errors.Is(err, errStage) || c.ctx.Err() != nil {
					return err
				}
				c.problem(name, KindCorrupt, "tar stream cut short in this file: %v", err)
				break stream
			}
			files[name] = fileStat{sum, n, keep}
		}
	}

	cut := !atEnd
	data, haveManifest := small[ManifestName]
	sig, haveSig := small[SigName]
	if !cut && !ended && !(haveManifest && (haveSig || c.opts.AllowUnsigned)) {
		// A stream cut at an entry's end reads as ended to archive/tar,
		// but lacks the end-of-archive marker. (With unsigned input
		// allowed, a whole manifest is all the rest is checked against.)
		c.problem(current, KindCorrupt, "the stream ends after this file without tar's end-of-archive marker: was it cut short?")
		cut = true
	}
	if !haveManifest {
		c.problem(ManifestName, KindMissing, "not in the stream (it comes last: was the stream cut short?)")
		return nil
	}
	if !haveSig && cut {
		// The signature, which comes last, went with the rest: the
		// stream is corrupt, not unsigned.
		return nil
	}
	if !c.trust(data, sig, haveSig) {
		return nil
	}
	m := c.manifest
	if info, ok := small[CacheInfo]; ok {
		c.checkCacheInfo(info)
	} else if !seen[CacheInfo] {
		c.problem(CacheInfo, KindMissing, "not in the stream")
	}
	accounted := map[string]bool{CacheInfo: true, ManifestName: true, SigName: true}
	for url, entries := range byURL(m) {
		accounted[url] = true
		if st, ok := nars[url]; ok {
			c.checkNARStats(url, st, entries)
		} else if !seen[url] {
			c.problem(url, KindMissing, "not in the stream (NAR file of %s)", entries[0].Path)
		}
		for _, e := range entries {
			name := e.Path.Hash + ".narinfo"
			accounted[name] = true
			if data, ok := small[name]; ok {
				c.checkNarInfo(e, data)
			} else if !seen[name] {
				c.problem(name, KindMissing, "not in the stream (narinfo of %s)", e.Path)
			}
		}
	}
	for _, f := range m.Files {
		accounted[f.Name] = true
		if st, ok := files[f.Name]; ok {
			c.checkFileStats(f, st.sum, st.n, st.keep)
		} else if !seen[f.Name] {
			c.problem(f.Name, KindMissing, "not in the stream")
		}
	}
	for name := range seen {
		if !accounted[name] {
			c.problem(name, KindUnexpected, "not in %s", ManifestName)
		}
	}
	c.checkReferences()
	return nil
}

func isNarInfoName(name string) bool {
	return !strings.Contains(name, "/") && strings.HasSuffix(name, ".narinfo")
}

// compressionOf names the compression Nix's file name extension implies.
func compressionOf(name string) string {
	for _, comp := range []string{compression.Zstd, compression.XZ, compression.Bzip2, compression.Gzip} {
		if ext, err := compression.Ext(comp); err == nil && strings.HasSuffix(name, ".nar"+ext) {
			return comp
		}
	}
	if strings.HasSuffix(name, ".nar") {
		return compression.None
	}
	return ""
}

// narStats is what reading one NAR file measured.
type narStats struct {
	*cache.NARFileStats
	compression string      // the codec the tar reader guessed from the name
	flat        *FlatHashes // when asked for and the NAR is one regular file
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

var errStage = errors.New("staging copy")

// stageWriter passes writes to a staging copy, remembering a failure
// instead of returning it, so that verification goes on; close reports it.
type stageWriter struct {
	w   io.WriteCloser
	err error
}

func (s *stageWriter) Write(p []byte) (int, error) {
	if s.err == nil {
		if _, err := s.w.Write(p); err != nil {
			s.err = err
		}
	}
	return len(p), nil
}

func (s *stageWriter) close() error {
	if err := s.w.Close(); s.err == nil {
		s.err = err
	}
	if s.err != nil {
		return fmt.Errorf("%w: %w", errStage, s.err)
	}
	return nil
}

// checkNARStream reads a compressed NAR file to its end, hashing the file
// and, when deep, decompressing it (comp "" or unknown: not at all) and
// hashing the NAR, and with flat also hashing the file a flat NAR holds,
// all in one pass. It copies the file to stage when set. The error is a
// read error of r or a staging failure (wrapping errStage); data that does
// not decompress is reported in the stats.
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

// zeroTail counts the zero bytes at the end of what it has read: tar's
// end-of-archive marker is two zero blocks.
type zeroTail struct {
	r     io.Reader
	zeros int
}

func (z *zeroTail) Read(p []byte) (int, error) {
	n, err := z.r.Read(p)
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

// ctxReader stops a read when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
