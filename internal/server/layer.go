package server

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

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
	bundle atomic.Bool // set once, maybe after start for a bucket
	// remote is a layer in an object store, where a stat costs a round
	// trip as a read does: a narinfo is read, not statted, and a miss
	// is remembered as briefly as a hit. Its b is its breaker.
	remote  bool
	breaker *breaker
}

// openLayers opens every configured location and takes the store dir
// from their nix-cache-info files, which must agree. A bucket whose
// store does not answer (storage.ErrUnavailable) does not stop serve
// starting if another layer opens, so that a replica restarted while
// its object store is down serves what its other layers hold: the bucket
// starts down and is read when its store first answers, and left out if
// it is not for the store dir being served (admit). Anything else (no
// bucket, credentials refused, no nix-cache-info) is a mistake in the
// configuration and stops serve.
func (s *Server) openLayers(ctx context.Context) error {
	var first *layer
	var down []*layer
	var downErr []error
	for _, dir := range s.cfg.Dirs {
		if err := bundle.CheckCache(dir, bundle.CacheOrBundle); err != nil {
			return fmt.Errorf("serve %s: %w", dir, err)
		}
		// A bucket whose store is down fails a request at once, not
		// after retries: a client that gets a 5xx soon goes on to its
		// other substituters.
		b, err := storage.OpenFailFast(ctx, dir)
		if err != nil {
			return fmt.Errorf("serve: %w", err) // it names dir
		}
		l := &layer{dir: dir, b: b}
		if _, local := b.(storage.Mover); !local {
			l.breaker = newBreaker(b, dir, s.cfg.Now, s.log)
			l.b, l.remote = l.breaker, true
		}
		s.layers = append(s.layers, l)
		sd, isBundle, err := readLayer(ctx, dir, b)
		if l.remote && errors.Is(err, storage.ErrUnavailable) {
			down, downErr = append(down, l), append(downErr, err)
			continue
		}
		if err != nil {
			return err
		}
		l.bundle.Store(isBundle)
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
	} else if first == nil {
		return downErr[0] // none opened: the first's failure
	}
	for i, l := range down {
		l.breaker.startDown(downErr[i], func(ctx context.Context) error { return s.admit(ctx, l) })
	}
	return nil
}

// admit reads a layer whose store did not answer at start, once it does.
// Its store dir must be the one being served: serve's nix-cache-info,
// which clients have read already, does not change.
func (s *Server) admit(ctx context.Context, l *layer) error {
	sd, isBundle, err := readLayer(ctx, l.dir, l.breaker.Backend)
	if err != nil {
		return err
	}
	if sd != s.storeDir {
		return fmt.Errorf("serve: %s is for store %s but the layers served are for %s: serve them separately", l.dir, sd, s.storeDir)
	}
	l.bundle.Store(isBundle)
	return nil
}

// readLayer reads what serve needs of the cache or bundle at dir: its
// store dir, and whether it is a bundle. Its errors read as every
// command's that opens a cache (bundle.CacheOpenError).
func readLayer(ctx context.Context, dir string, b storage.Backend) (storepath.Dir, bool, error) {
	c, err := cache.OpenBackend(ctx, b)
	if err != nil {
		return "", false, bundle.CacheOpenError("serve", dir, err)
	}
	c.Close() // b stays open: the layer serves from it
	_, err = b.Stat(ctx, bundle.ManifestName)
	if err != nil && !storage.IsNotExist(err) {
		return "", false, fmt.Errorf("serve: %w", err) // it names the file of dir
	}
	return c.StoreDir(), err == nil, nil
}
