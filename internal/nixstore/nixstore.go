// Package nixstore serves the local Nix store as a binary cache, as
// harmonia and nix-serve do. It is the one part of the offline half that
// needs Nix on the machine.
//
// Narinfos come from the store's metadata, asked of Nix through
// internal/nixcli. Requests that arrive while a query runs wait for the
// next one, which asks about all of them at once and about their
// closures, since a client asks for every reference next; the answers
// are kept in memory, signed. NARs are dumped from the store on the fly
// (internal/nar), compressed with zstd or not at all, and streamed, never
// held whole. Flat fixed-output paths are found by the hash of their file,
// for a hashed mirror.
//
// Open also starts asking Nix about every path in the store, in the
// background, so that even the first request for a path is answered from
// memory once that is done. What is in memory stays true: a listing of
// the store directory, read again whenever the directory's modification
// time moves, tells which paths are still there, so a path Nix collected
// is a miss at once.
package nixstore

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Options configure Open. The zero value serves zstd NARs and unsigned
// narinfos (but for the signatures the store holds), asking the nix on
// PATH.
type Options struct {
	// Nix runs the nix programs; nil means a Runner with the process's
	// environment.
	Nix *nixcli.Runner
	// Compression is how NARs are served: compression.Zstd (or "") or
	// compression.None.
	Compression string
	// Key, if set, signs every narinfo, so that clients need to trust
	// only it.
	Key *signing.SecretKey
	// MemoryBytes bounds the narinfos kept in memory; 0 means 128 MiB,
	// about 200,000 of them.
	MemoryBytes int
	// Log receives warnings; nil discards them.
	Log *slog.Logger
}

const (
	defaultMemoryBytes = 128 << 20
	// queryTimeout bounds one nix query, which no request cancels: other
	// requests wait for the same answer.
	queryTimeout = 5 * time.Minute
	// racyWindow: a listing taken this soon after the directory last
	// changed may miss a change made within the same timestamp tick, so
	// it is read again (git's "racy" index entries).
	racyWindow = 100 * time.Millisecond
	// nixParallel is how many nix queries a scan of the store runs at once.
	nixParallel = 2
	// zstdChunk is the input per parallel zstd frame of a served NAR: a
	// few MiB in flight per request, for a ratio within a few percent of
	// one frame.
	zstdChunk = 2 << 20
)

// Store is the local Nix store as a binary cache. It is safe for
// concurrent use.
type Store struct {
	nix    *nixcli.Runner
	dir    storepath.Dir
	comp   string
	ext    string
	key    *signing.SecretKey
	log    *slog.Logger
	memMax int

	listMu sync.Mutex
	list   *listing // immutable once made

	mu      sync.Mutex
	entries map[string]*entry // by hash part
	mem     int
	flat    map[string]string // flat file hash (flatKey) -> hash part
	scanned map[string]bool   // hash parts whose CA the mirror knows
	scanGen uint64            // the listing the last scan covered

	batchMu sync.Mutex
	next    *batch
	running bool

	scanMu sync.Mutex

	stop   context.CancelFunc // stops the background scan
	warmed chan struct{}      // closed when it ends
}

// entry is what the store says of one valid path, and its narinfo.
type entry struct {
	path    storepath.Path
	narHash storepath.Hash
	narSize uint64
	body    []byte // the narinfo served, signed
}

func (e *entry) cost() int { return len(e.body) + 128 }

// listing is the store directory's entries at one moment.
type listing struct {
	gen   uint64
	mtime time.Time // the directory's, read before its entries
	taken time.Time
	names map[string]string // hash part -> base name
}

// Open asks Nix for its store directory and readies the store to serve.
func Open(ctx context.Context, opts Options) (*Store, error) {
	s := &Store{
		nix:     opts.Nix,
		comp:    opts.Compression,
		key:     opts.Key,
		log:     opts.Log,
		memMax:  opts.MemoryBytes,
		entries: map[string]*entry{},
		flat:    map[string]string{},
		scanned: map[string]bool{},
	}
	if s.nix == nil {
		s.nix = &nixcli.Runner{}
	}
	if s.comp == "" {
		s.comp = compression.Zstd
	}
	if s.comp != compression.Zstd && s.comp != compression.None {
		return nil, fmt.Errorf("serve the nix store: compression %q: want %s or %s", s.comp, compression.Zstd, compression.None)
	}
	s.ext, _ = compression.Ext(s.comp)
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.memMax == 0 {
		s.memMax = defaultMemoryBytes
	}
	dir, err := s.nix.StoreDir(ctx)
	if err != nil {
		return nil, fmt.Errorf("serve the nix store: %w", err)
	}
	s.dir = dir
	if _, err := s.current(); err != nil {
		return nil, fmt.Errorf("serve the nix store: %w", err)
	}
	ctx, s.stop = context.WithCancel(context.WithoutCancel(ctx))
	s.warmed = make(chan struct{})
	go func() {
		defer close(s.warmed)
		if err := s.scan(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("cannot read the nix store's metadata ahead: paths are asked about as requested", "err", err)
		}
	}()
	return s, nil
}

// Ready is closed once the background scan Open started is done.
func (s *Store) Ready() <-chan struct{} { return s.warmed }

// Close stops the background scan Open started, and waits for it.
func (s *Store) Close() error {
	s.stop()
	<-s.warmed
	return nil
}

// Dir is the store directory.
func (s *Store) Dir() storepath.Dir { return s.dir }

// errNotFound wraps cache.ErrNotFound, which callers test for.
func errNotFound(what string) error { return fmt.Errorf("%s: %w", what, cache.ErrNotFound) }

// NarInfo returns the narinfo of the valid path with hash part hashPart,
// or an error wrapping cache.ErrNotFound.
func (s *Store) NarInfo(ctx context.Context, hashPart string) ([]byte, error) {
	e, err := s.lookup(ctx, hashPart)
	if err != nil {
		return nil, err
	}
	return e.body, nil
}

// lookup finds what the store says of the path with hashPart: from
// memory if the path is still there, else from Nix.
func (s *Store) lookup(ctx context.Context, hashPart string) (*entry, error) {
	if !storepath.IsHashPart(hashPart) {
		return nil, errNotFound("store path " + hashPart)
	}
	l, err := s.current()
	if err != nil {
		return nil, err
	}
	base, ok := l.names[hashPart]
	if !ok {
		s.forget(hashPart)
		return nil, errNotFound("store path " + hashPart)
	}
	s.mu.Lock()
	e := s.entries[hashPart]
	s.mu.Unlock()
	if e != nil && e.path.Base() == base {
		return e, nil
	}
	p, err := s.dir.Base(base)
	if err != nil {
		return nil, errNotFound(string(s.dir) + "/" + base)
	}
	return s.query(ctx, p)
}

func (s *Store) forget(hashPart string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.entries[hashPart]; ok {
		delete(s.entries, hashPart)
		s.mem -= e.cost()
	}
}

// current returns a listing of the store directory that is no older than
// the call: the last one, if the directory has not changed since, or a
// new one.
func (s *Store) current() (*listing, error) {
	start := time.Now()
	fi, err := os.Stat(string(s.dir))
	if err != nil {
		return nil, fmt.Errorf("list store %s: %w", s.dir, err)
	}
	s.listMu.Lock()
	defer s.listMu.Unlock()
	if l := s.list; l != nil {
		// Taken since the call began, or still what the directory holds.
		if !l.taken.Before(start) || fi.ModTime().Equal(l.mtime) && l.taken.Sub(l.mtime) > racyWindow {
			return l, nil
		}
	}
	l, err := s.readListing()
	if err != nil {
		return nil, err
	}
	l.gen = 1 // a scan of generation 0 is none
	if s.list != nil {
		l.gen = s.list.gen + 1
	}
	s.list = l
	return l, nil
}

func (s *Store) readListing() (*listing, error) {
	f, err := os.Open(string(s.dir))
	if err != nil {
		return nil, fmt.Errorf("list store %s: %w", s.dir, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("list store %s: %w", s.dir, err)
	}
	l := &listing{mtime: fi.ModTime(), taken: time.Now()}
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list store %s: %w", s.dir, err)
	}
	l.names = make(map[string]string, len(names))
	for _, name := range names {
		hash, _, err := storepath.ParseBase(name)
		if err != nil {
			continue // .links, temp files
		}
		// Nix locks an output path with PATH.lock beside it: the
		// shorter name is the path.
		if old, ok := l.names[hash]; ok && len(old) <= len(name) {
			continue
		}
		l.names[hash] = name
	}
	return l, nil
}

// batch is one query to Nix about the paths asked for while the previous
// one ran.
type batch struct {
	paths map[storepath.Path]bool
	done  chan struct{}
	found map[string]*entry // by hash part; set when done closes
	err   error
}

// query asks Nix about p, together with every other path asked about
// meanwhile.
func (s *Store) query(ctx context.Context, p storepath.Path) (*entry, error) {
	s.batchMu.Lock()
	b := s.next
	if b == nil {
		b = &batch{paths: map[storepath.Path]bool{}, done: make(chan struct{})}
		s.next = b
	}
	b.paths[p] = true
	if !s.running {
		s.running = true
		go s.runBatches()
	}
	s.batchMu.Unlock()
	select {
	case <-b.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if b.err != nil {
		return nil, b.err
	}
	if e := b.found[p.Hash]; e != nil && e.path == p {
		return e, nil
	}
	return nil, errNotFound(p.String() + " is not valid")
}

// runBatches runs the waiting batch, then the one that filled meanwhile,
// until none waits.
func (s *Store) runBatches() {
	for {
		s.batchMu.Lock()
		b := s.next
		s.next = nil
		if b == nil {
			s.running = false
			s.batchMu.Unlock()
			return
		}
		s.batchMu.Unlock()
		b.found, b.err = s.fetch(b.paths)
		close(b.done)
	}
}

// fetch asks Nix about the closures of paths and keeps every answer. A
// path that is not valid fails a closure query; then each path is asked
// about alone.
func (s *Store) fetch(paths map[storepath.Path]bool) (map[string]*entry, error) {
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	list := make([]storepath.Path, 0, len(paths))
	for p := range paths {
		list = append(list, p)
	}
	infos, err := nixcli.Chunked(ctx, list, nixParallel, s.nix.ClosurePathInfo)
	if err != nil {
		infos, err = s.validInfos(ctx, list)
	}
	if err != nil {
		return nil, fmt.Errorf("query the nix store: %w", err)
	}
	found := make(map[string]*entry, len(infos))
	for i := range infos {
		if e := s.remember(&infos[i]); e != nil {
			found[e.path.Hash] = e
		}
	}
	return found, nil
}

// validInfos describes those of paths that are valid.
func (s *Store) validInfos(ctx context.Context, paths []storepath.Path) ([]nixcli.PathInfo, error) {
	return nixcli.Chunked(ctx, paths, nixParallel, func(ctx context.Context, ps ...storepath.Path) ([]nixcli.PathInfo, error) {
		infos, _, err := s.nix.ValidPathInfo(ctx, ps...)
		return infos, err
	})
}

// remember makes info's narinfo and keeps it, within the memory budget:
// when full, arbitrary entries go, as they are cheap to ask for again.
func (s *Store) remember(info *nixcli.PathInfo) *entry {
	ni := &narinfo.NarInfo{
		StorePath:   info.Path,
		URL:         NARURL(info.Path, info.NarHash, s.ext),
		Compression: s.comp,
		NarHash:     info.NarHash,
		NarSize:     info.NarSize,
		References:  info.References,
		Deriver:     info.Deriver,
		CA:          info.CA,
	}
	for _, sig := range info.Signatures {
		// The store's signatures (from the caches it substituted from)
		// stay valid: they cover the NAR, however it is served.
		if s, err := signing.ParseSignature(sig); err == nil {
			ni.Sigs = append(ni.Sigs, s)
		}
	}
	if s.key != nil {
		ni.Sign(*s.key)
	}
	body, err := ni.MarshalText()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noteCA(info.Path.Hash, info.CA)
	if err != nil {
		s.log.Warn("cannot serve a store path", "path", info.Path.String(), "err", err)
		return nil
	}
	e := &entry{path: info.Path, narHash: info.NarHash, narSize: info.NarSize, body: body}
	if old, ok := s.entries[e.path.Hash]; ok {
		s.mem -= old.cost()
	}
	for k, old := range s.entries {
		if s.mem+e.cost() <= s.memMax {
			break
		}
		delete(s.entries, k)
		s.mem -= old.cost()
	}
	s.entries[e.path.Hash] = e
	s.mem += e.cost()
	return e
}

// noteCA records a path's content address for the hashed mirror. The
// caller holds s.mu.
func (s *Store) noteCA(hashPart, ca string) {
	s.scanned[hashPart] = true
	if h, ok := narinfo.FlatHash(ca); ok {
		s.flat[flatKey(h)] = hashPart
	}
}

func flatKey(h storepath.Hash) string { return h.Algo.String() + ":" + string(h.Digest) }

// NARURL is the URL of p's NAR in a narinfo: nar/HASHPART-NARHASH.nar
// and the compression's extension, NARHASH in nix32. The NAR hash lets
// OpenNAR refuse a path that changed since its narinfo was served (one
// collected and built again, differently).
func NARURL(p storepath.Path, narHash storepath.Hash, ext string) string {
	return cache.NarDir + "/" + p.Hash + "-" + narHash.Nix32() + ".nar" + ext
}

// parseNARName splits a name NARURL made, after nar/.
func parseNARName(name string) (hashPart, narHash32, comp string, ok bool) {
	hashPart, rest, ok := strings.Cut(name, "-")
	if !ok || !storepath.IsHashPart(hashPart) {
		return "", "", "", false
	}
	narHash32, ext, ok := strings.Cut(rest, ".nar")
	if !ok || len(narHash32) != 52 {
		return "", "", "", false
	}
	switch ext {
	case "":
		comp = compression.None
	case ".zst":
		comp = compression.Zstd
	default:
		return "", "", "", false
	}
	return hashPart, narHash32, comp, true
}

// IsNARName reports whether name, under nar/, is the name of a NAR this
// package serves (not a cache's file).
func IsNARName(name string) bool {
	_, _, _, ok := parseNARName(name)
	return ok
}

// NAR is a store path's NAR, ready to be dumped.
type NAR struct {
	path    storepath.Path
	narHash storepath.Hash
	narSize uint64
	comp    string
	store   *Store
}

// OpenNAR finds the NAR a narinfo's URL names (name is what follows
// nar/). A path no longer there, or no longer the one the URL names, is
// an error wrapping cache.ErrNotFound.
func (s *Store) OpenNAR(ctx context.Context, name string) (*NAR, error) {
	hashPart, narHash32, comp, ok := parseNARName(name)
	if !ok {
		return nil, errNotFound("NAR " + name)
	}
	e, err := s.lookup(ctx, hashPart)
	if err != nil {
		return nil, err
	}
	if e.narHash.Nix32() != narHash32 {
		return nil, errNotFound(fmt.Sprintf("NAR %s: %s has NAR hash %s now", name, e.path, e.narHash))
	}
	if _, err := os.Lstat(e.path.String()); err != nil {
		return nil, fmt.Errorf("NAR %s: %w", name, err)
	}
	return &NAR{path: e.path, narHash: e.narHash, narSize: e.narSize, comp: comp, store: s}, nil
}

// Path is the store path dumped.
func (n *NAR) Path() storepath.Path { return n.path }

// Size is the length of what Dump writes, or -1 when compressed, as it
// is then not known before.
func (n *NAR) Size() int64 {
	if n.comp == compression.None {
		return int64(n.narSize)
	}
	return -1
}

// Dump writes the NAR into w, compressed, hashing it as it goes. A NAR
// that differs from the store's record (the path was changed on disk) is
// an error wrapping cache.ErrCorrupt, once all of it is written: the
// caller must make sure the reader does not take it as complete.
func (n *NAR) Dump(w io.Writer) error {
	var dst io.WriteCloser
	var bw *bufio.Writer
	if n.comp == compression.None {
		// The dump writes headers and padding in pieces of bytes.
		bw = bufio.NewWriterSize(w, 256<<10)
		dst = nopCloser{bw}
	} else {
		zw, err := compression.NewWriter(w, n.comp, compression.WriterOptions{ChunkSize: zstdChunk, SizeHint: int64(n.narSize)})
		if err != nil {
			return err
		}
		dst = zw
	}
	hw := nar.NewHashWriter(dst)
	err := nar.Dump(hw, n.path.String())
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if bw != nil && err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return err
	}
	if sum := hw.Sum(); !sum.Equal(n.narHash) || uint64(hw.Size()) != n.narSize {
		n.store.forget(n.path.Hash)
		return fmt.Errorf("dump %s: %w: NAR hash %s (%d bytes), but the store's record says %s (%d bytes)", n.path, cache.ErrCorrupt, sum, hw.Size(), n.narHash, n.narSize)
	}
	return nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// FlatFile returns the valid flat fixed-output path whose file hashes to
// h, for a hashed mirror, or an error wrapping cache.ErrNotFound. The
// first call asks Nix about every path in the store, later ones only
// about paths that appeared since.
func (s *Store) FlatFile(ctx context.Context, h storepath.Hash) (storepath.Path, error) {
	if err := s.scan(ctx); err != nil {
		return storepath.Path{}, err
	}
	s.mu.Lock()
	hashPart, ok := s.flat[flatKey(h)]
	s.mu.Unlock()
	if !ok {
		return storepath.Path{}, errNotFound("flat file " + h.SRI())
	}
	e, err := s.lookup(ctx, hashPart)
	if err != nil {
		return storepath.Path{}, err
	}
	return e.path, nil
}

// scan brings what the store keeps in memory (narinfos, within the
// memory budget, and every path's content address, for the hashed mirror)
// up to date with the current listing.
func (s *Store) scan(ctx context.Context) error {
	s.scanMu.Lock()
	defer s.scanMu.Unlock()
	l, err := s.current()
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.scanGen == l.gen {
		s.mu.Unlock()
		return nil
	}
	for hp := range s.scanned {
		if _, ok := l.names[hp]; !ok {
			delete(s.scanned, hp)
		}
	}
	for k, hp := range s.flat {
		if _, ok := l.names[hp]; !ok {
			delete(s.flat, k)
		}
	}
	var todo []storepath.Path
	for hp, base := range l.names {
		if !s.scanned[hp] {
			if p, err := s.dir.Base(base); err == nil {
				todo = append(todo, p)
			}
		}
	}
	s.mu.Unlock()
	if len(todo) > 0 {
		start := time.Now()
		infos, err := s.validInfos(ctx, todo)
		if err != nil {
			return fmt.Errorf("scan the nix store: %w", err)
		}
		for i := range infos {
			s.remember(&infos[i])
		}
		s.log.Debug("read the nix store's metadata", "paths", len(todo), "valid", len(infos), "duration", time.Since(start))
	}
	s.mu.Lock()
	s.scanGen = l.gen
	s.mu.Unlock()
	return nil
}
