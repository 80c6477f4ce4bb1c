package server

import (
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/http"
	"slices"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/nar"
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

// mirrorKey is a flat file's hash: the algorithm and the raw digest.
type mirrorKey struct {
	algo   storepath.Algo
	digest string
}

// mirrorFile is where a flat file lives: the NAR of a store path.
type mirrorFile struct {
	storePath   string
	url         string // relative to the cache: nar/NAME
	compression string
}

// mirrorIndex maps flat file hashes to the store paths that hold them.
type mirrorIndex map[mirrorKey]mirrorFile

// serveMirror answers a hashed-mirror request with the file itself,
// streamed out of its decompressed NAR. HEAD costs the NAR's header only.
func (s *Server) serveMirror(w http.ResponseWriter, r *http.Request, h storepath.Hash) error {
	idx, err := s.mirror.get()
	if err != nil {
		return err
	}
	mf, ok := idx[mirrorKey{h.Algo, string(h.Digest)}]
	if !ok {
		return errNotFound
	}
	name, ok := cache.NarFileName(mf.url)
	if !ok || !validFileName(name) {
		return fmt.Errorf("mirror %s: %s: unusable NAR URL %q", h.SRI(), mf.storePath, mf.url)
	}
	f, err := s.open(mf.url)
	if err != nil {
		if isMiss(err) {
			s.log.Warn("manifest names a missing NAR", "path", mf.storePath, "nar", mf.url)
		}
		return err
	}
	defer f.Close()
	dr, err := compression.NewReader(f, mf.compression)
	if err != nil {
		return fmt.Errorf("mirror %s: %s: %w", h.SRI(), mf.url, err)
	}
	defer dr.Close()
	body, size, err := nar.OpenFile(dr)
	if err != nil {
		return fmt.Errorf("mirror %s: %s: %w", h.SRI(), mf.url, err)
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
		return fmt.Errorf("mirror %s: %s: %w", h.SRI(), mf.url, err)
	}
	if err := checkDigest(hw, h); err != nil {
		// Too late to refuse: the client checks the hash itself, and we
		// tell the operator.
		s.log.Error("mirror file does not match its hash", "hash", h.SRI(), "path", mf.storePath, "err", err)
		return nil
	}
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
// removed: a bundle's manifest.json, a cache's bundles directory.
func (s *Server) mirrorSignature() string {
	var b strings.Builder
	for _, l := range s.layers {
		name := bundle.RecordDir
		if l.bundle {
			name = bundle.ManifestName
		}
		fi, err := l.root.Stat(name)
		if err != nil {
			b.WriteString("-;")
			continue
		}
		fmt.Fprintf(&b, "%d,%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String()
}

// buildMirrorIndex reads every manifest's flat hashes. A manifest that
// cannot be read is logged and skipped: the rest still serve.
func (s *Server) buildMirrorIndex() (mirrorIndex, error) {
	idx := make(mirrorIndex)
	for _, l := range s.layers {
		names := []string{bundle.ManifestName}
		if !l.bundle {
			entries, err := fs.ReadDir(l.root.FS(), bundle.RecordDir)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				s.log.Warn("cannot list imported bundles", "dir", l.dir, "err", err)
			}
			names = names[:0]
			for _, e := range entries {
				if n := e.Name(); strings.HasSuffix(n, ".json") && !strings.HasPrefix(n, ".") {
					names = append(names, bundle.RecordDir+"/"+n)
				}
			}
			slices.Sort(names)
		}
		for _, name := range names {
			if err := s.indexManifest(idx, l, name); err != nil {
				s.log.Warn("skipping manifest for the hashed mirror", "dir", l.dir, "file", name, "err", err)
			}
		}
	}
	s.log.Debug("hashed mirror index built", "files", len(idx)/len(storepath.Algos))
	return idx, nil
}

func (s *Server) indexManifest(idx mirrorIndex, l *layer, name string) error {
	f, err := l.root.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, bundle.MaxManifestSize+1))
	if err != nil {
		return err
	}
	if len(data) > bundle.MaxManifestSize {
		return fmt.Errorf("larger than %d bytes", bundle.MaxManifestSize)
	}
	m, err := bundle.ParseManifest(data)
	if err != nil {
		return err
	}
	if m.StoreDir != s.storeDir {
		return fmt.Errorf("manifest is for store %s, not %s", m.StoreDir, s.storeDir)
	}
	for _, p := range m.Paths {
		if p.Flat == nil {
			continue
		}
		mf := mirrorFile{storePath: p.Path.String(), url: p.URL, compression: p.Compression}
		for _, a := range storepath.Algos {
			d := p.Flat.Hash(a)
			if d == nil {
				continue
			}
			k := mirrorKey{a, string(d)}
			if _, dup := idx[k]; !dup {
				idx[k] = mf
			}
		}
	}
	return nil
}
