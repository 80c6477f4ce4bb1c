package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/server"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

const testStore storepath.Dir = "/test/store"

func genKey(t testing.TB, name string) signing.SecretKey {
	t.Helper()
	sk, _, err := signing.Generate(name)
	if err != nil {
		t.Fatal(err)
	}
	return sk
}

// testServer serves cfg's dirs with Serve on a loopback port and returns
// the base URL.
func testServer(t *testing.T, cfg server.Config) (*server.Server, string) {
	t.Helper()
	s, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		s.Close()
	})
	return s, "http://" + ln.Addr().String()
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request with its target written verbatim, as curl or an
// attacker would, and reads the response.
func do(t *testing.T, method, base, target string, hdr http.Header) response {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var req bytes.Buffer
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, target, strings.TrimPrefix(base, "http://"))
	hdr.Write(&req)
	req.WriteString("\r\n")
	if _, err := conn.Write(req.Bytes()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, target, err)
	}
	if ce, ok := resp.Header["Content-Encoding"]; ok {
		t.Errorf("%s %s: Content-Encoding %q; Nix 2.8 would fail to decode", method, target, ce)
	}
	return response{resp.StatusCode, resp.Header, body}
}

// world is one served bundle with a flat file, a directory path, a log and
// a flake registry.
type world struct {
	f        *fixture
	flat     storepath.Path
	contents []byte
	dirPath  storepath.Path
}

func newWorld(t *testing.T, key signing.SecretKey) *world {
	f := newFixture(t, testStore, key)
	contents := bytes.Repeat([]byte("source tarball bytes\n"), 1000)
	w := &world{f: f, contents: contents}
	w.flat = f.addFlat("hello-1.0.tar.gz", contents, "zstd")
	w.dirPath = f.addDir("hello")
	f.writeManifest(false)
	writeFile(t, filepath.Join(f.dir, "log", w.dirPath.Hash+"-hello.drv"), []byte("building hello\n"))
	writeFile(t, filepath.Join(f.dir, "flake-registry.json"), []byte(`{"version":2,"flakes":[{"from":{"type":"indirect","id":"nixpkgs"},"to":{"type":"path","path":"/test/store/aaa-source"}}]}`))
	return w
}

func TestNewErrors(t *testing.T) {
	a := newFixture(t, testStore, genKey(t, "a"))
	b := newFixture(t, "/other/store", genKey(t, "b"))
	empty := t.TempDir()
	// A cache whose nix-cache-info does not parse is refused as every
	// command that opens a cache says it, naming the file.
	badInfo := t.TempDir()
	writeFile(t, filepath.Join(badInfo, "nix-cache-info"), []byte("Priority: 40\n"))
	tests := []struct {
		name string
		cfg  server.Config
		want []string
	}{
		{"no dirs", server.Config{}, []string{"no directory"}},
		{"missing dir", server.Config{Dirs: []string{filepath.Join(empty, "nope")}}, []string{"nope"}},
		{"not a cache", server.Config{Dirs: []string{empty}}, []string{empty, "an empty directory"}},
		{"bad nix-cache-info", server.Config{Dirs: []string{badInfo}}, []string{"serve: open cache: " + filepath.Join(badInfo, "nix-cache-info") + ": no StoreDir line"}},
		{"store dirs differ", server.Config{Dirs: []string{a.dir, b.dir}}, []string{a.dir, b.dir, "/other/store", string(testStore)}},
		{"half TLS", server.Config{Dirs: []string{a.dir}, TLSCertFile: "x"}, []string{"TLS"}},
		{"negative priority", server.Config{Dirs: []string{a.dir}, Priority: -1}, []string{"priority"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := server.New(tt.cfg)
			if err == nil {
				s.Close()
				t.Fatal("New succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestRoutes(t *testing.T) {
	w := newWorld(t, genKey(t, "bundle-1"))
	_, url := testServer(t, server.Config{Dirs: []string{w.f.dir}, Priority: 30})
	narinfoText, _ := os.ReadFile(filepath.Join(w.f.dir, w.flat.Hash+".narinfo"))
	flatNI := w.f.infos[w.flat.Name]
	dirNAR := w.f.nars[w.dirPath.Name]
	tests := []struct {
		method, path string
		status       int
		body         string // checked when the status is 200
		ctype        string
	}{
		{"GET", "/nix-cache-info", 200, "StoreDir: /test/store\nWantMassQuery: 1\nPriority: 30\n", "text/x-nix-cache-info"},
		{"HEAD", "/nix-cache-info", 200, "", "text/x-nix-cache-info"},
		{"GET", "/" + w.flat.Hash + ".narinfo", 200, string(narinfoText), "text/x-nix-narinfo"},
		{"HEAD", "/" + w.flat.Hash + ".narinfo", 200, "", "text/x-nix-narinfo"},
		{"GET", "/" + strings.Repeat("0", 32) + ".narinfo", 404, "", ""},
		{"GET", "/" + flatNI.URL, 200, string(w.f.nars[w.flat.Name]), "application/x-nix-nar"},
		{"GET", "/" + w.f.infos[w.dirPath.Name].URL, 200, string(dirNAR), "application/x-nix-nar"},
		{"GET", "/nar/" + strings.Repeat("1", 52) + ".nar.xz", 404, "", ""},
		{"GET", "/log/" + w.dirPath.Hash + "-hello.drv", 200, "building hello\n", "text/plain; charset=utf-8"},
		{"GET", "/log/" + strings.Repeat("1", 32) + "-x.drv", 404, "", ""},
		{"GET", "/flake-registry.json", 200, `{"version":2,"flakes":[{"from":{"type":"indirect","id":"nixpkgs"},"to":{"type":"path","path":"/test/store/aaa-source"}}]}` + "\n", "application/json"},
		{"GET", "/healthz", 200, "ok\n", "text/plain; charset=utf-8"},
		{"GET", "/sha256/" + hexSum(sha256.New(), w.contents), 200, string(w.contents), "application/octet-stream"},
		{"GET", "/sha256/" + strings.Repeat("0", 64), 404, "", ""},
		{"GET", "/manifest.json", 404, "", ""},
		{"GET", "/nix-airgap/bundles", 404, "", ""},
		{"GET", "/", 404, "", ""},
		{"GET", "/nar/", 404, "", ""},
	}
	for _, tt := range tests {
		r := do(t, tt.method, url, tt.path, nil)
		if r.status != tt.status {
			t.Errorf("%s %s: status %d, want %d (%q)", tt.method, tt.path, r.status, tt.status, r.body)
			continue
		}
		if tt.status != 200 {
			continue
		}
		if string(r.body) != tt.body {
			t.Errorf("%s %s: body %q, want %q", tt.method, tt.path, trunc(r.body), trunc([]byte(tt.body)))
		}
		if got := r.header.Get("Content-Type"); got != tt.ctype {
			t.Errorf("%s %s: Content-Type %q, want %q", tt.method, tt.path, got, tt.ctype)
		}
	}
}

func trunc(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "..."
	}
	return string(b)
}

func hexSum(h interface {
	Write([]byte) (int, error)
	Sum([]byte) []byte
}, data []byte) string {
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil))
}

// TestMirrorSpellings asks for the flat file the way nixpkgs' fetchurl and
// Nix's builtin:fetchurl do, in every spelling of every algorithm.
func TestMirrorSpellings(t *testing.T) {
	w := newWorld(t, genKey(t, "bundle-1"))
	_, url := testServer(t, server.Config{Dirs: []string{w.f.dir}})
	sums := map[storepath.Algo][]byte{}
	for algo, h := range map[storepath.Algo]interface {
		Write([]byte) (int, error)
		Sum([]byte) []byte
	}{storepath.MD5: md5.New(), storepath.SHA1: sha1.New(), storepath.SHA256: sha256.New(), storepath.SHA512: sha512.New()} {
		h.Write(w.contents)
		sums[algo] = h.Sum(nil)
	}
	var paths []string
	for _, algo := range storepath.Algos {
		h, err := storepath.NewHash(algo, sums[algo])
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths,
			"/"+algo.String()+"/"+h.Hex(),
			"/"+algo.String()+"/"+h.Nix32(),
			"/"+algo.String()+"/"+h.Base64(),
			"/"+h.SRI(),
			"//"+h.SRI(),
		)
	}
	for _, p := range paths {
		// nixpkgs: curl --head --fail, then GET.
		head := do(t, "HEAD", url, p, nil)
		if head.status != 200 || len(head.body) != 0 {
			t.Errorf("HEAD %s: %d with %d body bytes, want 200 and none", p, head.status, len(head.body))
		}
		if got := head.header.Get("Content-Length"); got != strconv.Itoa(len(w.contents)) {
			t.Errorf("HEAD %s: Content-Length %q, want %d", p, got, len(w.contents))
		}
		get := do(t, "GET", url, p, nil)
		if get.status != 200 || !bytes.Equal(get.body, w.contents) {
			t.Errorf("GET %s: %d, %d bytes; want 200 and the file's %d bytes", p, get.status, len(get.body), len(w.contents))
		}
	}
	// A base64 digest may hold '/': such a path is still a mirror path.
	var slashy string
	for i := 0; slashy == ""; i++ {
		data := []byte("file " + strconv.Itoa(i))
		sum := sha256.Sum256(data)
		if b64 := base64.StdEncoding.EncodeToString(sum[:]); strings.Contains(b64, "/") {
			slashy = b64
			f := newFixture(t, testStore, genKey(t, "b"))
			f.addFlat("slashy", data, "none")
			f.writeManifest(true)
			_, url2 := testServer(t, server.Config{Dirs: []string{f.dir}})
			for _, p := range []string{"/sha256/" + b64, "/sha256-" + b64, "//sha256-" + b64} {
				if r := do(t, "GET", url2, p, nil); r.status != 200 || string(r.body) != string(data) {
					t.Errorf("GET %s: %d %q, want 200 %q", p, r.status, r.body, data)
				}
			}
		}
	}
}

func TestNarInfoSignedBySite(t *testing.T) {
	bundleKey, siteKey := genKey(t, "bundle-1"), genKey(t, "site-1")
	w := newWorld(t, bundleKey)
	const rescan = time.Second
	clock := newClock()
	_, url := testServer(t, server.Config{Dirs: []string{w.f.dir}, Key: &siteKey, RescanInterval: rescan, Now: clock.Now})
	name := "/" + w.dirPath.Hash + ".narinfo"
	r := do(t, "GET", url, name, nil)
	if r.status != 200 {
		t.Fatalf("GET %s: %d", name, r.status)
	}
	ni, err := narinfo.Parse(bytes.NewReader(r.body), testStore)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []signing.SecretKey{siteKey, bundleKey} {
		if !ni.Verify(signing.NewKeyring(k.Public())) {
			t.Errorf("served narinfo lacks a valid signature by %s:\n%s", k.Name, r.body)
		}
	}
	if diff := cmp.Diff(w.f.infos[w.dirPath.Name].Fingerprint(), ni.Fingerprint()); diff != "" {
		t.Errorf("fingerprint changed (-disk +served):\n%s", diff)
	}

	// The signed narinfo is cached by file identity: within the rescan
	// interval it is served without looking at the file; after it, the
	// same size and mtime serve the cached body, a new mtime a fresh one.
	file := filepath.Join(w.f.dir, w.dirPath.Hash+".narinfo")
	fi, _ := os.Stat(file)
	orig, _ := os.ReadFile(file)
	changed := bytes.Replace(orig, []byte("Compression: xz"), []byte("Compression: XZ"), 1)
	writeFile(t, file, changed)
	later := fi.ModTime().Add(time.Second)
	os.Chtimes(file, later, later)
	if again := do(t, "GET", url, name, nil); !bytes.Equal(again.body, r.body) {
		t.Errorf("narinfo re-read within the rescan interval:\n%s", again.body)
	}
	clock.Advance(rescan)
	os.Chtimes(file, fi.ModTime(), fi.ModTime())
	if again := do(t, "GET", url, name, nil); !bytes.Equal(again.body, r.body) {
		t.Errorf("narinfo re-read although size and mtime are unchanged:\n%s", again.body)
	}
	clock.Advance(rescan)
	os.Chtimes(file, later, later)
	if again := do(t, "GET", url, name, nil); !bytes.Contains(again.body, []byte("Compression: XZ")) {
		t.Errorf("narinfo not re-read after its mtime changed:\n%s", again.body)
	}
}

func TestLayers(t *testing.T) {
	key := genKey(t, "k")
	a, b := newFixture(t, testStore, key), newFixture(t, testStore, key)
	onlyB := b.addFlat("only-b", []byte("bbb"), "none")
	bothA := a.addFlat("both", []byte("from a"), "none")
	bothB := b.addDir("both")
	a.writeManifest(true)
	b.writeManifest(true)
	writeFile(t, filepath.Join(a.dir, "flake-registry.json"), []byte(`{"version":2,"flakes":[{"from":{"type":"indirect","id":"nixpkgs"},"to":{"type":"path","path":"/A"}}]}`))
	writeFile(t, filepath.Join(b.dir, "flake-registry.json"), []byte(`{"version":2,"flakes":[{"from":{"type":"indirect","id":"nixpkgs"},"to":{"type":"path","path":"/B"}},{"from":{"type":"indirect","id":"other"},"to":{"type":"path","path":"/O"}}]}`))
	_, url := testServer(t, server.Config{Dirs: []string{a.dir, b.dir}})

	if r := do(t, "GET", url, "/"+onlyB.Hash+".narinfo", nil); r.status != 200 {
		t.Errorf("narinfo only in the second dir: %d", r.status)
	}
	if r := do(t, "GET", url, "/"+b.infos["only-b"].URL, nil); r.status != 200 || !bytes.Equal(r.body, b.nars["only-b"]) {
		t.Errorf("NAR only in the second dir: %d", r.status)
	}
	if r := do(t, "GET", url, "/sha256/"+hexSum(sha256.New(), []byte("bbb")), nil); string(r.body) != "bbb" {
		t.Errorf("mirror file only in the second dir: %d %q", r.status, r.body)
	}
	if bothA.Hash == bothB.Hash {
		t.Fatal("fixture paths collide")
	}
	want := `{"version":2,"flakes":[{"from":{"type":"indirect","id":"nixpkgs"},"to":{"type":"path","path":"/A"}},{"from":{"type":"indirect","id":"other"},"to":{"type":"path","path":"/O"}}]}` + "\n"
	if r := do(t, "GET", url, "/flake-registry.json", nil); string(r.body) != want {
		t.Errorf("registry union:\n got %s\nwant %s", r.body, want)
	}
}

// TestNewImports checks that paths and manifests imported while the server
// runs are served without a restart.
func TestNewImports(t *testing.T) {
	key := genKey(t, "k")
	cache := newFixture(t, testStore, key)
	cache.addDir("first")
	cache.writeManifest(true)
	clock := newClock()
	_, url := testServer(t, server.Config{Dirs: []string{cache.dir}, Now: clock.Now})

	other := newFixture(t, testStore, key)
	p := other.addFlat("late.txt", []byte("late\n"), "xz")
	mirror := "/sha1/" + hexSum(sha1.New(), []byte("late\n"))
	if r := do(t, "GET", url, "/"+p.Hash+".narinfo", nil); r.status != 404 {
		t.Fatalf("narinfo before import: %d, want 404", r.status)
	}
	if r := do(t, "GET", url, mirror, nil); r.status != 404 {
		t.Fatalf("mirror before import: %d, want 404", r.status)
	}
	// "Import": copy the NAR, the narinfo and the record into the cache.
	ni := other.infos["late.txt"]
	writeFile(t, filepath.Join(cache.dir, ni.URL), other.nars["late.txt"])
	text, _ := ni.MarshalText()
	writeFile(t, filepath.Join(cache.dir, p.Hash+".narinfo"), text)
	other.dir = cache.dir
	other.writeManifest(true)
	// A new narinfo is served at once; a new manifest's mirror files
	// once the rescan interval (a second by default) has passed.
	if r := do(t, "GET", url, "/"+p.Hash+".narinfo", nil); r.status != 200 {
		t.Errorf("narinfo after import: %d, want 200", r.status)
	}
	if r := do(t, "GET", url, mirror, nil); r.status != 404 {
		t.Errorf("mirror within the rescan interval after import: %d, want 404", r.status)
	}
	clock.Advance(time.Second)
	if r := do(t, "GET", url, mirror, nil); r.status != 200 || string(r.body) != "late\n" {
		t.Errorf("mirror after import: %d %q, want 200", r.status, r.body)
	}
}

// TestRemovedPaths checks what gc relies on: a narinfo removed while the
// server runs is a miss within half of cache.RemovalGrace, however hot it
// was, while its NAR is still served; a flat file whose path is gone is a
// miss though a kept record still lists it.
func TestRemovedPaths(t *testing.T) {
	key := genKey(t, "k")
	c := newFixture(t, testStore, key)
	flat := c.addFlat("gone.tar.gz", []byte("gone\n"), "none")
	c.writeManifest(true)
	clock := newClock()
	_, url := testServer(t, server.Config{Dirs: []string{c.dir}, Now: clock.Now, RescanInterval: time.Hour})
	narinfoURL, narURL := "/"+flat.Hash+".narinfo", "/"+c.infos["gone.tar.gz"].URL
	mirror := "/sha256/" + hexSum(sha256.New(), []byte("gone\n"))
	for _, u := range []string{narinfoURL, narURL, mirror} {
		if r := do(t, "GET", url, u, nil); r.status != 200 {
			t.Fatalf("%s before removal: %d", u, r.status)
		}
	}
	if err := os.Remove(filepath.Join(c.dir, flat.Hash+".narinfo")); err != nil {
		t.Fatal(err)
	}
	clock.Advance(cache.RemovalGrace / 2)
	if r := do(t, "GET", url, narinfoURL, nil); r.status != 404 {
		t.Errorf("narinfo half the removal grace after its removal: %d, want 404", r.status)
	}
	if r := do(t, "GET", url, narURL, nil); r.status != 200 {
		t.Errorf("NAR of a removed narinfo, before gc removes it: %d, want 200", r.status)
	}
	if r := do(t, "GET", url, mirror, nil); r.status != 404 {
		t.Errorf("mirror file of a removed path: %d, want 404", r.status)
	}
}

func TestRange(t *testing.T) {
	w := newWorld(t, genKey(t, "k"))
	_, url := testServer(t, server.Config{Dirs: []string{w.f.dir}})
	nar := w.f.nars[w.dirPath.Name]
	path := "/" + w.f.infos[w.dirPath.Name].URL
	tests := []struct {
		rng    string
		status int
		body   []byte
	}{
		{"bytes=0-9", 206, nar[:10]},
		{"bytes=10-", 206, nar[10:]},
		{"bytes=-5", 206, nar[len(nar)-5:]},
		{"bytes=" + strconv.Itoa(len(nar)) + "-", 416, nil},
		{"bytes=9-3", 416, nil},
		{"bytes=x-y", 416, nil},
		{"lines=1-2", 416, nil},
		{"bytes=0-", 206, nar},
	}
	for _, tt := range tests {
		r := do(t, "GET", url, path, http.Header{"Range": {tt.rng}})
		if r.status != tt.status {
			t.Errorf("Range %s: %d, want %d", tt.rng, r.status, tt.status)
			continue
		}
		if tt.status == 206 && !bytes.Equal(r.body, tt.body) {
			t.Errorf("Range %s: got %d bytes, want %d", tt.rng, len(r.body), len(tt.body))
		}
	}
}

// TestHostile sends what an attacker would and checks that every answer is
// a 4xx that holds no byte from outside the served directory.
func TestHostile(t *testing.T) {
	w := newWorld(t, genKey(t, "k"))
	secret := []byte("TOP SECRET outside the served dir\n")
	outside := filepath.Join(t.TempDir(), "secret")
	writeFile(t, outside, secret)
	writeFile(t, filepath.Join(filepath.Dir(w.f.dir), "secret"), secret) // a sibling of the dir
	must(t, os.Symlink(outside, filepath.Join(w.f.dir, "nar", "evil.nar")))
	must(t, os.Symlink("../../secret", filepath.Join(w.f.dir, "log", "rel.drv")))
	must(t, os.Symlink(outside, filepath.Join(w.f.dir, strings.Repeat("1", 32)+".narinfo")))
	must(t, os.Symlink(filepath.Dir(outside), filepath.Join(w.f.dir, "nar", "dir")))
	_, url := testServer(t, server.Config{Dirs: []string{w.f.dir}})
	hash := w.flat.Hash
	tests := []struct {
		method, path string
		status       int
	}{
		{"GET", "/../secret", 400},
		{"GET", "/nar/../../secret", 400},
		{"GET", "/%2e%2e/secret", 400},
		{"GET", "/nar/%2e%2e%2f%2e%2e%2fsecret", 400},
		{"GET", "/nar%2fevil.nar", 400},
		{"GET", "/log/..%2f..%2fsecret", 400},
		{"GET", "/nar/..\\..\\secret", 400},
		{"GET", "/nar/%5c..%5csecret", 400},
		{"GET", "/" + hash + ".narinfo%00", 400},
		{"GET", "/nar/x%00.nar", 400},
		{"GET", "//nix-cache-info", 400},
		{"GET", "/nar//evil.nar", 400},
		{"GET", "/./nix-cache-info", 400},
		{"GET", "/" + strings.Repeat("a", 5000), 414},
		{"GET", "/nar/evil.nar", 404},
		{"GET", "/nar/dir", 400},
		{"GET", "/nar/dir/secret", 404},
		{"GET", "/log/rel.drv", 404},
		{"GET", "/" + strings.Repeat("1", 32) + ".narinfo", 404},
		{"GET", "/" + strings.ToUpper(hash) + ".narinfo", 400},
		{"GET", "/" + hash[:31] + ".narinfo", 400},
		{"GET", "/" + hash[:31] + "e.narinfo", 400},
		{"GET", "/" + hash + "0.narinfo", 400},
		{"GET", "/sha256/zz", 404},
		{"GET", "/sha256-!!!!", 404},
		{"GET", "/md5/" + strings.Repeat("0", 64), 404},
		{"GET", "/sha257/" + strings.Repeat("0", 64), 404},
		{"GET", "/nar/.hidden.nar", 400},
		{"GET", "/log/.x", 400},
		{"POST", "/nix-cache-info", 405},
		{"PUT", "/" + hash + ".narinfo", 405},
		{"DELETE", "/" + hash + ".narinfo", 405},
		{"OPTIONS", "/nix-cache-info", 405},
		{"OPTIONS", "*", 405},
		{"PATCH", "/healthz", 405},
		{"TRACE", "/", 405},
		{"PROPFIND", "/", 405},
	}
	for _, tt := range tests {
		r := do(t, tt.method, url, tt.path, nil)
		if r.status != tt.status {
			t.Errorf("%s %s: status %d, want %d (%q)", tt.method, tt.path, r.status, tt.status, r.body)
		}
		if bytes.Contains(r.body, []byte("SECRET")) {
			t.Errorf("%s %s: response holds the outside file", tt.method, tt.path)
		}
		if tt.status == 405 && r.header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s %s: Allow %q, want GET, HEAD", tt.method, tt.path, r.header.Get("Allow"))
		}
	}
	// Malformed Range headers on a real NAR.
	// An empty range set may be ignored (RFC 9110 §14.2): the whole file.
	for _, rng := range []string{"bytes=", "bytes=-", "bytes=1-2-3", "bytes=99999999999999999999-", "bytes=0-1,2-3,4-5,6-7,a"} {
		r := do(t, "GET", url, "/"+w.f.infos[w.flat.Name].URL, http.Header{"Range": {rng}})
		if r.status != 416 && !(r.status == 200 && bytes.Equal(r.body, w.f.nars[w.flat.Name])) {
			t.Errorf("Range %q: %d, want 416 or the whole file", rng, r.status)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestAuth(t *testing.T) {
	w := newWorld(t, genKey(t, "k"))
	creds, err := server.ParseCredentials(strings.NewReader("# clients\nbasic alice:s3cret:with:colons\n\nbearer tok-123\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, url := testServer(t, server.Config{Dirs: []string{w.f.dir}, Auth: creds})
	basic := func(u, p string) http.Header {
		return http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(u+":"+p))}}
	}
	routes := []string{
		"/nix-cache-info", "/" + w.flat.Hash + ".narinfo", "/" + w.f.infos[w.flat.Name].URL,
		"/log/" + w.dirPath.Hash + "-hello.drv", "/flake-registry.json", "/metrics",
		"/sha256/" + hexSum(sha256.New(), w.contents), "/" + strings.Repeat("0", 32) + ".narinfo",
	}
	for _, p := range routes {
		for _, tt := range []struct {
			name   string
			hdr    http.Header
			status int
		}{
			{"none", nil, 401},
			{"wrong password", basic("alice", "s3cret"), 401},
			{"wrong user", basic("bob", "s3cret:with:colons"), 401},
			{"wrong token", http.Header{"Authorization": {"Bearer tok-12"}}, 401},
			{"token as basic", basic("tok-123", ""), 401},
			{"basic", basic("alice", "s3cret:with:colons"), 0},
			{"bearer", http.Header{"Authorization": {"Bearer tok-123"}}, 0},
		} {
			r := do(t, "GET", url, p, tt.hdr)
			if tt.status == 401 {
				if r.status != 401 || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Basic ") {
					t.Errorf("%s with %s credentials: %d, WWW-Authenticate %q; want 401 and a challenge", p, tt.name, r.status, r.header.Get("WWW-Authenticate"))
				}
				if bytes.Contains(r.body, []byte("StoreDir")) || bytes.Contains(r.body, w.contents[:20]) {
					t.Errorf("%s with %s credentials: the 401 leaks content", p, tt.name)
				}
			} else if r.status == 401 {
				t.Errorf("%s with %s credentials: 401", p, tt.name)
			}
		}
	}
	if r := do(t, "GET", url, "/healthz", nil); r.status != 200 {
		t.Errorf("/healthz without credentials: %d, want 200", r.status)
	}
}

// TestAuthRoute checks that a request auth refuses is logged and counted
// under the route it asked for, not as "other".
func TestAuthRoute(t *testing.T) {
	w := newWorld(t, genKey(t, "k"))
	creds, err := server.ParseCredentials(strings.NewReader("bearer tok-123\n"))
	if err != nil {
		t.Fatal(err)
	}
	var logs nixtest.SyncBuffer
	_, url := testServer(t, server.Config{Dirs: []string{w.f.dir}, Auth: creds, AccessLog: slog.New(slog.NewTextHandler(&logs, nil))})
	wants := map[string]string{
		"/" + w.f.infos[w.flat.Name].URL:              "nar",
		"/" + w.flat.Hash + ".narinfo":                "narinfo",
		"/nix-cache-info":                             "nix-cache-info",
		"/log/" + w.dirPath.Hash + "-hello.drv":       "log",
		"/sha256/" + hexSum(sha256.New(), w.contents): "mirror",
		"/flake-registry.json":                        "flake-registry",
		"/no/such/route":                              "other",
	}
	for p := range wants {
		if r := do(t, "GET", url, p, nil); r.status != 401 {
			t.Fatalf("%s without credentials: %d, want 401", p, r.status)
		}
	}
	// A request is logged once its response is out: poll briefly.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var missing []string
		for p, route := range wants {
			if want := fmt.Sprintf("path=%s route=%s status=401 ", p, route); !strings.Contains(logs.String(), want) {
				missing = append(missing, want)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("access log lacks %q:\n%s", missing, logs.String())
		}
	}
}

func TestParseCredentialsErrors(t *testing.T) {
	for _, in := range []string{"", "# only a comment\n", "basic alice\n", "basic :pw\n", "basic alice:\n", "bearer\n", "bearer a b\n", "digest x\n", "Basic a:b\n"} {
		_, err := server.ParseCredentials(strings.NewReader(in))
		if !errors.Is(err, server.ErrBadAuthFile) {
			t.Errorf("ParseCredentials(%q) = %v, want ErrBadAuthFile", in, err)
		}
		if strings.Contains(in, ":") && err != nil && strings.Contains(err.Error(), "alice") {
			t.Errorf("error %q echoes the secret", err)
		}
	}
}

func TestMetrics(t *testing.T) {
	w := newWorld(t, genKey(t, "k"))
	_, url := testServer(t, server.Config{Dirs: []string{w.f.dir}})
	do(t, "GET", url, "/"+w.flat.Hash+".narinfo", nil)
	do(t, "GET", url, "/"+w.flat.Hash+".narinfo", nil)
	do(t, "GET", url, "/"+strings.Repeat("0", 32)+".narinfo", nil)
	do(t, "GET", url, "/"+w.f.infos[w.flat.Name].URL, nil)
	do(t, "GET", url, "/sha256/"+hexSum(sha256.New(), w.contents), nil)
	do(t, "POST", url, "/x", nil)
	// A request is counted once its response is out, so the client may
	// see the response first: poll briefly.
	wants := []string{
		"# TYPE nix_airgap_http_requests_total counter\n",
		`nix_airgap_http_requests_total{route="narinfo",code="200"} 2` + "\n",
		`nix_airgap_http_requests_total{route="narinfo",code="404"} 1` + "\n",
		`nix_airgap_http_requests_total{route="nar",code="200"} 1` + "\n",
		`nix_airgap_http_requests_total{route="mirror",code="200"} 1` + "\n",
		`nix_airgap_http_requests_total{route="other",code="405"} 1` + "\n",
		"nix_airgap_narinfos_served_total 2\n",
		"nix_airgap_nars_served_total 1\n",
		"nix_airgap_mirror_files_served_total 1\n",
	}
	var r response
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		r = do(t, "GET", url, "/metrics", nil)
		missing := slices.DeleteFunc(slices.Clone(wants), func(w string) bool { return strings.Contains(string(r.body), w) })
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics lack %q:\n%s", missing, r.body)
		}
	}
	if !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Errorf("metrics Content-Type %q", r.header.Get("Content-Type"))
	}
}

func TestServeShutsDownOnCancel(t *testing.T) {
	w := newWorld(t, genKey(t, "k"))
	s, err := server.New(server.Config{Dirs: []string{w.f.dir}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	if r := do(t, "GET", "http://"+ln.Addr().String(), "/healthz", nil); r.status != 200 {
		t.Fatalf("healthz: %d", r.status)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after cancel: %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}

// clock is a server.Config.Now that moves only when told to.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Unix(1700000000, 0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func BenchmarkNarInfo(b *testing.B) {
	for _, signed := range []bool{false, true} {
		name := "unsigned"
		cfg := server.Config{}
		if signed {
			name = "site-key"
			k, _, _ := signing.Generate("site-1")
			cfg.Key = &k
		}
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			writeFile(b, filepath.Join(dir, "nix-cache-info"), []byte("StoreDir: "+string(testStore)+"\n"))
			k, _, _ := signing.Generate("bundle-1")
			var hashes []string
			for i := range 100 {
				sum := sha256.Sum256([]byte(strconv.Itoa(i)))
				h, _ := storepath.NewHash(storepath.SHA256, sum[:])
				p, _ := testStore.Make("output:out", h, "pkg-"+strconv.Itoa(i))
				ni := &narinfo.NarInfo{StorePath: p, URL: "nar/" + h.Nix32() + ".nar", Compression: "none", FileHash: h, FileSize: 100, NarHash: h, NarSize: 100}
				ni.Sign(k)
				text, _ := ni.MarshalText()
				writeFile(b, filepath.Join(dir, p.Hash+".narinfo"), text)
				hashes = append(hashes, p.Hash)
			}
			cfg.Dirs = []string{dir}
			s, err := server.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			h := s.Handler()
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					req := httptest.NewRequest("GET", "/"+hashes[i%len(hashes)]+".narinfo", nil)
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, req)
					if rec.Code != 200 {
						b.Errorf("status %d", rec.Code)
						return
					}
					i++
				}
			})
		})
	}
}

// TestRegistry checks /flake-registry.json: an empty registry when no
// directory has one, and "__final" on pinned entries only for the Nix
// versions that need it (see registries).
func TestRegistry(t *testing.T) {
	key := genKey(t, "k")
	none := newFixture(t, testStore, key)
	_, url := testServer(t, server.Config{Dirs: []string{none.dir}})
	if r := do(t, "GET", url, "/flake-registry.json", nil); r.status != 200 || string(r.body) != `{"version":2,"flakes":[]}`+"\n" {
		t.Errorf("no registry anywhere: %d %q, want 200 and an empty registry", r.status, r.body)
	}

	some := newFixture(t, testStore, key)
	writeFile(t, filepath.Join(some.dir, "flake-registry.json"), []byte(`{"version":2,"flakes":[`+
		`{"from":{"type":"indirect","id":"pinned"},"to":{"type":"path","path":"/test/store/aaa-source","narHash":"sha256-AAAA"}},`+
		`{"from":{"type":"indirect","id":"floating"},"to":{"type":"github","owner":"o","repo":"r"}}]}`))
	_, url = testServer(t, server.Config{Dirs: []string{some.dir}})
	const (
		plain = `{"version":2,"flakes":[` +
			`{"from":{"type":"indirect","id":"pinned"},"to":{"type":"path","path":"/test/store/aaa-source","narHash":"sha256-AAAA"}},` +
			`{"from":{"type":"indirect","id":"floating"},"to":{"type":"github","owner":"o","repo":"r"}}]}` + "\n"
		final = `{"version":2,"flakes":[` +
			`{"from":{"type":"indirect","id":"pinned"},"to":{"__final":true,"narHash":"sha256-AAAA","path":"/test/store/aaa-source","type":"path"}},` +
			`{"from":{"type":"indirect","id":"floating"},"to":{"type":"github","owner":"o","repo":"r"}}]}` + "\n"
	)
	for _, tt := range []struct{ userAgent, want string }{
		{"curl/7.88.1 Nix/2.8.0", plain},
		{"curl/8.11.1 Nix/2.24.14", plain},
		{"curl/8.11.1 Nix/2.25.0", final},
		{"curl/8.14.1 Nix/2.34.8", final},
		{"curl/8.14.1 Nix/3.0", final},
		{"curl/8.5.0 Lix/2.91.1", plain},
		{"curl/8.5.0", plain},
		{"", plain},
		{"Nix/x.y", plain},
	} {
		r := do(t, "GET", url, "/flake-registry.json", http.Header{"User-Agent": {tt.userAgent}})
		if r.status != 200 || string(r.body) != tt.want {
			t.Errorf("User-Agent %q: %d\n%s\nwant\n%s", tt.userAgent, r.status, r.body, tt.want)
		}
	}
}

// TestRegistryBadInput checks that a directory whose registry is not
// version 2 is left out of the union, saying so as import and gc do,
// and that an entry Nix cannot read is left out of the rest.
func TestRegistryBadInput(t *testing.T) {
	key := genKey(t, "k")
	v1, garbled, good := newFixture(t, testStore, key), newFixture(t, testStore, key), newFixture(t, testStore, key)
	writeFile(t, filepath.Join(v1.dir, "flake-registry.json"), []byte(`{"version":1,"flakes":[{"from":{"type":"indirect","id":"nixpkgs"},"to":{"type":"path","path":"/V1"}}]}`))
	writeFile(t, filepath.Join(garbled.dir, "flake-registry.json"), []byte(`{"version":2,"flakes":[`))
	writeFile(t, filepath.Join(good.dir, "flake-registry.json"), []byte(`{"version":2,"flakes":[`+
		`{"from":{"type":"indirect","id":"nixpkgs"},"to":{"type":"path","path":"/G"}},`+
		`{"from":"nixpkgs","to":{"type":"path","path":"/bad"}},`+
		`{"from":{"id":"nixpkgs","type":"indirect"},"to":{"type":"path","path":"/again"}}]}`))
	var logs nixtest.SyncBuffer
	_, url := testServer(t, server.Config{Dirs: []string{v1.dir, garbled.dir, good.dir}, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	want := `{"version":2,"flakes":[{"from":{"type":"indirect","id":"nixpkgs"},"to":{"type":"path","path":"/G"}}]}` + "\n"
	if r := do(t, "GET", url, "/flake-registry.json", nil); r.status != 200 || string(r.body) != want {
		t.Errorf("registry: %d\n%s\nwant\n%s", r.status, r.body, want)
	}
	for _, w := range []string{
		filepath.Join(v1.dir, "flake-registry.json") + ": not a version 2 flake registry: version 1",
		filepath.Join(garbled.dir, "flake-registry.json") + ": not a version 2 flake registry: unexpected end of JSON input",
		`skipping bad flake registry entry`,
	} {
		if !strings.Contains(logs.String(), w) {
			t.Errorf("the log does not say %q:\n%s", w, logs.String())
		}
	}
}

// TestListing checks /HASHPART.ls: made from the NAR when the directory
// has no listing (for any compression), the directory's own file when it
// has one, and misses and bad names as elsewhere.
func TestListing(t *testing.T) {
	f := newFixture(t, testStore, genKey(t, "k"))
	dir := f.addDir("hello")
	flat := f.addFlat("file", []byte("contents"), "zstd")
	f.writeManifest(false)
	writeFile(t, filepath.Join(f.dir, dir.Hash+".ls"), []byte(`{"version":1,"root":{"type":"directory","entries":{}}}`))
	_, url := testServer(t, server.Config{Dirs: []string{f.dir}})
	for _, tt := range []struct {
		method, path string
		status       int
		body         string
	}{
		{"GET", "/" + flat.Hash + ".ls", 200, `{"version":1,"root":{"type":"regular","size":8,"narOffset":96}}`},
		{"HEAD", "/" + flat.Hash + ".ls", 200, ""},
		{"GET", "/" + dir.Hash + ".ls", 200, `{"version":1,"root":{"type":"directory","entries":{}}}`},
		{"GET", "/" + strings.Repeat("0", 32) + ".ls", 404, ""},
		{"GET", "/abc.ls", 400, ""},
		{"POST", "/" + flat.Hash + ".ls", 405, ""},
	} {
		r := do(t, tt.method, url, tt.path, nil)
		if r.status != tt.status || tt.status == 200 && string(r.body) != tt.body {
			t.Errorf("%s %s: %d %q, want %d %q", tt.method, tt.path, r.status, r.body, tt.status, tt.body)
		}
		if tt.status == 200 && r.header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: Content-Type %q", tt.method, tt.path, r.header.Get("Content-Type"))
		}
	}
	// Made from the xz NAR once the directory's own listing is gone.
	if err := os.Remove(filepath.Join(f.dir, dir.Hash+".ls")); err != nil {
		t.Fatal(err)
	}
	want := `{"version":1,"root":{"type":"directory","entries":{"hello":{"type":"regular","size":3,"narOffset":232}}}}`
	for range 2 {
		if r := do(t, "GET", url, "/"+dir.Hash+".ls", nil); r.status != 200 || string(r.body) != want {
			t.Errorf("listing of %s: %d %q, want %q", dir, r.status, r.body, want)
		}
	}
}

// TestChannels serves channels side by side, from layers: the page
// nix-channel --update fetches first, the redirect of a trailing slash,
// and the tarball, the first layer's winning.
func TestChannels(t *testing.T) {
	key := genKey(t, "k")
	a, b := newFixture(t, testStore, key), newFixture(t, testStore, key)
	writeFile(t, filepath.Join(a.dir, "channels/nixpkgs/nixexprs.tar.xz"), []byte("a's nixpkgs"))
	writeFile(t, filepath.Join(b.dir, "channels/nixpkgs/nixexprs.tar.xz"), []byte("b's nixpkgs"))
	writeFile(t, filepath.Join(b.dir, "channels/nixos-26.05/nixexprs.tar.xz"), []byte("b's nixos"))
	_, url := testServer(t, server.Config{Dirs: []string{a.dir, b.dir}})
	for _, tt := range []struct {
		target, body string
		status       int
	}{
		{"/channels/nixpkgs/nixexprs.tar.xz", "a's nixpkgs", 200},
		{"/channels/nixos-26.05/nixexprs.tar.xz", "b's nixos", 200},
		{"/channels/nixpkgs", "nix-airgap channel nixpkgs: nixexprs.tar.xz\n", 200},
		{"/channels/missing", "", 404},
		{"/channels/missing/nixexprs.tar.xz", "", 404},
		{"/channels/nixpkgs/nixexprs.tar.bz2", "", 404},
		{"/channels/.hidden/nixexprs.tar.xz", "", 404},
	} {
		r := do(t, "GET", url, tt.target, nil)
		if r.status != tt.status || (tt.status == 200 && string(r.body) != tt.body) {
			t.Errorf("GET %s: %d %q, want %d %q", tt.target, r.status, r.body, tt.status, tt.body)
		}
	}
	r := do(t, "GET", url, "/channels/nixpkgs/", nil)
	if r.status != http.StatusMovedPermanently || r.header.Get("Location") != "../nixpkgs" {
		t.Errorf("GET /channels/nixpkgs/: %d, Location %q; want a redirect to ../nixpkgs", r.status, r.header.Get("Location"))
	}
	if r := do(t, "HEAD", url, "/channels/nixpkgs/nixexprs.tar.xz", nil); r.status != 200 || r.header.Get("Content-Length") != "11" {
		t.Errorf("HEAD the tarball: %d, length %q", r.status, r.header.Get("Content-Length"))
	}
}
