package bundle

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/channel"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
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
	// Concurrency, if not 0, is the codec's Concurrency for this NAR
	// (compression.WriterOptions), in place of the writer's.
	Concurrency int

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
	// kept are the paths of a resumed tar (ResumeTarWriter) not adopted
	// yet, by hash part.
	kept map[string]PathEntry

	mu       sync.Mutex
	entries  map[string]PathEntry // by hash part
	files    map[string][]byte    // tar form: written at Close
	spooled  map[string]string    // tar form: written at Close from these spool files
	fileIdx  map[string]File
	channels map[string]Channel
	closed   bool
	// data is the manifest Close wrote, closedWith what it holds.
	data       []byte
	closedWith *Manifest
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
	f, ni, meta, err := w.compressNAR(ctx, p, narR, meta, 0)
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
	ni.References = sortedRefs(meta.References)
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
	if err := checkURL(ni.URL); err != nil {
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

// sortedRefs returns refs sorted and without duplicates: refs itself when
// it is already, as a parsed narinfo's are, else a sorted copy, leaving
// the caller's slice alone. Sharing it saves a copy for every path of a
// channel-sized bundle.
func sortedRefs(refs []storepath.Path) []storepath.Path {
	for i := 1; i < len(refs); i++ {
		if storepath.Compare(refs[i-1], refs[i]) >= 0 {
			refs = slices.Clone(refs)
			slices.SortFunc(refs, storepath.Compare)
			return slices.Compact(refs)
		}
	}
	return refs
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

// addFileFrom adds an extra file as AddFile does, streaming its content
// from r instead of holding it: written durably into the directory, or
// spooled until Close writes it into the tar.
func (w *Writer) addFileFrom(name string, r io.Reader) error {
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

// countReader counts the bytes read through it: a file's size as it is
// copied, or how far into a tar a scan has read.
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
	if err := w.addFileFrom(channel.File(name), r); err != nil {
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
	defer w.release(true)

	m := w.Manifest(header)
	// m holds every entry from here: the map would be a second copy of
	// a channel-sized manifest while it is written.
	w.mu.Lock()
	w.entries = nil
	w.mu.Unlock()
	w.closedWith = m
	if w.vol != nil {
		return w.closeVolumes(ctx, m)
	}
	var staleNarInfos, staleOthers []string
	if w.tw == nil {
		// Listed first: a channel-sized directory's listing and
		// manifest.json are then not held at once.
		var err error
		if staleNarInfos, staleOthers, err = w.stale(ctx, m); err != nil {
			return fmt.Errorf("close bundle %s: %w", w.dir, err)
		}
	}
	data, err := m.Marshal()
	if err != nil {
		return fmt.Errorf("close bundle: %w", err)
	}
	var sig []byte
	if w.opts.Key != nil {
		sig = Sign(data, *w.opts.Key)
	}
	w.data = data
	if w.tw == nil {
		if err := w.dir.Sync(ctx); err != nil {
			return fmt.Errorf("close bundle: %w", err)
		}
		if err := w.prune(ctx, staleNarInfos, staleOthers); err != nil {
			return fmt.Errorf("close bundle %s: %w", w.dir, err)
		}
		// The signature goes first, in a batch of its own: a pack killed
		// or a power cut between the two leaves no manifest, so the
		// bundle reads as unfinished, not as unsigned.
		if sig != nil {
			if err := w.dir.WriteFile(ctx, SigName, sig); err != nil {
				return fmt.Errorf("close bundle: %w", err)
			}
			if err := w.dir.Sync(ctx); err != nil {
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

// Written is the manifest Close wrote, once it returned nil.
func (w *Writer) Written() *Manifest { return w.closedWith }

// Manifest returns the manifest Close would write with header, for what
// was added so far (before Close): pack describes the bundle (an SBOM)
// before it closes it. A zero header.Created means now, so set it to get
// Close's.
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
