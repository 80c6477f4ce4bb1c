package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// layer is one served cache or bundle: a bundle has a manifest.json, a
// cache keeps its imported manifests in nix-airgap/bundles/.
type layer struct {
	dir    string // as configured, for messages
	b      storage.Backend
	bundle bool
	// remote is a layer in an object store, where a stat costs a round
	// trip as a read does: a narinfo is read, not statted, and a miss
	// is remembered as briefly as a hit. Its b is its breaker.
	remote  bool
	breaker *breaker
}

// openLayers opens every configured location and takes the store dir
// from their nix-cache-info files, which must agree.
func (s *Server) openLayers(ctx context.Context) error {
	var first *layer
	for _, dir := range s.cfg.Dirs {
		// A bucket whose store is down fails a request at once, not
		// after retries: a client that gets a 5xx soon goes on to its
		// other substituters.
		if err := bundle.CheckCache(dir, bundle.CacheOrBundle); err != nil {
			return fmt.Errorf("serve %s: %w", dir, err)
		}
		b, err := storage.OpenFailFast(ctx, dir)
		if err != nil {
			return fmt.Errorf("serve: %w", err) // it names dir
		}
		_, local := b.(storage.Mover)
		l := &layer{dir: dir, b: b, remote: !local}
		if l.remote {
			l.breaker = newBreaker(b, dir, s.cfg.Now, s.log)
			l.b = l.breaker
		}
		s.layers = append(s.layers, l)
		sd, err := readStoreDir(ctx, b)
		if errors.As(err, new(*fs.PathError)) {
			return fmt.Errorf("serve: %w", err) // it names the file of dir
		}
		if err != nil {
			return fmt.Errorf("serve %s: %w", dir, err)
		}
		if _, err := b.Stat(ctx, bundle.ManifestName); err == nil {
			l.bundle = true
		} else if !storage.IsNotExist(err) {
			return fmt.Errorf("serve: %w", err) // it names the file of dir
		}
		if first == nil {
			first, s.storeDir = l, sd
		} else if sd != s.storeDir {
			return fmt.Errorf("serve: %s is for store %s but %s is for %s: serve them separately", first.dir, s.storeDir, dir, sd)
		}
	}
	if st := s.cfg.NixStore; st != nil {
		if first == nil {
			s.storeDir = st.Dir()
		} else if st.Dir() != s.storeDir {
			return fmt.Errorf("serve: %s is for store %s but the Nix store is %s: serve them separately", first.dir, s.storeDir, st.Dir())
		}
	}
	return nil
}

// readStoreDir reads StoreDir from a binary cache's nix-cache-info.
func readStoreDir(ctx context.Context, b storage.Backend) (storepath.Dir, error) {
	data, _, err := storage.ReadFile(ctx, b, cache.CacheInfoFile, 1<<16)
	if storage.IsNotExist(err) {
		return "", fmt.Errorf("not a binary cache: no %s (%w)", cache.CacheInfoFile, cache.ErrNotFound)
	}
	if err != nil {
		return "", err
	}
	info, err := cache.ParseCacheInfo(strings.NewReader(string(data)))
	if err != nil {
		return "", fmt.Errorf("%s: %w", cache.CacheInfoFile, err)
	}
	return info.StoreDir, nil
}
