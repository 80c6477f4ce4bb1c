package cache_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// nixPaths fills n's store with a source directory (executable, symlink,
// subdirectory, a compressible 2 MiB file), a derivation output that refers
// to it, one that refers to itself, and a text file, and returns what Nix
// knows about them.
func nixPaths(t *testing.T, n *nixtest.Nix) []nixcli.PathInfo {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	must(t, os.MkdirAll(filepath.Join(src, "sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "run"), []byte("#!/bin/sh\necho hi\n"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "sub", "big"), []byte(strings.Repeat("a fairly compressible line of text\n", 60000)), 0o644))
	must(t, os.Symlink("sub/big", filepath.Join(src, "link")))
	expr := filepath.Join(dir, "default.nix")
	must(t, os.WriteFile(expr, []byte(`let src = ./src; sh = script: { system = builtins.currentSystem; builder = "/bin/busybox"; args = [ "sh" "-c" script ]; }; in {
  withRefs = derivation (sh "echo ${src} > $out" // { name = "with-refs"; });
  selfRef = derivation (sh "mkdir $out; echo $out > $out/self" // { name = "self-ref"; });
  text = builtins.toFile "text" "refers to ${src}";
}`), 0o644))
	outs := strings.Fields(n.Run(t, "nix-build", "--no-out-link", expr, "-A", "withRefs", "-A", "selfRef"))
	outs = append(outs, n.Run(t, "nix", "eval", "--raw", "-f", expr, "text"))
	r := &nixcli.Runner{Env: n.Env, KnownStoreDir: n.StoreDir}
	var paths []storepath.Path
	for _, o := range outs {
		p, err := n.StoreDir.Parse(o)
		must(t, err)
		paths = append(paths, p)
	}
	closure, err := r.Requisites(t.Context(), paths...)
	must(t, err)
	infos, err := r.PathInfo(t.Context(), closure...)
	must(t, err)
	if len(infos) != 4 {
		t.Fatalf("closure has %d paths, want 4: %v", len(infos), closure)
	}
	return infos
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func pathArgs(infos []nixcli.PathInfo) []string {
	var args []string
	for _, pi := range infos {
		args = append(args, pi.Path.String())
	}
	return args
}

// copyFrom runs nix copy --from the cache into a fresh chroot store
// trusting key, and checks that every path arrived intact.
func copyFrom(t *testing.T, n *nixtest.Nix, from string, key signing.PublicKey, infos []nixcli.PathInfo) error {
	t.Helper()
	dest := t.TempDir()
	// A chroot store with the same logical store dir; its files live in
	// "real" (Nix 2.8 would otherwise use DEST/nix/store).
	to := "local?root=" + dest + "&real=" + dest + "/real"
	args := append([]string{"copy", "--from", from, "--to", to,
		"--option", "trusted-public-keys", key.String()}, pathArgs(infos)...)
	if _, err := n.Output(t.Context(), "nix", args...); err != nil {
		return err
	}
	for _, pi := range infos {
		h, size, err := nar.DumpHash(io.Discard, filepath.Join(dest, "real", pi.Path.Base()))
		if err != nil {
			t.Fatalf("after nix copy: %v", err)
		}
		if !h.Equal(pi.NarHash) || uint64(size) != pi.NarSize {
			t.Errorf("%s arrived as %s (%d bytes), want %s (%d)", pi.Path, h, size, pi.NarHash, pi.NarSize)
		}
	}
	return nil
}

// TestNixCopyFromDir: a cache written with AddNAR and PutNarInfo, NARs
// dumped in-process and narinfos signed, is accepted by stock nix copy.
func TestNixCopyFromDir(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	infos := nixPaths(t, n)
	sk, pk, err := signing.Generate("airgap-test-1")
	must(t, err)
	_, otherPK, err := signing.Generate("airgap-test-1")
	must(t, err)
	for _, tt := range []struct {
		comp string
		opts compression.WriterOptions
	}{
		{"none", compression.WriterOptions{}},
		{"zstd", compression.WriterOptions{}},
		{"xz", compression.WriterOptions{}},
		{"zstd", compression.WriterOptions{Level: 19, Concurrency: 1}},
		// Many independent frames, as parallel compression writes.
		{"zstd", compression.WriterOptions{Concurrency: 3, ChunkSize: 64 << 10}},
		{"xz", compression.WriterOptions{Level: 9}},
	} {
		comp := tt.comp
		t.Run(fmt.Sprintf("%s-%d-%d-%d", comp, tt.opts.Level, tt.opts.Concurrency, tt.opts.ChunkSize), func(t *testing.T) {
			ctx := t.Context()
			d, err := cache.CreateDir(filepath.Join(t.TempDir(), "cache"), n.StoreDir, 40)
			must(t, err)
			defer d.Close()
			for _, pi := range infos {
				pr, pw := io.Pipe()
				go func() { pw.CloseWithError(nar.Dump(pw, pi.Path.String())) }()
				f, st, err := d.AddNAR(ctx, pr, comp, tt.opts, cache.NarStats{})
				must(t, err)
				if !st.NarHash.Equal(pi.NarHash) || uint64(st.NarSize) != pi.NarSize {
					t.Fatalf("AddNAR(%s) = %s %d, Nix says %s %d", pi.Path, st.NarHash, st.NarSize, pi.NarHash, pi.NarSize)
				}
				ni := &narinfo.NarInfo{
					StorePath: pi.Path, URL: f.URL, Compression: comp,
					FileHash: f.Hash, FileSize: uint64(f.Size), NarHash: st.NarHash, NarSize: uint64(st.NarSize),
					References: pi.References, Deriver: pi.Deriver, CA: pi.CA,
				}
				ni.Sign(sk)
				must(t, d.PutNarInfo(t.Context(), ni))
			}
			if err := copyFrom(t, n, "file://"+d.String(), pk, infos); err != nil {
				t.Fatalf("nix copy --from our cache: %v", err)
			}
			// The signatures are what let input-addressed paths in.
			err = copyFrom(t, n, "file://"+d.String(), otherPK, infos)
			if err == nil || !strings.Contains(err.Error(), "signature") {
				t.Errorf("nix copy trusting another key = %v, want a signature error", err)
			}
		})
	}
}

// TestReadNixCache: caches nix copy --to wrote read back through OpenDir
// and over HTTP, pass CheckNAR, and survive CopyVerified into a Dir that
// nix copy accepts with the upstream signatures.
func TestReadNixCache(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	infos := nixPaths(t, n)
	sk, pk, err := signing.Generate("upstream-1")
	must(t, err)
	keyFile := filepath.Join(t.TempDir(), "key.sec")
	must(t, os.WriteFile(keyFile, []byte(sk.String()), 0o600))
	for _, comp := range []string{"xz", "zstd", "none", "bzip2"} {
		t.Run(comp, func(t *testing.T) {
			ctx := t.Context()
			dir := filepath.Join(t.TempDir(), "upstream")
			n.Run(t, "nix", append([]string{"copy", "--to", "file://" + dir + "?compression=" + comp + "&secret-key=" + keyFile}, pathArgs(infos)...)...)

			d, err := cache.OpenDir(dir)
			must(t, err)
			defer d.Close()
			if d.StoreDir() != n.StoreDir {
				t.Errorf("StoreDir = %s, want %s", d.StoreDir(), n.StoreDir)
			}
			count := 0
			for ni, err := range d.NarInfos(t.Context()) {
				must(t, err)
				if ni.Compression != comp {
					t.Errorf("%s: Compression %q, want %q", ni.StorePath, ni.Compression, comp)
				}
				f, err := d.Open(ctx, ni.URL)
				must(t, err)
				if err := cache.CheckNAR(f, ni); err != nil {
					t.Errorf("CheckNAR on Nix's file: %v", err)
				}
				f.Close()
				count++
			}
			if count != len(infos) {
				t.Errorf("NarInfos yielded %d, want %d", count, len(infos))
			}

			srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
			defer srv.Close()
			h, err := cache.OpenHTTP(ctx, srv.URL, nil)
			must(t, err)
			src := cache.WithRetry(h, 3, 0)
			dst, err := cache.CreateDir(filepath.Join(t.TempDir(), "copy"), n.StoreDir, 40)
			must(t, err)
			defer dst.Close()
			for _, pi := range infos {
				ni, err := src.NarInfo(ctx, pi.Path.Hash)
				must(t, err)
				if !ni.Verify(signing.NewKeyring(pk)) {
					t.Errorf("%s: Nix's signature does not verify", ni.StorePath)
				}
				body, err := src.Open(ctx, ni.URL)
				must(t, err)
				if comp == "bzip2" {
					err = cache.CheckNAR(body, ni)
					body.Close()
					if err != nil {
						t.Errorf("CheckNAR over HTTP: %v", err)
					}
					continue
				}
				f, err := dst.CopyVerified(ctx, body, ni, nil)
				body.Close()
				must(t, err)
				if f.URL != ni.URL {
					t.Errorf("CopyVerified stored %s as %s, Nix named it %s", ni.StorePath, f.URL, ni.URL)
				}
				must(t, dst.PutNarInfo(t.Context(), ni))
			}
			if comp == "bzip2" {
				return // we do not write bzip2 (NewWriter has none)
			}
			if err := copyFrom(t, n, "file://"+dst.String(), pk, infos); err != nil {
				t.Fatalf("nix copy --from the verified copy: %v", err)
			}
		})
	}
}

// putCache is an HTTP binary cache that takes nix copy's PUTs and sends
// each file back as a server of stored objects does (S3 and what fronts
// it): with the Content-Encoding it was uploaded with.
type putCache struct {
	mu    sync.Mutex
	files map[string]putFile
}

type putFile struct {
	body     []byte
	encoding string
}

func (c *putCache) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch r.Method {
	case http.MethodPut:
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c.files[r.URL.Path] = putFile{body, r.Header.Get("Content-Encoding")}
	case http.MethodGet, http.MethodHead:
		f, ok := c.files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if f.encoding != "" {
			w.Header().Set("Content-Encoding", f.encoding)
		}
		w.Write(f.body)
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

func (c *putCache) encoding(path string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.files[path].encoding
}

// TestReadNixCacheCompressedNarInfos reads a cache that Nix 2.32 and later
// wrote over http with narinfo-compression: its narinfos come back
// compressed, with the Content-Encoding Nix sent. gzip and zstd are read;
// br, which nix-airgap has no decoder for, is named in the error.
func TestReadNixCacheCompressedNarInfos(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	if v, err := nixtest.Version(); err != nil {
		t.Fatal(err)
	} else if !v.AtLeast(2, 32) {
		t.Skipf("Nix %s compresses narinfos for s3 stores only; http stores since 2.32", v.Raw)
	}
	infos := nixPaths(t, n)
	for _, enc := range []string{"gzip", "zstd", "br"} {
		t.Run(enc, func(t *testing.T) {
			ctx := t.Context()
			up := &putCache{files: map[string]putFile{}}
			srv := httptest.NewServer(up)
			defer srv.Close()
			n.Run(t, "nix", append([]string{"copy", "--to", srv.URL + "?compression=none&narinfo-compression=" + enc}, pathArgs(infos)...)...)
			h, err := cache.OpenHTTP(ctx, srv.URL, nil)
			must(t, err)
			for _, pi := range infos {
				if got := up.encoding("/" + cache.NarInfoFile(pi.Path.Hash)); got != enc {
					t.Fatalf("Nix uploaded %s's narinfo with Content-Encoding %q, want %q", pi.Path, got, enc)
				}
				ni, err := h.NarInfo(ctx, pi.Path.Hash)
				if enc == "br" {
					if !errors.Is(err, compression.ErrUnsupported) || !strings.Contains(err.Error(), `Content-Encoding "br"`) {
						t.Errorf("NarInfo of a br-encoded narinfo: %v, want an unsupported Content-Encoding \"br\"", err)
					}
					continue
				}
				must(t, err)
				if ni.StorePath != pi.Path || !ni.NarHash.Equal(pi.NarHash) || ni.NarSize != pi.NarSize {
					t.Errorf("narinfo of %s: %s %s %d, want %s %s %d", pi.Path, ni.StorePath, ni.NarHash, ni.NarSize, pi.Path, pi.NarHash, pi.NarSize)
				}
			}
		})
	}
}
