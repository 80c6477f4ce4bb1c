package nixstore

import (
	"context"
	"fmt"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// noteCA records a path's content address for the hashed mirror. The
// caller holds s.mu.
func (s *Store) noteCA(hashPart, ca string) {
	s.scanned[hashPart] = true
	if h, ok := narinfo.FlatHash(ca); ok {
		s.flat[flatKey(h)] = hashPart
	}
}

func flatKey(h storepath.Hash) string { return h.Algo.String() + ":" + string(h.Digest) }

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
