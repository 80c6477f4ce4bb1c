package server_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/server"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// TestNixClient builds the test world online, copies its closure into a
// cache signed by a bundle key, wipes the store and then, inside an airgap
// that can reach only the server, has stock Nix substitute the toplevel
// trusting only the site key, read a build log, and fetch a renamed flat
// source through hashed-mirrors.
func TestNixClient(t *testing.T) {
	c := newClientWorld(t)
	n, w, ns, out, srcPath, srcBytes := c.n, c.w, c.ns, c.out, c.srcPath, c.srcBytes
	deriver := n.Run(t, "nix-store", "-qd", out)

	// The cache: nix copy signs with the bundle key; the site key is
	// only serve's.
	bundleKey, siteKey, strangerKey := genKey(t, "bundle-1"), genKey(t, "site-1"), genKey(t, "stranger-1")
	keyDir := t.TempDir()
	bundleKeyFile := filepath.Join(keyDir, "bundle.sec")
	writeFile(t, bundleKeyFile, []byte(bundleKey.String()))
	cache := filepath.Join(t.TempDir(), "cache")
	n.Run(t, "nix", "copy", "--to", "file://"+cache+"?secret-key="+bundleKeyFile, out, srcPath.String())
	writeCacheManifest(t, cache, n.StoreDir, srcPath, srcBytes)
	const logText = "building the toplevel, honest\n"
	writeFile(t, filepath.Join(cache, "log", filepath.Base(deriver)), []byte(logText))

	writeFile(t, filepath.Join(cache, "flake-registry.json"), []byte(`{"version":2,"flakes":[{"from":{"type":"indirect","id":"airgapped"},"to":{"type":"path","path":"`+out+`"}}]}`))
	n.Run(t, "nix-collect-garbage")
	// The local build logs would shadow the cache's.
	if err := os.RemoveAll(filepath.Join(n.Root, "var/log/nix/drvs")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("the toplevel survived garbage collection")
	}

	// One server, reachable inside the airgap and, for the HTTP checks
	// below, from the test on loopback.
	s, err := server.New(server.Config{Dirs: []string{cache}, Key: &siteKey, Log: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	url, local := serveBoth(t, s, ns)
	client := n.In(ns)
	opts := func(trusted signing.SecretKey) []string {
		return []string{"--option", "substituters", url, "--option", "trusted-public-keys", trusted.Public().String(), "--option", "narinfo-cache-negative-ttl", "0"}
	}

	t.Run("refuses an untrusted key", func(t *testing.T) {
		if got, err := client.Output(t.Context(), "nix-store", append([]string{"-r", out}, opts(strangerKey)...)...); err == nil {
			t.Fatalf("nix-store -r trusting a stranger's key succeeded: %s", got)
		}
	})
	t.Run("substitutes trusting only the site key", func(t *testing.T) {
		got, err := client.Output(t.Context(), "nix-store", append([]string{"-r", out}, opts(siteKey)...)...)
		if err != nil {
			t.Fatal(err)
		}
		if got != out {
			t.Errorf("nix-store -r printed %q, want %s", got, out)
		}
		hello, err := ns.Command(t.Context(), filepath.Join(out, "bin/hello")).Output()
		if err != nil || string(hello) != w.Greeting("", "") {
			t.Errorf("bin/hello = %q, %v; want %q", hello, err, w.Greeting("", ""))
		}
	})
	t.Run("nix log", func(t *testing.T) {
		got, err := client.Output(t.Context(), "nix", append([]string{"log", out, "--option", "substitute", "true"}, opts(siteKey)...)...)
		if err != nil {
			t.Fatal(err)
		}
		if got != strings.TrimSpace(logText) {
			t.Errorf("nix log = %q, want %q", got, logText)
		}
	})
	t.Run("builtin fetchurl through hashed-mirrors", func(t *testing.T) {
		if got := c.fetchRenamed(t, client, url); got == srcPath.String() || !strings.HasSuffix(got, "-renamed-source.tar.gz") {
			t.Errorf("nix-build gave %s, want a renamed path", got)
		}
	})

	t.Run("flake registry", func(t *testing.T) {
		got, err := client.Output(t.Context(), "nix", "registry", "list", "--option", "flake-registry", url+"/flake-registry.json")
		if err != nil {
			t.Fatal(err)
		}
		if want := "global flake:airgapped path:" + out; !strings.Contains(got, want) {
			t.Errorf("nix registry list = %q, want a line %q", got, want)
		}
	})
	t.Run("basic auth from netrc", func(t *testing.T) {
		creds, err := server.ParseCredentials(strings.NewReader("basic alice:pw-1\n"))
		if err != nil {
			t.Fatal(err)
		}
		authed, err := server.New(server.Config{Dirs: []string{cache}, Key: &siteKey, Auth: creds})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { authed.Close() })
		ln, err := ns.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		serve(t, authed, ln)
		store := "http://" + ln.Addr().String()
		netrc := filepath.Join(t.TempDir(), "netrc")
		writeFile(t, netrc, []byte("machine 127.0.0.1 login alice password pw-1\n"))
		args := []string{"path-info", "--store", store, out, "--option", "trusted-public-keys", siteKey.Public().String()}
		// Nix 2.8 says the store "does not appear to be a binary cache";
		// later Nix names the 401 on nix-cache-info.
		if got, err := client.Output(t.Context(), "nix", args...); err == nil {
			t.Errorf("nix path-info without credentials succeeded: %s", got)
		} else if msg := err.Error(); !strings.Contains(msg, "does not appear to be a binary cache") &&
			!strings.Contains(msg, "/nix-cache-info': HTTP error 401") {
			t.Errorf("nix path-info without credentials failed, but not on nix-cache-info: %v", err)
		}
		// As a substituter without credentials, Nix up to 2.34 takes the
		// 401 on nix-cache-info as a cache it cannot use: a warning, and
		// then it goes on without it (here, with nothing to build from).
		n.Run(t, "nix-store", "--delete", out)
		substitute := []string{"-r", out, "--option", "substituters", store, "--option", "trusted-public-keys", siteKey.Public().String()}
		_, err = client.Output(t.Context(), "nix-store", substitute...)
		if v, _ := nixtest.Version(); !v.AtLeast(2, 35) {
			if err == nil {
				t.Fatal("nix-store -r without credentials succeeded")
			}
			msg := err.Error()
			if !strings.Contains(msg, "warning: '"+store+"' does not appear to be a binary cache") &&
				!strings.Contains(msg, "warning: unable to download '"+store+"/nix-cache-info': HTTP error 401") {
				t.Errorf("nix-store -r without credentials: %v\nwant a warning that the cache cannot be used", err)
			}
		}
		// With them, it substitutes.
		if got, err := client.Output(t.Context(), "nix-store", append(substitute, "--option", "netrc-file", netrc)...); err != nil || got != out {
			t.Errorf("nix-store -r with netrc credentials = %q, %v; want %s", got, err, out)
		}
		got, err := client.Output(t.Context(), "nix", append(args, "--option", "netrc-file", netrc)...)
		if err != nil || got != out {
			t.Errorf("nix path-info with netrc credentials = %q, %v; want %s", got, err, out)
		}
	})
	t.Run("nix store ls and cat", func(t *testing.T) {
		store := []string{"--store", url, "--option", "trusted-public-keys", siteKey.Public().String()}
		got, err := client.Output(t.Context(), "nix", append([]string{"store", "ls", "--long", out + "/bin"}, store...)...)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(got, "hello") {
			t.Errorf("nix store ls %s/bin = %q, want hello listed", out, got)
		}
		got, err = client.Output(t.Context(), "nix", append([]string{"store", "cat", out + "/bin/hello"}, store...)...)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(got, "nix-airgap demo system") {
			t.Errorf("nix store cat %s/bin/hello = %q", out, got)
		}
	})
	t.Run("NAR listing as Nix writes it", func(t *testing.T) {
		// The toplevel is back in the store since the subtests above.
		nixCache := filepath.Join(t.TempDir(), "cache")
		n.Run(t, "nix", "copy", "--to", "file://"+nixCache+"?write-nar-listing=true&compression=none", out)
		hash := filepath.Base(out)[:storepath.HashLen]
		want, err := os.ReadFile(filepath.Join(nixCache, hash+".ls"))
		if err != nil {
			t.Fatal(err)
		}
		r := do(t, "GET", local, "/"+hash+".ls", nil)
		var gotJSON, wantJSON any
		if err := json.Unmarshal(want, &wantJSON); err != nil {
			t.Fatalf("Nix's listing: %v", err)
		}
		if err := json.Unmarshal(r.body, &gotJSON); r.status != 200 || err != nil {
			t.Fatalf("GET %s.ls: %d %q, %v", hash, r.status, r.body, err)
		}
		if diff := cmp.Diff(wantJSON, gotJSON); diff != "" {
			t.Errorf("served listing differs from the one Nix writes (-nix +served):\n%s", diff)
		}
	})
	t.Run("nixpkgs-style HEAD then GET", func(t *testing.T) {
		sums := map[storepath.Algo][]byte{}
		for algo, h := range map[storepath.Algo]hashWriter{storepath.MD5: md5.New(), storepath.SHA1: sha1.New(), storepath.SHA256: sha256.New(), storepath.SHA512: sha512.New()} {
			h.Write(srcBytes)
			sums[algo] = h.Sum(nil)
		}
		for _, algo := range storepath.Algos {
			h, _ := storepath.NewHash(algo, sums[algo])
			a := algo.String()
			for _, p := range []string{"/" + a + "/" + h.Hex(), "/" + a + "/" + h.Nix32(), "/" + a + "/" + h.Base64(), "/" + h.SRI(), "//" + h.SRI()} {
				head := do(t, "HEAD", local, p, nil)
				get := do(t, "GET", local, p, nil)
				if head.status != 200 || get.status != 200 || !bytes.Equal(get.body, srcBytes) {
					t.Errorf("%s: HEAD %d, GET %d with %d bytes; want 200, 200 and the %d-byte source", p, head.status, get.status, len(get.body), len(srcBytes))
				}
			}
		}
	})
	t.Run("Range on a NAR", func(t *testing.T) {
		ni := readNarInfo(t, cache, n.StoreDir, filepath.Base(out)[:32])
		file, err := os.ReadFile(filepath.Join(cache, ni.URL))
		if err != nil {
			t.Fatal(err)
		}
		r := do(t, "GET", local, "/"+ni.URL, http.Header{"Range": {"bytes=4-99"}})
		if r.status != 206 || !bytes.Equal(r.body, file[4:100]) {
			t.Errorf("Range bytes=4-99: %d with %d bytes, want 206 and 96", r.status, len(r.body))
		}
	})
}

// clientWorld is what the stock Nix client tests start from: the test
// world built online, its flat source, and an airgap for the clients.
type clientWorld struct {
	n        *nixtest.Nix
	w        *nixtest.World
	ns       *nixtest.NetNS
	out      string // the toplevel
	src      nixtest.FOD
	srcPath  storepath.Path
	srcBytes []byte
}

func newClientWorld(t *testing.T) *clientWorld {
	t.Helper()
	n := nixtest.New(t, nixtest.Options{})
	w := nixtest.NewWorld(t, n, nixtest.StartInternet(t), nixtest.WorldOptions{})
	c := &clientWorld{n: n, w: w, ns: nixtest.NewNetNS(t), out: w.Build(t), src: w.FOD(t, "src")}
	var err error
	if c.srcPath, err = c.src.Path(n.StoreDir); err != nil {
		t.Fatal(err)
	}
	if c.srcBytes, err = os.ReadFile(c.srcPath.String()); err != nil {
		t.Fatal(err)
	}
	return c
}

// fetchRenamed has client fetch the flat source under another name with
// builtin:fetchurl, from the hashed mirror at url only, checks what it
// got and returns the path.
func (c *clientWorld) fetchRenamed(t *testing.T, client *nixtest.Nix, url string) string {
	t.Helper()
	expr := filepath.Join(t.TempDir(), "renamed.nix")
	writeFile(t, expr, []byte(`import <nix/fetchurl.nix> {
  url = "http://unreachable.invalid/`+c.src.File+`";
  sha256 = "`+c.src.Hash.Nix32()+`";
  name = "renamed-source.tar.gz";
}
`))
	got, err := client.Output(t.Context(), "nix-build", expr, "--no-out-link",
		"--option", "substituters", "", "--option", "hashed-mirrors", url+"/")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(got); err != nil || !bytes.Equal(b, c.srcBytes) {
		t.Errorf("fetched file differs from the source (%d bytes, %v)", len(b), err)
	}
	return got
}

// serveBoth serves s inside the airgap ns and, for the test's own HTTP
// checks, on loopback, and returns both base URLs.
func serveBoth(t *testing.T, s *server.Server, ns *nixtest.NetNS) (inside, outside string) {
	t.Helper()
	in, err := ns.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	out, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serve(t, s, in)
	serve(t, s, out)
	return "http://" + in.Addr().String(), "http://" + out.Addr().String()
}

type hashWriter interface {
	Write([]byte) (int, error)
	Sum([]byte) []byte
}

func serve(t *testing.T, s *server.Server, ln net.Listener) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("Serve did not stop")
		}
	})
}

func readNarInfo(t *testing.T, cache string, storeDir storepath.Dir, hash string) *narinfo.NarInfo {
	t.Helper()
	f, err := os.Open(filepath.Join(cache, hash+".narinfo"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ni, err := narinfo.Parse(f, storeDir)
	if err != nil {
		t.Fatal(err)
	}
	return ni
}

// writeCacheManifest records the cache's paths as one imported bundle, as
// import would, with flat hashes for the flat source.
func writeCacheManifest(t *testing.T, cache string, storeDir storepath.Dir, flat storepath.Path, flatBytes []byte) {
	t.Helper()
	m := bundle.Manifest{Tool: "test", Created: time.Unix(0, 0).UTC(), StoreDir: storeDir, Mode: role.ModeSources}
	names, err := filepath.Glob(filepath.Join(cache, "*.narinfo"))
	if err != nil || len(names) == 0 {
		t.Fatalf("no narinfos in %s: %v", cache, err)
	}
	for _, name := range names {
		ni := readNarInfo(t, cache, storeDir, strings.TrimSuffix(filepath.Base(name), ".narinfo"))
		e := bundle.PathEntry{
			Path: ni.StorePath, NarHash: ni.NarHash, NarSize: ni.NarSize, URL: ni.URL,
			FileHash: ni.FileHash, FileSize: ni.FileSize, Compression: ni.Compression,
			References: ni.References, Deriver: ni.Deriver, CA: ni.CA, Roles: role.Runtime,
		}
		if ni.StorePath == flat {
			md := md5.Sum(flatBytes)
			s1 := sha1.Sum(flatBytes)
			s2 := sha256.Sum256(flatBytes)
			s5 := sha512.Sum512(flatBytes)
			e.Roles = role.Source
			e.Flat = &bundle.FlatHashes{MD5: md[:], SHA1: s1[:], SHA256: s2[:], SHA512: s5[:]}
		}
		m.Paths = append(m.Paths, e)
	}
	data, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(cache, "nix-airgap/bundles", bundle.RecordName(bundle.ID(data))), data)
}

// TestNixRegistryOfBundleWithout checks that stock Nix can use the flake
// registry of a served bundle that has none: an empty one, where a 404
// made nix registry list, and every indirect flake reference, fail.
func TestNixRegistryOfBundleWithout(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	f := newFixture(t, n.StoreDir, genKey(t, "bundle-1"))
	f.addFlat("hello-1.0.tar.gz", []byte("source\n"), "zstd")
	f.writeManifest(false)
	if _, err := os.Stat(filepath.Join(f.dir, bundle.RegistryName)); err == nil {
		t.Fatal("the bundle has a flake registry")
	}
	_, url := testServer(t, server.Config{Dirs: []string{f.dir}})
	registry := url + "/" + bundle.RegistryName
	if got, err := n.Output(t.Context(), "nix", "registry", "list", "--option", "flake-registry", registry); err != nil {
		t.Errorf("nix registry list: %v", err)
	} else if strings.Contains(got, "global") {
		t.Errorf("nix registry list = %q, want no global entry", got)
	}
	// An indirect reference is then simply not found.
	_, err := n.Output(t.Context(), "nix", "flake", "metadata", "nowhere", "--option", "flake-registry", registry)
	if err == nil || !strings.Contains(err.Error(), "cannot find flake 'flake:nowhere' in the flake registries") {
		t.Errorf("nix flake metadata nowhere: %v, want it not found in the registries", err)
	}
}
