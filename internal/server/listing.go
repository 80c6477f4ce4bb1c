package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// serveListing answers /HASHPART.ls with the path's NAR listing, the JSON
// tree of its files that Nix writes next to a NAR with write-nar-listing
// and that tools browsing a binary cache read. A served directory's own
// .ls file wins; otherwise the listing is made from the NAR that the
// narinfo names, once per NAR file, and kept in memory. (Nix's own nix
// store ls and nix store cat fetch the whole NAR instead.)
func (s *Server) serveListing(w http.ResponseWriter, r *http.Request, hash string) error {
	if !storepath.IsHashPart(hash) {
		return badRequest("invalid store path hash")
	}
	name := cache.ListingFile(hash)
	f, err := s.open(r.Context(), name)
	if err == nil {
		defer f.Close()
		w.Header().Set("Content-Type", cache.ListingType)
		http.ServeContent(w, r, "", f.Info().ModTime, f)
		return nil
	}
	// As for narinfos, a layer that cannot be read does not stop the
	// others answering, but if none can, the answer is its failure.
	var m misses
	m.add(err)
	for i, l := range s.layers {
		body, err := s.narinfo(r.Context(), i, l, cache.NarInfoFile(hash), hash)
		if err == nil {
			var listing []byte
			if listing, err = s.listing(r.Context(), i, l, name, body); err == nil {
				writeBytes(w, r, cache.ListingType, listing)
				return nil
			}
		}
		m.add(err)
	}
	failed := m.err()
	if s.cfg.NixStore == nil {
		return failed
	}
	listing, err := s.storeListing(r.Context(), hash)
	if isMiss(err) {
		return failed
	}
	if err != nil {
		return err
	}
	writeBytes(w, r, cache.ListingType, listing)
	return nil
}

// storeListing returns the listing of a Nix store path, made from its
// NAR dumped once and kept in memory under the NAR's URL, which names
// its NAR hash: a path that changes gets a new listing.
func (s *Server) storeListing(ctx context.Context, hash string) ([]byte, error) {
	body, err := s.cfg.NixStore.NarInfo(ctx, hash)
	if err != nil {
		return nil, err
	}
	ni, err := narinfo.Parse(bytes.NewReader(body), s.storeDir)
	if err != nil {
		return nil, err
	}
	name, _ := cache.NarFileName(ni.URL)
	name, _, _ = strings.Cut(name, ".nar")
	name += ".nar" // the uncompressed dump
	key := narinfoKey{layer: -1, name: hash}
	now := s.cfg.Now().UnixNano()
	if body, ok := s.listings.get(key, name, now); ok {
		return body, nil
	}
	v, err, _ := s.listingCalls.Do("store/"+name, func() (any, error) {
		n, err := s.cfg.NixStore.OpenNAR(ctx, name)
		if err != nil {
			return nil, err
		}
		pr, pw := io.Pipe()
		dumped := make(chan error, 1)
		go func() {
			err := n.Dump(pw)
			pw.CloseWithError(err)
			dumped <- err
		}()
		root, err := nar.List(pr)
		pr.Close()
		if derr := <-dumped; err == nil {
			err = derr
		}
		if err != nil {
			// Changed on disk since Nix recorded it: no listing, as
			// for a cache's NAR that does not read.
			s.log.Warn("cannot list store path", "path", n.Path(), "err", err)
			return nil, cache.ErrNotFound
		}
		var b bytes.Buffer
		if err := nar.WriteListing(&b, root); err != nil {
			return nil, err
		}
		s.listings.put(key, name, b.Bytes(), now)
		return b.Bytes(), nil
	})
	if err != nil {
		return nil, err
	}
	return v.([]byte), nil
}

// listing returns the listing of the NAR that layer i's narinfo body
// names, from the cache or made now. Requests for one listing at once
// make it once.
func (s *Server) listing(ctx context.Context, i int, l *layer, name string, narinfoBody []byte) ([]byte, error) {
	ni, err := narinfo.Parse(bytes.NewReader(narinfoBody), s.storeDir)
	if err != nil {
		return nil, err
	}
	if storage.CheckName(ni.URL) != nil {
		return nil, cache.ErrNotFound // a NAR elsewhere (an absolute URL)
	}
	f, err := l.b.Open(ctx, ni.URL)
	if err != nil {
		return nil, err // missing: a miss
	}
	defer f.Close()
	key := narinfoKey{layer: i, name: name}
	id := f.Info().Version
	now := s.cfg.Now().UnixNano()
	if body, ok := s.listings.get(key, id, now); ok {
		return body, nil
	}
	v, err, _ := s.listingCalls.Do(fmt.Sprint(i, "/", name), func() (any, error) {
		if body, ok := s.listings.get(key, id, now); ok {
			return body, nil
		}
		body, err := makeListing(f, ni.Compression)
		if err != nil {
			// A NAR that does not read is for the checker to report;
			// to a client it is a path without a listing.
			s.log.Warn("cannot list NAR", "dir", l.dir, "file", ni.URL, "err", err)
			return nil, cache.ErrNotFound
		}
		s.listings.put(key, id, body, now)
		return body, nil
	})
	if err != nil {
		return nil, err
	}
	return v.([]byte), nil
}

// makeListing decompresses a NAR file and lists it.
func makeListing(f io.Reader, compressionName string) ([]byte, error) {
	dec, err := compression.NewReader(f, compressionName)
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	root, err := nar.List(dec)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := nar.WriteListing(&b, root); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
