package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"

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
	if f, err := s.open(r.Context(), name); err == nil {
		defer f.Close()
		w.Header().Set("Content-Type", "application/json")
		http.ServeContent(w, r, "", f.Info().ModTime, f)
		return nil
	} else if !isMiss(err) {
		return err
	}
	for i, l := range s.layers {
		body, err := s.narinfo(r.Context(), i, l, cache.NarInfoFile(hash), hash)
		if err != nil {
			if isMiss(err) {
				continue
			}
			return err
		}
		listing, err := s.listing(r.Context(), i, l, name, body)
		if err != nil {
			return err
		}
		writeBytes(w, r, "application/json", listing)
		return nil
	}
	return errNotFound
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
		return nil, errNotFound // a NAR elsewhere (an absolute URL)
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
			return nil, errNotFound
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
