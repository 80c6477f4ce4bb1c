package bundle

import (
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"hash"
	"io"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Flat files: the output of a flat fixed-output derivation is one regular
// file, which Nix's hashed mirrors serve by its hash. The manifest records
// that file's hashes (§2, paths[].flat), and serve and check index them.

// FlatHashes are the hashes of the one regular file inside a flat
// fixed-output path's NAR: the hashed-mirror index.
type FlatHashes struct {
	MD5, SHA1, SHA256, SHA512 []byte
}

// Hash returns the digest for algo, or nil.
func (f *FlatHashes) Hash(algo storepath.Algo) []byte {
	switch algo {
	case storepath.MD5:
		return f.MD5
	case storepath.SHA1:
		return f.SHA1
	case storepath.SHA256:
		return f.SHA256
	case storepath.SHA512:
		return f.SHA512
	}
	return nil
}

// flatHasher takes a NAR written to it and hashes the one regular file at
// its root with every algorithm Nix's hashed mirrors use, in a goroutine
// fed through a pipe, so that the NAR passes once.
type flatHasher struct {
	pw   *io.PipeWriter
	done chan struct{}
	flat *FlatHashes
	err  error
}

func newFlatHasher() *flatHasher {
	pr, pw := io.Pipe()
	fh := &flatHasher{pw: pw, done: make(chan struct{})}
	go func() {
		defer close(fh.done)
		fh.flat, fh.err = hashFlat(pr)
		// Let the writer finish even when the NAR was not flat.
		pr.CloseWithError(fh.err)
	}()
	return fh
}

// Write never fails: a hasher that stopped (not a flat NAR) must not stop
// the NAR it is teed from; its error surfaces in finish.
func (fh *flatHasher) Write(p []byte) (int, error) {
	fh.pw.Write(p)
	return len(p), nil
}

func (fh *flatHasher) finish() (*FlatHashes, error) {
	fh.pw.Close()
	<-fh.done
	return fh.flat, fh.err
}

// finishInto finishes fh, if there is one, keeping its hashes in meta,
// and returns err or, when the NAR was not flat, that.
func (fh *flatHasher) finishInto(meta *PathMeta, err error) error {
	if fh == nil {
		return err
	}
	flat, ferr := fh.finish()
	if err == nil && ferr != nil {
		err = fmt.Errorf("flat output: %w", ferr)
	}
	meta.flat = flat
	return err
}

// hashFlat reads a NAR whose root is a regular file and hashes that file.
func hashFlat(r io.Reader) (*FlatHashes, error) {
	fr, _, err := nar.OpenFile(r)
	if err != nil {
		return nil, err
	}
	hs := []hash.Hash{md5.New(), sha1.New(), sha256.New(), sha512.New()}
	// Pooled: a resumed tar or a deep verify hashes thousands of small
	// flat NARs, and a fresh buffer each was most of their cost.
	buf, done := storage.Buffer()
	defer done()
	if _, err := io.CopyBuffer(io.MultiWriter(hs[0], hs[1], hs[2], hs[3]), fr, buf); err != nil {
		return nil, err
	}
	return &FlatHashes{MD5: hs[0].Sum(nil), SHA1: hs[1].Sum(nil), SHA256: hs[2].Sum(nil), SHA512: hs[3].Sum(nil)}, nil
}

// FlatFile is where a flat file lives: in the NAR of a store path.
type FlatFile struct {
	Path storepath.Path
	// URL is the NAR file, relative to the cache: nar/NAME.
	URL         string
	Compression string
}

// FlatIndex is the hashed-mirror index: it maps the hash of a flat file,
// in every algorithm a manifest gives, to the NAR that holds it.
type FlatIndex map[flatKey]FlatFile

type flatKey struct {
	algo   storepath.Algo
	digest string
}

// Add indexes m's flat paths. A hash indexed already keeps its file.
func (ix FlatIndex) Add(m *Manifest) {
	for _, p := range m.Paths {
		if p.Flat == nil {
			continue
		}
		f := FlatFile{Path: p.Path, URL: p.URL, Compression: p.Compression}
		for _, a := range storepath.Algos {
			if d := p.Flat.Hash(a); d != nil {
				k := flatKey{a, string(d)}
				if _, dup := ix[k]; !dup {
					ix[k] = f
				}
			}
		}
	}
}

// Lookup finds the file whose hash is h.
func (ix FlatIndex) Lookup(h storepath.Hash) (FlatFile, bool) {
	f, ok := ix[flatKey{h.Algo, string(h.Digest)}]
	return f, ok
}

// AddStored indexes the manifests of a bundle directory (manifest.json)
// or of a long-lived cache (its records, RecordDir/*.json) kept in b. A
// manifest that cannot be read, or is for another store than dir, goes to
// bad with the reason, and bad's error stops AddStored.
func (ix FlatIndex) AddStored(ctx context.Context, b storage.Backend, dir storepath.Dir, bad func(name string, err error) error) error {
	// A manifest.json that cannot be read is bad, not absent: the
	// flat files it lists would seem missing.
	names := []string{ManifestName}
	for info, err := range b.List(ctx, RecordDir) {
		if err != nil {
			return err
		}
		if !info.Dir && strings.HasSuffix(info.Name, ".json") {
			names = append(names, info.Name)
		}
	}
	for _, name := range names {
		data, _, err := storage.ReadFile(ctx, b, name, MaxManifestSize)
		if name == ManifestName && storage.IsNotExist(err) {
			continue
		}
		var m *Manifest
		if err == nil {
			m, err = ParseManifest(data)
		}
		if err == nil && m.StoreDir != dir {
			err = fmt.Errorf("manifest is for store %s, not %s", m.StoreDir, dir)
		}
		if err != nil {
			if err := bad(name, err); err != nil {
				return err
			}
			continue
		}
		ix.Add(m)
	}
	return nil
}
