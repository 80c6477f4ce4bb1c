package server

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// layer is one served directory: a bundle (it has a manifest.json) or a
// cache (its imported manifests are in nix-airgap/bundles/).
type layer struct {
	dir    string // as configured, for messages
	root   *os.Root
	bundle bool
}

// openLayers opens every configured directory and takes the store dir
// from their nix-cache-info files, which must agree.
func (s *Server) openLayers() error {
	var first *layer
	for _, dir := range s.cfg.Dirs {
		root, err := os.OpenRoot(dir)
		if err != nil {
			return fmt.Errorf("serve %s: %w", dir, err)
		}
		l := &layer{dir: dir, root: root}
		s.layers = append(s.layers, l)
		sd, err := readStoreDir(root)
		if err != nil {
			return fmt.Errorf("serve %s: %w", dir, err)
		}
		if _, err := root.Stat(bundle.ManifestName); err == nil {
			l.bundle = true
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("serve %s: %w", dir, err)
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
func readStoreDir(root *os.Root) (storepath.Dir, error) {
	f, err := root.Open(cache.CacheInfoFile)
	if err != nil {
		return "", fmt.Errorf("not a binary cache: %w", err)
	}
	defer f.Close()
	info, err := cache.ParseCacheInfo(io.LimitReader(f, 1<<16))
	if err != nil {
		return "", fmt.Errorf("%s: %w", cache.CacheInfoFile, err)
	}
	return info.StoreDir, nil
}
