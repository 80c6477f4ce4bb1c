package server

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// ParseMirrorPath parses the path of a hashed-mirror request, in any
// spelling clients use:
//
//	/ALGO/DIGEST      Nix's hashed-mirrors and nixpkgs' fetchurl; DIGEST in
//	                  hex, nix32 or base64 (which may hold '/')
//	/ALGO-BASE64      SRI
//	//ALGO-BASE64     nixpkgs' fetchurl with an SRI hash (empty algo)
//
// ALGO is md5, sha1, sha256 or sha512.
func ParseMirrorPath(p string) (storepath.Hash, bool) {
	rest, ok := strings.CutPrefix(p, "/")
	if !ok {
		return storepath.Hash{}, false
	}
	sri := false
	if r, ok := strings.CutPrefix(rest, "/"); ok {
		rest, sri = r, true
	}
	slash, dash := strings.IndexByte(rest, '/'), strings.IndexByte(rest, '-')
	if slash >= 0 && (dash < 0 || slash < dash) && !sri {
		algo, digest := rest[:slash], rest[slash+1:]
		a, err := storepath.ParseAlgo(algo)
		if err != nil {
			return storepath.Hash{}, false
		}
		h, err := storepath.ParseDigest(a, digest)
		return h, err == nil
	}
	algo, b64, ok := strings.Cut(rest, "-")
	if !ok {
		return storepath.Hash{}, false
	}
	a, err := storepath.ParseAlgo(algo)
	if err != nil {
		return storepath.Hash{}, false
	}
	// ParseHash's SRI branch: strict base64 of exactly the digest size.
	h, err := storepath.ParseHash(a.String() + "-" + b64)
	if err != nil || strings.ContainsAny(b64, "\r\n") {
		return storepath.Hash{}, false
	}
	return h, true
}

// serveMirror answers a hashed-mirror request with the file itself,
// streamed out of its decompressed NAR. HEAD costs the NAR's header only.
func (s *Server) serveMirror(w http.ResponseWriter, r *http.Request, h storepath.Hash) error {
	idx, err := s.mirror.get()
	if err != nil {
		return err
	}
	mf, ok := idx.Lookup(h)
	missed := error(cache.ErrNotFound)
	if ok {
		// Without a narinfo its path was collected since (gc keeps
		// the records of bundles with some path left): a plain miss.
		// A layer that cannot say is no miss.
		missed = s.hasNarInfo(r.Context(), mf.Path.Hash)
	}
	if missed != nil {
		if s.cfg.NixStore != nil {
			if err := s.serveStoreFlat(w, r, h); isMiss(missed) || !isMiss(err) {
				return err
			}
		}
		return missed
	}
	name, ok := cache.NarFileName(mf.URL)
	if !ok || !validFileName(name) {
		return fmt.Errorf("mirror %s: %s: unusable NAR URL %q", h.SRI(), mf.Path, mf.URL)
	}
	f, err := s.open(r.Context(), mf.URL)
	if err != nil {
		if isMiss(err) {
			s.log.Warn("manifest names a missing NAR", "path", mf.Path.String(), "nar", mf.URL)
		}
		return err
	}
	defer f.Close()
	dr, err := compression.NewReader(f, mf.Compression)
	if err != nil {
		return fmt.Errorf("mirror %s: %s: %w", h.SRI(), mf.URL, err)
	}
	defer dr.Close()
	body, size, err := nar.OpenFile(dr)
	if err != nil {
		return fmt.Errorf("mirror %s: %s: %w", h.SRI(), mf.URL, err)
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "application/octet-stream")
	hdr.Set("Content-Length", itoa(size))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return nil
	}
	hw := h.Algo.New()
	if _, err := io.Copy(w, io.TeeReader(body, hw)); err != nil {
		return fmt.Errorf("mirror %s: %s: %w", h.SRI(), mf.URL, err)
	}
	if err := checkDigest(hw, h); err != nil {
		// Too late to refuse: the client checks the hash itself, and we
		// tell the operator.
		s.log.Error("mirror file does not match its hash", "hash", h.SRI(), "path", mf.Path.String(), "err", err)
		return nil
	}
	s.metrics.mirrorFiles.Add(1)
	return nil
}

// hasNarInfo returns nil if a layer has the narinfo of the path with
// hash part hash, else what serveNarInfoFile answers (misses).
func (s *Server) hasNarInfo(ctx context.Context, hash string) error {
	var m misses
	for _, l := range s.layers {
		_, err := l.b.Stat(ctx, cache.NarInfoFile(hash))
		if err == nil {
			return nil
		}
		m.add(err)
	}
	return m.err()
}

// serveStoreFlat answers a hashed-mirror request with a flat fixed-output
// path of the Nix store: the path is the file.
func (s *Server) serveStoreFlat(w http.ResponseWriter, r *http.Request, h storepath.Hash) error {
	p, err := s.cfg.NixStore.FlatFile(r.Context(), h)
	if err != nil {
		return err
	}
	f, err := os.Open(p.String())
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("mirror %s: %s is not a regular file", h.SRI(), p)
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	// Store files all date from 1970: no Last-Modified.
	http.ServeContent(w, r, "", time.Time{}, f)
	s.metrics.mirrorFiles.Add(1)
	return nil
}

func checkDigest(hw hash.Hash, want storepath.Hash) error {
	if got := hw.Sum(nil); string(got) != string(want.Digest) {
		return fmt.Errorf("got %s:%s", want.Algo, hex.EncodeToString(got))
	}
	return nil
}

// mirrorSignature changes when a manifest may have been added, replaced or
// removed: a bundle's manifest.json, the records in a cache's bundles
// directory.
func (s *Server) mirrorSignature() string {
	ctx := context.Background()
	var b strings.Builder
	for _, l := range s.layers {
		if l.bundle.Load() {
			fi, err := l.b.Stat(ctx, bundle.ManifestName)
			if err != nil {
				b.WriteString("-;")
				continue
			}
			fmt.Fprintf(&b, "%s;", fi.Version)
			continue
		}
		for fi, err := range l.b.List(ctx, bundle.RecordDir) {
			if err != nil {
				b.WriteString("!")
				continue
			}
			fmt.Fprintf(&b, "%s=%s,", fi.Name, fi.Version)
		}
		b.WriteString(";")
	}
	return b.String()
}

// buildMirrorIndex reads every manifest's flat hashes. A manifest that
// cannot be read is logged and skipped: the rest still serve. A store
// that does not answer fails the build, and the index built before
// serves on: its files would all seem missing.
func (s *Server) buildMirrorIndex() (bundle.FlatIndex, error) {
	idx := bundle.FlatIndex{}
	for _, l := range s.layers {
		err := idx.AddStored(context.Background(), l.b, s.storeDir, func(name string, err error) error {
			if errors.Is(err, storage.ErrUnavailable) {
				return err
			}
			s.log.Warn("skipping manifest for the hashed mirror", "dir", l.dir, "file", name, "err", err)
			return nil
		})
		if errors.Is(err, storage.ErrUnavailable) {
			return nil, err
		}
		if err != nil {
			s.log.Warn("skipping manifests for the hashed mirror", "dir", l.dir, "err", err)
		}
	}
	s.log.Debug("hashed mirror index built", "files", len(idx)/len(storepath.Algos))
	return idx, nil
}
