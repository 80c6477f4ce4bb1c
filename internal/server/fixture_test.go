package server_test

import (
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// fixture is a cache or bundle directory written in-process, for tests of
// the HTTP behaviour that need no Nix. Tests against real Nix build theirs
// with nix copy.
type fixture struct {
	t        *testing.T
	dir      string
	storeDir storepath.Dir
	key      signing.SecretKey
	manifest bundle.Manifest
	// paths maps each added path's name to its narinfo and NAR bytes.
	infos map[string]*narinfo.NarInfo
	nars  map[string][]byte
}

func newFixture(t *testing.T, storeDir storepath.Dir, key signing.SecretKey) *fixture {
	t.Helper()
	dir := t.TempDir()
	info := "StoreDir: " + string(storeDir) + "\nWantMassQuery: 1\nPriority: 40\n"
	writeFile(t, filepath.Join(dir, "nix-cache-info"), []byte(info))
	return &fixture{
		t: t, dir: dir, storeDir: storeDir, key: key,
		manifest: bundle.Manifest{Tool: "test", Created: time.Unix(0, 0).UTC(), StoreDir: storeDir, Mode: role.ModeRuntime},
		infos:    map[string]*narinfo.NarInfo{},
		nars:     map[string][]byte{},
	}
}

func writeFile(t testing.TB, name string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// addFlat adds a flat fixed-output path holding one file, compressed as
// compression, and returns its store path.
func (f *fixture) addFlat(name string, contents []byte, compression string) storepath.Path {
	f.t.Helper()
	var buf bytes.Buffer
	nw := nar.NewWriter(&buf)
	if err := nw.WriteHeader(&nar.Header{Path: "/", Type: nar.TypeRegular, Size: int64(len(contents))}); err != nil {
		f.t.Fatal(err)
	}
	nw.Write(contents)
	if err := nw.Close(); err != nil {
		f.t.Fatal(err)
	}
	sum := sha256.Sum256(contents)
	h, _ := storepath.NewHash(storepath.SHA256, sum[:])
	p, err := f.storeDir.MakeFixedOutput(storepath.Flat, h, name)
	if err != nil {
		f.t.Fatal(err)
	}
	md := md5.Sum(contents)
	s1 := sha1.Sum(contents)
	s5 := sha512.Sum512(contents)
	flat := &bundle.FlatHashes{MD5: md[:], SHA1: s1[:], SHA256: sum[:], SHA512: s5[:]}
	f.add(p, buf.Bytes(), compression, "fixed:"+h.String(), flat)
	return p
}

// addDir adds an input-addressed path whose NAR is a directory.
func (f *fixture) addDir(name string) storepath.Path {
	f.t.Helper()
	var buf bytes.Buffer
	nw := nar.NewWriter(&buf)
	nw.WriteHeader(&nar.Header{Path: "/", Type: nar.TypeDirectory})
	nw.WriteHeader(&nar.Header{Path: "/hello", Type: nar.TypeRegular, Size: 3})
	nw.Write([]byte("hi\n"))
	if err := nw.Close(); err != nil {
		f.t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(name))
	h, _ := storepath.NewHash(storepath.SHA256, sum[:])
	p, err := f.storeDir.Make("output:out", h, name)
	if err != nil {
		f.t.Fatal(err)
	}
	f.add(p, buf.Bytes(), "xz", "", nil)
	return p
}

func (f *fixture) add(p storepath.Path, narBytes []byte, compression, ca string, flat *bundle.FlatHashes) {
	f.t.Helper()
	var file bytes.Buffer
	switch compression {
	case "none":
		file.Write(narBytes)
	case "zstd":
		zw, _ := zstd.NewWriter(&file)
		zw.Write(narBytes)
		zw.Close()
	case "xz":
		xw, _ := xz.NewWriter(&file)
		xw.Write(narBytes)
		xw.Close()
	default:
		f.t.Fatalf("compression %s", compression)
	}
	fileSum := sha256.Sum256(file.Bytes())
	fileHash, _ := storepath.NewHash(storepath.SHA256, fileSum[:])
	narSum := sha256.Sum256(narBytes)
	narHash, _ := storepath.NewHash(storepath.SHA256, narSum[:])
	ext := map[string]string{"none": "", "zstd": ".zst", "xz": ".xz"}[compression]
	url := "nar/" + fileHash.Nix32() + ".nar" + ext
	writeFile(f.t, filepath.Join(f.dir, url), file.Bytes())
	ni := &narinfo.NarInfo{
		StorePath: p, URL: url, Compression: compression,
		FileHash: fileHash, FileSize: uint64(file.Len()),
		NarHash: narHash, NarSize: uint64(len(narBytes)), CA: ca,
	}
	ni.Sign(f.key)
	text, err := ni.MarshalText()
	if err != nil {
		f.t.Fatal(err)
	}
	writeFile(f.t, filepath.Join(f.dir, p.Hash+".narinfo"), text)
	f.infos[p.Name] = ni
	f.nars[p.Name] = file.Bytes()
	f.manifest.Paths = append(f.manifest.Paths, bundle.PathEntry{
		Path: p, NarHash: narHash, NarSize: ni.NarSize, URL: url, FileHash: fileHash, FileSize: ni.FileSize,
		Compression: compression, CA: ca, Roles: role.Runtime, Flat: flat,
	})
}

// writeManifest writes the manifest as a bundle's manifest.json or, with
// cache set, as an imported bundle's record.
func (f *fixture) writeManifest(cache bool) {
	f.t.Helper()
	data, err := f.manifest.Marshal()
	if err != nil {
		f.t.Fatal(err)
	}
	name := filepath.Join(f.dir, bundle.ManifestName)
	if cache {
		name = filepath.Join(f.dir, "nix-airgap/bundles", bundle.RecordName(bundle.ID(data)))
	}
	writeFile(f.t, name, data)
}
