package server_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/server"
)

// TestHostileURLsInServedFiles serves a directory whose narinfos and
// manifest point outside it, as a hostile or damaged bundle dropped into
// a served directory would: no route may return a byte of the outside
// file, the hashed mirror included.
func TestHostileURLsInServedFiles(t *testing.T) {
	secret := bytes.Repeat([]byte("TOP SECRET outside the served dir\n"), 50)
	for _, url := range []func(outside string) string{
		func(string) string { return "../secret.nar" },
		func(string) string { return "nar/../../secret.nar" },
		func(string) string { return "nar/..\\..\\secret.nar" },
		func(o string) string { return o },
		func(o string) string { return "file://" + o },
		func(string) string { return "nar/link.nar" }, // a symlink to the outside file
	} {
		w := newWorld(t, genKey(t, "k"))
		p := w.f.addFlat("secret.tar", secret, "none")
		ni := w.f.infos[p.Name]
		outside := filepath.Join(filepath.Dir(w.f.dir), "secret.nar")
		if err := os.Rename(filepath.Join(w.f.dir, ni.URL), outside); err != nil {
			t.Fatal(err)
		}
		must(t, os.Symlink(outside, filepath.Join(w.f.dir, "nar", "link.nar")))
		ni.URL = url(outside)
		ni.Sigs = nil
		ni.Sign(w.f.key)
		text, err := ni.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(w.f.dir, p.Hash+".narinfo"), text)
		for i := range w.f.manifest.Paths {
			if w.f.manifest.Paths[i].Path == p {
				w.f.manifest.Paths[i].URL = ni.URL
			}
		}
		w.f.writeManifest(false)
		_, base := testServer(t, server.Config{Dirs: []string{w.f.dir}})
		sum := sha256.Sum256(secret)
		for _, target := range []string{
			"/" + p.Hash + ".narinfo",
			"/" + ni.URL,
			"/nar/link.nar",
			"/sha256/" + fmt.Sprintf("%x", sum),
			"/sha256-" + base64.StdEncoding.EncodeToString(sum[:]),
		} {
			for _, method := range []string{"GET", "HEAD"} {
				r := do(t, method, base, target, nil)
				if bytes.Contains(r.body, []byte("SECRET")) {
					t.Errorf("URL %q: %s %s: %d with the outside file", ni.URL, method, target, r.status)
				}
				if r.status == 200 && target != "/"+p.Hash+".narinfo" {
					t.Errorf("URL %q: %s %s: 200", ni.URL, method, target)
				}
			}
		}
	}
}

// TestHostileRequests adds to TestHostile what raw clients can send:
// double encoding, escapes on the hashed-mirror routes, absolute-form
// targets, oversized headers and smuggling-shaped framing. Every one gets a
// 4xx and never the outside file.
func TestHostileRequests(t *testing.T) {
	w := newWorld(t, genKey(t, "k"))
	secret := []byte("TOP SECRET outside the served dir\n")
	writeFile(t, filepath.Join(filepath.Dir(w.f.dir), "secret"), secret)
	_, base := testServer(t, server.Config{Dirs: []string{w.f.dir}})
	hash := w.flat.Hash
	sha := fmt.Sprintf("%x", sha256.Sum256(w.contents))
	tests := []struct {
		method, target string
		status         int // 0: any 4xx
	}{
		{"GET", "/sha256/../../secret", 400},
		{"GET", "/sha256/%2e%2e%2f%2e%2e%2fsecret", 0},
		{"GET", "/sha256//" + sha, 400},
		{"GET", "/sha256/" + sha + "/../../secret", 400},
		{"GET", "/sha256/" + sha + "%00", 0},
		{"GET", "/sha256/" + strings.Repeat("0", 2000), 0},
		{"GET", "/nar/%252e%252e%252fsecret", 0},
		{"GET", "/%2Fetc%2Fpasswd", 400},
		{"GET", "/%2e%2e%5csecret", 400},
		{"GET", "/nix-cache-info/", 0},
		{"GET", "/nix-cache-info/..", 400},
		{"GET", "/" + hash + ".narinfo/..%2f..%2fsecret", 400},
		{"GET", "/;/nix-cache-info", 0},
		{"GET", "/nar/..;/secret", 0},
		{"GET", "/log/../../secret", 400},
		{"GET", "/flake-registry.json/../../secret", 400},
		{"GET", "http://evil.example/../secret", 400},
		{"GET", "/\x7f", 400},
		{"GET", "/" + strings.Repeat("../", 3000) + "secret", 414},
		{"HEAD", "/../secret", 400},
		{"HEAD", "/nar/%2e%2e%2fsecret", 400},
		{"CONNECT", "127.0.0.1:22", 0},
		{"get", "/nix-cache-info", 405},
		{"PUT", "/nar/new.nar", 405},
		{"POST", "/sha256/" + sha, 405},
		{"DELETE", "/flake-registry.json", 405},
		{"OPTIONS", "/healthz", 405},
	}
	for _, tt := range tests {
		r := do(t, tt.method, base, tt.target, nil)
		if tt.status != 0 && r.status != tt.status || r.status < 400 || r.status > 499 {
			t.Errorf("%s %.60q: status %d, want %d", tt.method, tt.target, r.status, tt.status)
		}
		if bytes.Contains(r.body, []byte("SECRET")) {
			t.Errorf("%s %.60q: response holds the outside file", tt.method, tt.target)
		}
	}

	raw := func(req string) (int, []byte) {
		t.Helper()
		conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		go func() { io.WriteString(conn, req) }()
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return 0, nil
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, body
	}
	host := "Host: x\r\n"
	for _, tt := range []struct {
		name   string
		req    string
		status int
	}{
		{"header over 64 KiB", "GET /nix-cache-info HTTP/1.1\r\n" + host + "X-Big: " + strings.Repeat("a", 70<<10) + "\r\n\r\n", 431},
		{"thousands of headers", "GET /nix-cache-info HTTP/1.1\r\n" + host + strings.Repeat("X-A: b\r\n", 20000) + "\r\n", 431},
		// Content-Length with chunked is answered as chunked and the
		// connection closed, as RFC 9112 §6.3 allows: not tested here.
		{"two Content-Lengths", "GET /nix-cache-info HTTP/1.1\r\n" + host + "Content-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400},
		{"no Host", "GET /nix-cache-info HTTP/1.1\r\n\r\n", 400},
		{"HTTP/0.9", "GET /nix-cache-info\r\n\r\n", 400},
		{"bad version", "GET /nix-cache-info HTTP/9.9\r\n" + host + "\r\n", 505},
		{"NUL in the target", "GET /nix-cache-info\x00/../secret HTTP/1.1\r\n" + host + "\r\n", 400},
		{"space in the target", "GET /../ secret HTTP/1.1\r\n" + host + "\r\n", 400},
	} {
		status, body := raw(tt.req)
		if status != tt.status {
			t.Errorf("%s: status %d, want %d", tt.name, status, tt.status)
		}
		if bytes.Contains(body, []byte("SECRET")) {
			t.Errorf("%s: response holds the outside file", tt.name)
		}
	}

	// Range headers on a narinfo and a mirror file as well as a NAR.
	for _, target := range []string{"/" + hash + ".narinfo", "/sha256/" + sha} {
		for _, rng := range []string{"bytes=-0", "bytes=5-2", "bytes=999999999-", "bytes=0-0,-1,0-0,-1,0-0,-1,0-0,-1,0-0,-1,0-0,-1,0-0,-1,0-0,-1,0-0,-1", "bytes=--1", "bytes=0x10-"} {
			r := do(t, "GET", base, target, http.Header{"Range": {rng}})
			if r.status != 416 && r.status != 200 && r.status != 206 {
				t.Errorf("%s Range %q: %d", target, rng, r.status)
			}
			if bytes.Contains(r.body, []byte("SECRET")) {
				t.Errorf("%s Range %q: response holds the outside file", target, rng)
			}
		}
	}
}

// TestAuthEveryRoute checks that with authentication on, every route and
// every spelling of one, hostile or not, is refused without credentials,
// /healthz alone excepted.
func TestAuthEveryRoute(t *testing.T) {
	w := newWorld(t, genKey(t, "k"))
	creds, err := server.ParseCredentials(strings.NewReader("bearer tok-123\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, base := testServer(t, server.Config{Dirs: []string{w.f.dir}, Auth: creds})
	sum := sha256.Sum256(w.contents)
	sha := fmt.Sprintf("%x", sum)
	for _, method := range []string{"GET", "HEAD"} {
		for _, target := range []string{
			"/", "/nix-cache-info", "/" + w.flat.Hash + ".narinfo", "/" + strings.Repeat("0", 32) + ".narinfo",
			"/" + w.f.infos[w.flat.Name].URL, "/nar/", "/nar/missing.nar.zst", "/log/" + w.dirPath.Hash + "-hello.drv",
			"/flake-registry.json", "/metrics", "/manifest.json", "/sha256/" + sha, "/sha256-" + base64.StdEncoding.EncodeToString(sum[:]),
			"/sha512/" + strings.Repeat("0", 128), "/md5/" + strings.Repeat("0", 32), "/healthz/", "/healthz/../nix-cache-info",
			"/HEALTHZ", "/nar/../nix-cache-info", "//healthz",
		} {
			r := do(t, method, base, target, http.Header{"Authorization": {"Bearer tok-12"}})
			if r.status < 400 || r.status > 499 {
				t.Errorf("%s %s without good credentials: %d", method, target, r.status)
			}
			if bytes.Contains(r.body, []byte("StoreDir")) || bytes.Contains(r.body, w.contents[:20]) {
				t.Errorf("%s %s without good credentials: the response leaks content", method, target)
			}
		}
	}
	if r := do(t, "GET", base, "/healthz", nil); r.status != 200 {
		t.Errorf("/healthz without credentials: %d", r.status)
	}
}

// TestSlowloris opens many connections that send their headers a byte at a
// time. The server must keep answering others promptly and drop the slow
// ones once ReadHeaderTimeout (10 s) passes. NIX_AIRGAP_SLOWLORIS_CONNS
// sets how many (default 100).
func TestSlowloris(t *testing.T) {
	t.Parallel()
	conns := 100
	if s := os.Getenv("NIX_AIRGAP_SLOWLORIS_CONNS"); s != "" {
		conns, _ = strconv.Atoi(s)
	}
	w := newWorld(t, genKey(t, "k"))
	_, base := testServer(t, server.Config{Dirs: []string{w.f.dir}})
	addr := strings.TrimPrefix(base, "http://")

	var dropped, opened atomic.Int64
	var dropAt sync.Map
	start := time.Now()
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Errorf("slow client %d: %v", i, err)
				return
			}
			defer c.Close()
			opened.Add(1)
			req := "GET /nix-cache-info HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 100)
			for j := 0; j < len(req); j++ {
				c.SetWriteDeadline(time.Now().Add(2 * time.Second))
				if _, err := c.Write([]byte{req[j]}); err != nil {
					break
				}
				// A closed connection shows as a readable EOF or a
				// 408 response.
				c.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
				var b [64]byte
				if _, err := c.Read(b[:]); err == nil || !isTimeout(err) {
					break
				}
				if time.Since(start) > 20*time.Second {
					return // never dropped
				}
			}
			dropped.Add(1)
			dropAt.Store(i, time.Since(start))
		})
	}
	// Meanwhile, normal clients are served promptly.
	client := &http.Client{Timeout: 2 * time.Second}
	var worst time.Duration
	for time.Since(start) < 8*time.Second {
		t0 := time.Now()
		resp, err := client.Get(base + "/" + w.flat.Hash + ".narinfo")
		if err != nil {
			t.Fatalf("a normal request during the slowloris: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("a normal request during the slowloris: %d", resp.StatusCode)
		}
		worst = max(worst, time.Since(t0))
		time.Sleep(50 * time.Millisecond)
	}
	if worst > time.Second {
		t.Errorf("a normal request took %s during the slowloris", worst)
	}
	wg.Wait()
	var first, last time.Duration = time.Hour, 0
	dropAt.Range(func(_, v any) bool {
		d := v.(time.Duration)
		first, last = min(first, d), max(last, d)
		return true
	})
	if dropped.Load() != opened.Load() || opened.Load() != int64(conns) {
		t.Errorf("%d slow connections opened, %d dropped by the server, want %d", opened.Load(), dropped.Load(), conns)
	}
	if first < 9*time.Second {
		t.Errorf("a slow connection was dropped after %s, before ReadHeaderTimeout", first)
	}
	t.Logf("%d slow connections dropped between %s and %s; slowest normal request %s", dropped.Load(), first.Round(time.Millisecond), last.Round(time.Millisecond), worst.Round(time.Microsecond))
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
