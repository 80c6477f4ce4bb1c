package nixstore

import (
	"context"
	"fmt"

	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// entry is what the store says of one valid path, and its narinfo.
type entry struct {
	path    storepath.Path
	narHash storepath.Hash
	narSize uint64
	body    []byte // the narinfo served, signed
}

func (e *entry) cost() int { return len(e.body) + 128 }

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
