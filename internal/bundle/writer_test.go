package bundle_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// fakePaths makes store paths whose contents are files in a temp dir:
// no Nix needed. a and b have the same content, so the same NAR file.
func fakePaths(t *testing.T) (storepath.Dir, map[storepath.Path]string) {
	dir := storepath.Dir("/nix/store")
	src := t.TempDir()
	out := map[storepath.Path]string{}
	for i, c := range []struct{ base, content string }{
		{"0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-a", "same"},
		{"1a7bjbqy2xhvqzk0h7q4wn8xg0mjrw9m-b", "same"},
		{"2bzq4pxhf4nb4q8xl4qvq0wq6qr6khm5-c", strings.Repeat("other ", 10000)},
	} {
		p, err := dir.Base(c.base)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(src, string(rune('a'+i)))
		if err := os.WriteFile(f, []byte(c.content), 0o644); err != nil {
			t.Fatal(err)
		}
		out[p] = f
	}
	return dir, out
}

func writeFake(t *testing.T, bw *bundle.Writer, paths map[storepath.Path]string) {
	t.Helper()
	writeFakeWith(t, bw, paths, bundle.ManifestHeader{Tool: "test", Mode: role.ModeSources})
}

// writeFakeWith is writeFake with the manifest's header h.
func writeFakeWith(t *testing.T, bw *bundle.Writer, paths map[storepath.Path]string, h bundle.ManifestHeader) {
	t.Helper()
	for p, file := range paths {
		var buf bytes.Buffer
		if err := nar.Dump(&buf, file); err != nil {
			t.Fatal(err)
		}
		if err := bw.AddNAR(context.Background(), p, &buf, bundle.PathMeta{Roles: role.Source, Flat: true}); err != nil {
			t.Fatal(err)
		}
	}
	if err := bw.Close(context.Background(), h); err != nil {
		t.Fatal(err)
	}
}

// fakeDirBundle writes the paths of fakePaths as a bundle directory signed
// by sk, and returns the directory, the store dir and the paths.
func fakeDirBundle(t *testing.T, sk *signing.SecretKey) (bdir string, dir storepath.Dir, paths map[storepath.Path]string) {
	t.Helper()
	dir, paths = fakePaths(t)
	bdir = filepath.Join(t.TempDir(), "b")
	bw, err := bundle.NewDirWriter(bdir, dir, bundle.WriterOptions{Key: sk})
	if err != nil {
		t.Fatal(err)
	}
	writeFake(t, bw, paths)
	return bdir, dir, paths
}

// fakeUpstream writes the paths of fakePaths as a cache signed by upSK,
// playing an upstream cache, and opens it.
func fakeUpstream(t *testing.T, upSK *signing.SecretKey) (upc *cache.Cache, up string, dir storepath.Dir, paths map[storepath.Path]string) {
	t.Helper()
	up, dir, paths = fakeDirBundle(t, upSK)
	upc, err := cache.OpenDir(up)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { upc.Close() })
	return upc, up, dir, paths
}

// copyFrom copies p's NAR file from the upstream upc into bw verbatim.
func copyFrom(t *testing.T, upc *cache.Cache, ni *narinfo.NarInfo, bw *bundle.Writer, meta bundle.PathMeta) error {
	t.Helper()
	f, err := upc.Open(t.Context(), ni.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return bw.AddCompressed(t.Context(), ni, f, meta)
}

// checkSignedBy checks that every path's narinfo in the cache dir carries
// a signature by each key.
func checkSignedBy(t *testing.T, dir string, paths map[storepath.Path]string, keys ...signing.PublicKey) {
	t.Helper()
	c, err := cache.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for p := range paths {
		ni, err := c.NarInfo(t.Context(), p.Hash)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if !ni.Verify(signing.NewKeyring(k)) {
				t.Errorf("%s: sigs %v, none by %s", p, ni.Sigs, k.Name)
			}
		}
	}
}

func TestWriterSharedNARAndReuse(t *testing.T) {
	sk, pk, _ := signing.Generate("test-1")
	opts := bundle.VerifyOptions{Keys: signing.NewKeyring(pk)}
	bdir, dir, paths := fakeDirBundle(t, &sk)
	tarFile := filepath.Join(t.TempDir(), "b.tar")
	tf, _ := os.Create(tarFile)
	tw, err := bundle.NewTarWriter(tf, dir, bundle.WriterOptions{Key: &sk, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	writeFake(t, tw, paths)
	tf.Close()
	for _, src := range []string{bdir, tarFile} {
		rep, err := bundle.Verify(t.Context(), src, opts)
		if err != nil {
			t.Fatalf("Verify %s: %v", src, err)
		}
		if rep.Paths != 3 {
			t.Errorf("Verify %s: %d paths", src, rep.Paths)
		}
	}
	if n, _ := filepath.Glob(filepath.Join(bdir, "nar", "*")); len(n) != 2 {
		t.Errorf("%d NAR files, want 2 (a and b share one)", len(n))
	}

	// Writing again into the directory reuses what verifies and drops what
	// the new bundle does not hold.
	bw, err := bundle.NewDirWriter(bdir, dir, bundle.WriterOptions{Key: &sk})
	if err != nil {
		t.Fatal(err)
	}
	var keep storepath.Path
	for p := range paths {
		if strings.HasSuffix(p.Name, "c") {
			keep = p
		}
	}
	ok, err := bw.Reuse(t.Context(), keep, bundle.PathMeta{Roles: role.Source, Flat: true})
	if err != nil || !ok {
		t.Fatalf("Reuse = %v, %v", ok, err)
	}
	if err := bw.Close(t.Context(), bundle.ManifestHeader{Tool: "test", Mode: role.ModeSources}); err != nil {
		t.Fatal(err)
	}
	rep, err := bundle.Verify(t.Context(), bdir, opts)
	if err != nil || rep.Paths != 1 || rep.Manifest.Paths[0].Flat == nil {
		t.Fatalf("Verify after reuse = %v, %+v", err, rep)
	}
}

func TestNewDirWriterRefusesOtherDirs(t *testing.T) {
	d := t.TempDir()
	os.WriteFile(filepath.Join(d, "precious.txt"), []byte("x"), 0o644)
	if _, err := bundle.NewDirWriter(d, "/nix/store", bundle.WriterOptions{}); err == nil || err.Error() != "write bundle "+d+": not empty and not a bundle" {
		t.Errorf("NewDirWriter of a non-empty directory that is not a bundle = %v, want it refused, naming the directory", err)
	}
	// A pack killed as it wrote nix-cache-info leaves only its temp file.
	d = t.TempDir()
	os.WriteFile(filepath.Join(d, ".tmp-0123456789abcdef"), []byte("StoreDir: /nix/st"), 0o644)
	w, err := bundle.NewDirWriter(d, "/nix/store", bundle.WriterOptions{})
	if err != nil {
		t.Fatalf("NewDirWriter into a killed pack's directory: %v", err)
	}
	w.Close(t.Context(), bundle.ManifestHeader{Tool: "test", Mode: role.ModeSources})
}

// TestAddCompressed copies NAR files verbatim from one bundle (playing an
// upstream cache) into another, keeping the upstream signature, and
// refuses a file that does not match its narinfo.
func TestAddCompressed(t *testing.T) {
	upSK, upPK, _ := signing.Generate("upstream-1")
	sk, pk, _ := signing.Generate("site-1")
	upc, _, dir, paths := fakeUpstream(t, &upSK)

	out := filepath.Join(t.TempDir(), "b.tar")
	tf, _ := os.Create(out)
	bw, err := bundle.NewTarWriter(tf, dir, bundle.WriterOptions{Key: &sk, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	meta := bundle.PathMeta{Roles: role.Source, Flat: true}
	for p := range paths {
		ni, err := upc.NarInfo(t.Context(), p.Hash)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(p.Name, "c") {
			// A corrupt upstream file is refused.
			bad := *ni
			bad.NarHash = storepath.Hash{Algo: storepath.SHA256, Digest: make([]byte, 32)}
			if err := copyFrom(t, upc, &bad, bw, meta); !errors.Is(err, cache.ErrCorrupt) {
				t.Errorf("AddCompressed with a wrong NarHash = %v, want ErrCorrupt", err)
			}
		}
		if err := copyFrom(t, upc, ni, bw, meta); err != nil {
			t.Fatal(err)
		}
	}
	if err := bw.Close(t.Context(), bundle.ManifestHeader{Tool: "test", Mode: role.ModeSources}); err != nil {
		t.Fatal(err)
	}
	tf.Close()
	rep, err := bundle.Verify(t.Context(), out, bundle.VerifyOptions{Keys: signing.NewKeyring(pk)})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range rep.Manifest.Paths {
		if e.Flat == nil {
			t.Errorf("%s: no flat hashes", e.Path)
		}
	}
	// Both signatures are on the imported narinfos.
	cacheDir := filepath.Join(t.TempDir(), "cache")
	if _, err := bundle.Import(t.Context(), out, cacheDir, bundle.ImportOptions{Keys: signing.NewKeyring(pk)}); err != nil {
		t.Fatal(err)
	}
	checkSignedBy(t, cacheDir, paths, upPK, pk)
}

// TestNewDirWriterLocks: a second writer into a directory being written is
// refused, and a new writer removes the temp files a killed one left.
func TestNewDirWriterLocks(t *testing.T) {
	dir, paths := fakePaths(t)
	bdir := filepath.Join(t.TempDir(), "b")
	first, err := bundle.NewDirWriter(bdir, dir, bundle.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bundle.NewDirWriter(bdir, dir, bundle.WriterOptions{}); err == nil || !strings.Contains(err.Error(), "another nix-airgap is writing") {
		t.Errorf("second NewDirWriter = %v, want it refused", err)
	}
	writeFake(t, first, paths)

	stale := []string{filepath.Join(bdir, ".tmp-0123456789abcdef"), filepath.Join(bdir, "nar", ".tmp-fedcba9876543210")}
	for _, p := range stale {
		if err := os.WriteFile(p, []byte("left by a killed pack"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	again, err := bundle.NewDirWriter(bdir, dir, bundle.WriterOptions{})
	if err != nil {
		t.Fatalf("NewDirWriter after the first closed: %v", err)
	}
	defer again.Close(t.Context(), bundle.ManifestHeader{Tool: "test", Mode: role.ModeSources})
	for _, p := range stale {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there: %v", p, err)
		}
	}
}

// TestAddChannel adds a channel, streamed, to both forms: each verifies,
// and its manifest names the channel and its file.
func TestAddChannel(t *testing.T) {
	sk, pk, _ := signing.Generate("channel-test-1")
	keys := signing.NewKeyring(pk)
	tarball := bytes.Repeat([]byte("not really xz, but a file like any other "), 1000)
	dir, paths := fakePaths(t)
	check := func(src string) {
		t.Helper()
		rep, err := bundle.Verify(context.Background(), src, bundle.VerifyOptions{Keys: keys})
		if err != nil {
			t.Fatalf("verify %s: %v", src, err)
		}
		m := rep.Manifest
		if len(m.Channels) != 1 || m.Channels[0] != (bundle.Channel{Name: "nixpkgs", Source: "<nixpkgs>"}) {
			t.Errorf("%s: channels %+v", src, m.Channels)
		}
		found := false
		for _, f := range m.Files {
			found = found || f.Name == "channels/nixpkgs/nixexprs.tar.xz" && f.Size == int64(len(tarball))
		}
		if !found {
			t.Errorf("%s: files %+v lack the channel's", src, m.Files)
		}
	}
	bdir := filepath.Join(t.TempDir(), "b")
	bw, err := bundle.NewDirWriter(bdir, dir, bundle.WriterOptions{Key: &sk})
	if err != nil {
		t.Fatal(err)
	}
	if err := bw.AddChannel("nixpkgs", "<nixpkgs>", bytes.NewReader(tarball)); err != nil {
		t.Fatal(err)
	}
	if err := bw.AddChannel("../x", "", bytes.NewReader(nil)); err == nil {
		t.Error("AddChannel accepted the name ../x")
	}
	writeFake(t, bw, paths)
	check(bdir)

	tarFile := filepath.Join(t.TempDir(), "b.tar")
	f, err := os.Create(tarFile)
	if err != nil {
		t.Fatal(err)
	}
	tw, err := bundle.NewTarWriter(f, dir, bundle.WriterOptions{Key: &sk, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.AddChannel("nixpkgs", "<nixpkgs>", bytes.NewReader(tarball)); err != nil {
		t.Fatal(err)
	}
	writeFake(t, tw, paths)
	f.Close()
	check(tarFile)
}

// TestAdopt: a pack killed after it fetched NAR files, but before their
// narinfos were published, leaves them in its directory; the next pack
// there adopts those that verify against the upstream narinfo, and fetches
// the rest.
func TestAdopt(t *testing.T) {
	upSK, upPK, _ := signing.Generate("upstream-1")
	sk, pk, _ := signing.Generate("site-1")
	upc, up, dir, paths := fakeUpstream(t, &upSK)

	out := filepath.Join(t.TempDir(), "b")
	killed, err := bundle.NewDirWriter(out, dir, bundle.WriterOptions{Key: &sk})
	if err != nil {
		t.Fatal(err)
	}
	killed.Abort()
	// The killed pack left a and b's shared file whole and c's damaged.
	want := map[storepath.Path]bool{}
	for p := range paths {
		ni, err := upc.NarInfo(t.Context(), p.Hash)
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(up, ni.URL))
		if err != nil {
			t.Fatal(err)
		}
		want[p] = !strings.HasSuffix(p.Name, "c")
		if !want[p] {
			data[len(data)/2] ^= 1
		}
		os.MkdirAll(filepath.Join(out, "nar"), 0o755)
		if err := os.WriteFile(filepath.Join(out, ni.URL), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	bw, err := bundle.NewDirWriter(out, dir, bundle.WriterOptions{Key: &sk})
	if err != nil {
		t.Fatal(err)
	}
	meta := bundle.PathMeta{Roles: role.Source, Flat: true}
	for p := range paths {
		ni, err := upc.NarInfo(t.Context(), p.Hash)
		if err != nil {
			t.Fatal(err)
		}
		ok, err := bw.Adopt(t.Context(), ni, meta)
		if err != nil || ok != want[p] {
			t.Errorf("Adopt %s = %v, %v, want %v", p.Name, ok, err, want[p])
		}
		if !ok {
			if err := copyFrom(t, upc, ni, bw, meta); err != nil {
				t.Fatalf("AddCompressed %s over a damaged file: %v", p.Name, err)
			}
		}
	}
	if err := bw.Close(t.Context(), bundle.ManifestHeader{Tool: "test", Mode: role.ModeSources}); err != nil {
		t.Fatal(err)
	}
	rep, err := bundle.Verify(t.Context(), out, bundle.VerifyOptions{Keys: signing.NewKeyring(pk), Deep: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Manifest.Paths) != len(paths) {
		t.Errorf("bundle holds %d paths, want %d", len(rep.Manifest.Paths), len(paths))
	}
	checkSignedBy(t, out, paths, upPK, pk)
}
