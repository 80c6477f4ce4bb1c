package bundle

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/atomicfile"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/channel"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Priority is the nix-cache-info Priority of a bundle.
const Priority = 40

// WriterOptions configure a Writer. The zero value writes zstd at the
// default level on every CPU, unsigned.
type WriterOptions struct {
	// Compression names the codec for NARs AddNAR compresses; "" means
	// zstd.
	Compression string
	// Codec tunes the compressor.
	Codec compression.WriterOptions
	// Key, when set, signs every narinfo and the manifest.
	Key *signing.SecretKey
	// TempDir is where the tar form spools NAR files; "" means
	// os.TempDir().
	TempDir string
	// Log receives progress at debug level; nil discards it.
	Log *slog.Logger
}

// PathMeta is what a narinfo and manifest entry need beyond the NAR.
type PathMeta struct {
	References []storepath.Path
	Deriver    storepath.Path
	CA         string
	System     string
	Roles      role.Set
	// Sigs are kept in the narinfo (upstream signatures); the writer adds
	// its own when WriterOptions.Key is set.
	Sigs []signing.Signature
	// Flat marks the output of a flat fixed-output derivation: its NAR's
	// root must be one regular file, whose md5, sha1, sha256 and sha512 go
	// into the manifest.
	Flat bool
	// NarHash and NarSize, if set, are what AddNAR's NAR must hash to
	// (the store's record of the path): a NAR that differs is refused,
	// wrapping cache.ErrCorrupt, before anything is published.
	NarHash storepath.Hash
	NarSize uint64
	// Origin and Fetch go into the manifest as they are.
	Origin *Origin
	Fetch  *Fetch

	flat *FlatHashes // computed
}

// ManifestHeader is the part of manifest.json the writer cannot know.
type ManifestHeader struct {
	Tool        string
	Created     time.Time // zero means now
	Mode        role.Mode
	Derivations bool
	Targets     []Target
	Bases       []Base
}

// Writer writes a bundle as a directory or a tar stream. AddNAR,
// AddCompressed, Reuse and AddFile are safe to call from several
// goroutines; Close must come after all of them.
type Writer struct {
	storeDir storepath.Dir
	opts     WriterOptions
	log      *slog.Logger

	// dir is the bundle directory (directory form) or the spool (tar
	// form), where NAR files are compressed before going into the tar.
	dir   *cache.Cache
	spool string     // the spool's path, removed by Close; "" for a directory
	lock  *os.File   // the flocked bundle directory or spool, until Close
	vol   *volumeOut // a volume set, spooled as a directory

	tarMu sync.Mutex
	tw    *tar.Writer // nil for a directory
	// written are the NAR files in the tar so far.
	written map[string]bool

	mu       sync.Mutex
	entries  map[string]PathEntry // by hash part
	files    map[string][]byte    // tar form: written at Close
	spooled  map[string]string    // tar form: written at Close from these spool files
	fileIdx  map[string]File
	channels map[string]Channel
	closed   bool
	// data is the manifest Close wrote.
	data []byte
}

// NewDirWriter writes a bundle into the directory path, creating it. An
// existing bundle there is reused: Reuse adopts its NAR files once they
// verify, and Close removes what the new bundle no longer holds. A
// non-empty directory that is not a binary cache, or a long-lived cache
// (with nix-airgap/), is refused.
func NewDirWriter(dirPath string, storeDir storepath.Dir, opts WriterOptions) (*Writer, error) {
	return newDirWriter(dirPath, storeDir, opts, cache.CreateBatchedDir)
}

// newDirWriter is NewDirWriter with the cache made by create.
func newDirWriter(dirPath string, storeDir storepath.Dir, opts WriterOptions, create func(string, storepath.Dir, int) (*cache.Cache, error)) (*Writer, error) {
	// A killed pack's temp files (.tmp-*) do not count: it may have died
	// writing nix-cache-info.
	ents, _ := os.ReadDir(dirPath)
	if slices.ContainsFunc(ents, func(e fs.DirEntry) bool { return !isTemp(e) }) {
		if _, err := os.Stat(filepath.Join(dirPath, CacheInfo)); err != nil {
			return nil, fmt.Errorf("write bundle %s: directory is not empty and not a bundle", dirPath)
		}
		if _, err := os.Stat(filepath.Join(dirPath, recordRoot)); err == nil {
			return nil, fmt.Errorf("write bundle %s: this is a long-lived cache (it has %s/), not a bundle", dirPath, recordRoot)
		}
	}
	// Close syncs once before it writes the manifest; NAR files and
	// narinfos are made durable in batches until then.
	d, err := create(dirPath, storeDir, Priority)
	if err != nil {
		return nil, fmt.Errorf("write bundle: %w", err)
	}
	lock, err := lockDir(dirPath)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("write bundle %s: %w", dirPath, err)
	}
	// The directory is no longer the old bundle: drop its manifest and
	// signature first, so that nothing vouches for a half-rewritten one.
	for _, name := range []string{ManifestName, SigName} {
		if err := os.Remove(filepath.Join(dirPath, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			d.Close()
			lock.Close()
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

func newWriter(d *cache.Cache, spool string, tw *tar.Writer, storeDir storepath.Dir, opts WriterOptions) *Writer {
	if opts.Compression == "" {
		opts.Compression = compression.Zstd
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Writer{
		storeDir: storeDir, opts: opts, log: log, dir: d, spool: spool, tw: tw,
		written: map[string]bool{}, entries: map[string]PathEntry{}, files: map[string][]byte{}, fileIdx: map[string]File{},
		spooled: map[string]string{}, channels: map[string]Channel{},
	}
}

// Has reports whether p is already in the bundle.
func (w *Writer) Has(p storepath.Path) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.entries[p.Hash]
	return ok
}

// addEntry records e in the manifest and reports whether its path is
// new. A path added twice (pack found it by two roles) keeps its first
// entry, with both entries' roles.
func (w *Writer) addEntry(e PathEntry) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if prev, ok := w.entries[e.Path.Hash]; ok {
		prev.Roles |= e.Roles
		w.entries[e.Path.Hash] = prev
		return false
	}
	w.entries[e.Path.Hash] = e
	return true
}

// AddNAR compresses the NAR nar reads into the bundle as p, with a
// narinfo built from its hashes and meta, signed with the writer's key.
// The NAR is hashed, compressed and, for meta.Flat, its file hashed in
// one pass.
func (w *Writer) AddNAR(ctx context.Context, p storepath.Path, narR io.Reader, meta PathMeta) error {
	if err := w.checkPath(p); err != nil {
		return err
	}
	f, ni, meta, err := w.compressNAR(ctx, p, narR, meta)
	if err != nil {
		return err
	}
	return w.publish(ctx, ni, f, meta)
}

// AddCompressed copies an upstream cache's compressed NAR file verbatim
// into the bundle as ni.StorePath, checking FileHash, FileSize, NarHash and
// NarSize while it streams. The narinfo keeps ni's references, deriver,
// CA and signatures and adds the writer's; meta adds roles, more
// signatures and, for meta.Flat, the file hashes.
func (w *Writer) AddCompressed(ctx context.Context, ni *narinfo.NarInfo, file io.Reader, meta PathMeta) error {
	p := ni.StorePath
	if err := w.checkPath(p); err != nil {
		return err
	}
	// A flat output's file is hashed from the NAR CopyVerified
	// decompresses anyway.
	var fh *flatHasher
	var narW io.Writer
	if meta.Flat {
		fh = newFlatHasher()
		narW = fh
	}
	f, err := w.dir.CopyVerified(ctx, file, ni, narW)
	if err := fh.finishInto(&meta, err); err != nil {
		return fmt.Errorf("add %s to bundle: %w", p, err)
	}
	return w.publishCopied(ctx, ni, f, meta)
}

func (w *Writer) publishCopied(ctx context.Context, up *narinfo.NarInfo, f cache.File, meta PathMeta) error {
	ni := &narinfo.NarInfo{
		StorePath: up.StorePath, URL: f.URL, Compression: up.Compression,
		FileHash: f.Hash, FileSize: uint64(f.Size),
		NarHash: up.NarHash, NarSize: up.NarSize,
		References: up.References, Deriver: up.Deriver, CA: up.CA, System: up.System,
	}
	meta.References, meta.Deriver, meta.CA = up.References, up.Deriver, up.CA
	if meta.System == "" {
		meta.System = up.System
	}
	meta.Sigs = append(slices.Clone(up.Sigs), meta.Sigs...)
	return w.publish(ctx, ni, f, meta)
}

// Reuse adopts p from a bundle already in the writer's directory, when its
// narinfo is there and its NAR file verifies, and reports whether it did.
// pack calls it before building or fetching p again. The tar form never
// reuses.
func (w *Writer) Reuse(ctx context.Context, p storepath.Path, meta PathMeta) (bool, error) {
	if w.tw != nil {
		return false, nil
	}
	if err := w.checkPath(p); err != nil {
		return false, err
	}
	old, err := w.dir.NarInfo(ctx, p.Hash)
	if err != nil {
		return false, nil
	}
	if old.StorePath != p || CheckURL(old.URL) != nil {
		return false, nil
	}
	f, err := w.dir.Open(ctx, old.URL)
	if err != nil {
		return false, nil
	}
	defer f.Close()
	st, err := checkNARStream(f, old.Compression, meta.Flat, true, nil)
	if err != nil || st.Mismatch(old, "narinfo") != "" {
		w.log.Debug("not reusing", "path", p, "problem", st.Mismatch(old, "narinfo"), "err", err)
		return false, nil
	}
	if meta.Flat {
		if st.flat == nil {
			return false, nil
		}
		meta.flat = st.flat
	}
	file := cache.File{URL: old.URL, Hash: st.FileHash, Size: int64(st.FileSize)}
	meta.References, meta.Deriver, meta.CA = old.References, old.Deriver, old.CA
	if meta.System == "" {
		meta.System = old.System
	}
	meta.Sigs = append(slices.Clone(old.Sigs), meta.Sigs...)
	ni := *old
	return true, w.publish(ctx, &ni, file, meta)
}

func (w *Writer) checkPath(p storepath.Path) error {
	if p.Dir != w.storeDir {
		return fmt.Errorf("add %s to bundle: not in store %s", p, w.storeDir)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return fmt.Errorf("add %s to bundle: writer closed", p)
	}
	return nil
}

// publish completes ni from meta, signs it and writes it: in the
// directory after its NAR file, or into the tar after copying the NAR file
// there from the spool.
func (w *Writer) publish(ctx context.Context, ni *narinfo.NarInfo, f cache.File, meta PathMeta) error {
	p := ni.StorePath
	ni.References = slices.Clone(meta.References)
	slices.SortFunc(ni.References, storepath.Compare)
	ni.References = slices.Compact(ni.References)
	ni.Deriver, ni.CA, ni.System = meta.Deriver, meta.CA, meta.System
	ni.Sigs = slices.Clone(meta.Sigs)
	if w.opts.Key != nil {
		ni.Sign(*w.opts.Key)
	}
	text, err := ni.MarshalText()
	if err != nil {
		return fmt.Errorf("add %s to bundle: %w", p, err)
	}
	if meta.Roles == 0 {
		return fmt.Errorf("add %s to bundle: no roles", p)
	}
	entry := PathEntry{
		Path: p, NarHash: ni.NarHash, NarSize: ni.NarSize,
		URL: ni.URL, FileHash: ni.FileHash, FileSize: ni.FileSize, Compression: ni.Compression,
		References: ni.References, Deriver: ni.Deriver, CA: ni.CA, Roles: meta.Roles, Flat: meta.flat,
		Origin: meta.Origin, Fetch: meta.Fetch,
	}
	if err := CheckURL(ni.URL); err != nil {
		return fmt.Errorf("add %s to bundle: %w", p, err)
	}
	if !w.addEntry(entry) {
		return nil
	}

	if w.tw == nil {
		if err := w.dir.PutNarInfo(ctx, ni); err != nil {
			return fmt.Errorf("add %s to bundle: %w", p, err)
		}
		return nil
	}
	if err := w.publishTar(ctx, f, cache.NarInfoFile(p.Hash), text); err != nil {
		return fmt.Errorf("add %s to bundle: %w", p, err)
	}
	return nil
}

// AddFile adds an extra file such as flake-registry.json or
// log/DRVBASE, recorded in the manifest's files.
func (w *Writer) AddFile(name string, data []byte) error {
	if err := checkFileName(name); err != nil {
		return fmt.Errorf("add file to bundle: %w", err)
	}
	sum := sha256.Sum256(data)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return fmt.Errorf("add %s to bundle: writer closed", name)
	}
	w.fileIdx[name] = File{Name: name, SHA256: sum[:], Size: int64(len(data))}
	if w.tw != nil {
		w.files[name] = slices.Clone(data)
		return nil
	}
	if err := w.dir.WriteFile(context.Background(), name, data); err != nil {
		return fmt.Errorf("add file to bundle: %w", err)
	}
	return nil
}

// AddFileFrom adds an extra file as AddFile does, streaming its content
// from r instead of holding it: written durably into the directory, or
// spooled until Close writes it into the tar.
func (w *Writer) AddFileFrom(name string, r io.Reader) error {
	if err := checkFileName(name); err != nil {
		return fmt.Errorf("add file to bundle: %w", err)
	}
	w.mu.Lock()
	closed := w.closed
	w.mu.Unlock()
	if closed {
		return fmt.Errorf("add %s to bundle: writer closed", name)
	}
	h := sha256.New()
	cr := &countReader{r: io.TeeReader(r, h)}
	var spooled string
	if w.tw == nil {
		if err := w.dir.Backend().Put(context.Background(), name, cr, -1); err != nil {
			return fmt.Errorf("add %s to bundle: %w", name, err)
		}
	} else {
		spooled = filepath.Join(w.spool, "file-"+strings.ReplaceAll(name, "/", "_"))
		if err := writeLocal(spooled, cr); err != nil {
			return fmt.Errorf("add %s to bundle: %w", name, err)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.fileIdx[name] = File{Name: name, SHA256: h.Sum(nil), Size: cr.n}
	if spooled != "" {
		w.spooled[name] = spooled
	}
	return nil
}

// writeLocal writes r to the local file name, which only this writer
// reads back.
func writeLocal(name string, r io.Reader) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// AddChannel adds the nixpkgs channel name, whose nixexprs.tar.xz r
// streams (made by package channel), taken from source.
func (w *Writer) AddChannel(name, source string, r io.Reader) error {
	if err := channel.CheckName(name); err != nil {
		return fmt.Errorf("add channel to bundle: %w", err)
	}
	if err := w.AddFileFrom(channel.File(name), r); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.channels[name] = Channel{Name: name, Source: source}
	return nil
}

// Close writes, with a key, manifest.json.sig and then manifest.json, last.
// In a directory it first removes narinfos, NAR files and extra files
// left by an earlier bundle there that this one does not hold.
func (w *Writer) Close(ctx context.Context, header ManifestHeader) error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return errors.New("close bundle: already closed")
	}
	w.closed = true
	w.mu.Unlock()
	defer w.abort()

	m := w.Manifest(header)
	data, err := m.Marshal()
	if err != nil {
		return fmt.Errorf("close bundle: %w", err)
	}
	var sig []byte
	if w.opts.Key != nil {
		sig = Sign(data, *w.opts.Key)
	}
	if w.vol != nil {
		return w.closeVolumes(ctx, m)
	}
	w.data = data
	if w.tw == nil {
		if err := w.dir.Sync(ctx); err != nil {
			return fmt.Errorf("close bundle: %w", err)
		}
		if err := w.prune(ctx, m); err != nil {
			return fmt.Errorf("close bundle %s: %w", w.dir, err)
		}
		// The signature goes first: a pack killed between the two
		// leaves no manifest, so the bundle reads as unfinished, not
		// as unsigned.
		if sig != nil {
			if err := w.dir.WriteFile(ctx, SigName, sig); err != nil {
				return fmt.Errorf("close bundle: %w", err)
			}
		}
		if err := w.dir.WriteFile(ctx, ManifestName, data); err != nil {
			return fmt.Errorf("close bundle: %w", err)
		}
		if err := w.dir.Sync(ctx); err != nil {
			return fmt.Errorf("close bundle: %w", err)
		}
		return nil
	}
	return w.closeTar(data, sig)
}

// ManifestData is manifest.json as Close wrote it, once it returned nil:
// its sha256 is the bundle's id.
func (w *Writer) ManifestData() []byte { return w.data }

// Manifest returns the manifest Close would write with header, for what
// was added so far: pack describes the bundle (an SBOM) before it closes
// it. A zero header.Created means now, so set it to get Close's.
func (w *Writer) Manifest(header ManifestHeader) *Manifest {
	m := &Manifest{
		Tool: header.Tool, Created: header.Created, StoreDir: w.storeDir, Mode: header.Mode,
		Derivations: header.Derivations, Targets: header.Targets, Bases: header.Bases,
	}
	if m.Created.IsZero() {
		m.Created = time.Now().UTC().Truncate(time.Second)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.entries {
		m.Paths = append(m.Paths, e)
	}
	slices.SortFunc(m.Paths, func(a, b PathEntry) int { return storepath.Compare(a.Path, b.Path) })
	for _, f := range w.fileIdx {
		m.Files = append(m.Files, f)
	}
	slices.SortFunc(m.Files, func(a, b File) int { return strings.Compare(a.Name, b.Name) })
	for _, c := range w.channels {
		m.Channels = append(m.Channels, c)
	}
	slices.SortFunc(m.Channels, func(a, b Channel) int { return strings.Compare(a.Name, b.Name) })
	return m
}

// prune removes from the directory what an earlier bundle left and this
// one does not hold: narinfos first, then NAR files and extra files.
func (w *Writer) prune(ctx context.Context, m *Manifest) error {
	keepNAR := map[string]bool{}
	for _, e := range m.Paths {
		keepNAR[e.URL] = true
	}
	keepFile := map[string]bool{}
	for _, f := range m.Files {
		keepFile[f.Name] = true
	}
	var narinfos, others []string
	for info, err := range storage.Walk(ctx, w.dir.Backend(), "") {
		if err != nil {
			return err
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
// interrupted: the tar form's spool goes; a directory keeps what it has,
// which the next pack into it reuses. A writer that was closed, or
// aborted, is left alone.
func (w *Writer) Abort() {
	w.mu.Lock()
	done := w.closed
	w.closed = true
	w.mu.Unlock()
	if !done {
		w.abort()
	}
}

func (w *Writer) abort() {
	w.dir.Close()
	if w.lock != nil {
		w.lock.Close()
	}
	if w.spool != "" {
		os.RemoveAll(w.spool)
	}
}
