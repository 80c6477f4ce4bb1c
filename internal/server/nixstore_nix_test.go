package server_test

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/nixstore"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/server"
	"github.com/nix-airgap/nix-airgap/internal/signing"
)

// TestNixStoreClient serves a Nix store, under a cache directory that
// holds one path of it, to stock Nix clients inside an airgap: nix copy
// takes the world's closure trusting only the site key (and refuses it
// trusting another), the path in the cache comes from the cache, and
// builtin:fetchurl gets a flat source through hashed-mirrors.
func TestNixStoreClient(t *testing.T) {
	c := newClientWorld(t)
	n, ns, out := c.n, c.ns, c.out
	closure := strings.Fields(n.Run(t, "nix-store", "-qR", out))

	siteKey, strangerKey := genKey(t, "site-1"), genKey(t, "stranger-1")
	// The cache layered over the store holds the closure's first path.
	cacheDir := filepath.Join(t.TempDir(), "cache")
	inCache := closure[0]
	n.Run(t, "nix", "copy", "--to", "file://"+cacheDir, inCache)

	st, err := nixstore.Open(t.Context(), nixstore.Options{Nix: &nixcli.Runner{Env: n.Env}, Key: &siteKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s, err := server.New(server.Config{Dirs: []string{cacheDir}, NixStore: st, Key: &siteKey, Log: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	url, local := serveBoth(t, s, ns)
	client := n.In(ns)

	// A chroot store: the same store dir as the served store, its files
	// and database elsewhere.
	copyTo := func(ctx context.Context, trusted signing.SecretKey) (string, error) {
		root := filepath.Join(t.TempDir(), "client")
		_, err := client.Output(ctx, "nix", "copy", "--from", url, "--to", "local?root="+root, out,
			"--option", "trusted-public-keys", trusted.Public().String())
		return root, err
	}
	t.Run("refuses an untrusted key", func(t *testing.T) {
		_, err := copyTo(t.Context(), strangerKey)
		if err == nil {
			t.Fatal("nix copy trusting a stranger's key succeeded")
		}
		if !strings.Contains(err.Error(), "lacks a signature by a trusted key") && !strings.Contains(err.Error(), "lacks a valid signature") {
			t.Errorf("nix copy trusting a stranger's key failed, but not for the signature: %v", err)
		}
	})
	t.Run("copies the closure trusting only the site key", func(t *testing.T) {
		root, err := copyTo(t.Context(), siteKey)
		if err != nil {
			t.Fatal(err)
		}
		store := "local?root=" + root
		got := strings.Fields(client.Run(t, "nix", "path-info", "--store", store, "-r", out))
		if len(got) != len(closure) {
			t.Errorf("the client's store has %d paths of the closure, want %d", len(got), len(closure))
		}
		client.Run(t, "nix", "store", "verify", "--store", store, "--no-trust", "-r", out)
	})
	t.Run("layered under the cache", func(t *testing.T) {
		ni := readNarInfo(t, cacheDir, n.StoreDir, filepath.Base(inCache)[:32])
		r := do(t, "GET", local, "/"+filepath.Base(inCache)[:32]+".narinfo", nil)
		if r.status != 200 || !strings.Contains(string(r.body), "URL: "+ni.URL+"\n") {
			t.Errorf("the cached path's narinfo: %d\n%s\nwant the cache's, URL %s", r.status, r.body, ni.URL)
		}
		name, _ := cache.NarFileName(ni.URL)
		if nixstore.IsNARName(name) {
			t.Errorf("the cache's NAR %s looks like a store NAR", ni.URL)
		}
		r = do(t, "GET", local, "/"+filepath.Base(out)[:32]+".narinfo", nil)
		if r.status != 200 || !strings.Contains(string(r.body), "URL: nar/"+filepath.Base(out)[:32]+"-") {
			t.Errorf("the toplevel's narinfo: %d\n%s\nwant one of the store's", r.status, r.body)
		}
	})
	t.Run("NAR listings", func(t *testing.T) {
		var dump bytes.Buffer
		if err := nar.Dump(&dump, out); err != nil {
			t.Fatal(err)
		}
		root, err := nar.List(&dump)
		if err != nil {
			t.Fatal(err)
		}
		var want bytes.Buffer
		if err := nar.WriteListing(&want, root); err != nil {
			t.Fatal(err)
		}
		for range 2 { // made, then from memory
			r := do(t, "GET", local, "/"+filepath.Base(out)[:32]+".ls", nil)
			if r.status != 200 || !bytes.Equal(r.body, want.Bytes()) {
				t.Errorf("the toplevel's listing: %d\n%s\nwant\n%s", r.status, r.body, want.Bytes())
			}
		}
		if r := do(t, "GET", local, "/"+strings.Repeat("0", 32)+".ls", nil); r.status != 404 {
			t.Errorf("a listing of a path not in the store: %d, want 404", r.status)
		}
	})
	t.Run("builtin fetchurl through hashed-mirrors", func(t *testing.T) {
		// Another store dir: a flat file's hash does not depend on it.
		c.fetchRenamed(t, nixtest.New(t, nixtest.Options{}).In(ns), url)
	})
}
