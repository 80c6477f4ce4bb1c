package cache

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storage/s3test"
)

// fakeCache serves files from a map, with per-path status overrides and a
// record of the requests it got.
type fakeCache struct {
	mu       sync.Mutex
	files    map[string][]byte
	statuses map[string][]int // served in turn before the file
	requests []*http.Request
}

func (c *fakeCache) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	c.requests = append(c.requests, r)
	if s := c.statuses[r.URL.Path]; len(s) > 0 {
		c.statuses[r.URL.Path] = s[1:]
		c.mu.Unlock()
		http.Error(w, "nope", s[0])
		return
	}
	data, ok := c.files[r.URL.Path]
	c.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	// Like a misconfigured server: gzip whenever the client allows it.
	if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		zw.Write(data)
		zw.Close()
		return
	}
	w.Write(data)
}

func (c *fakeCache) count(path string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, r := range c.requests {
		if r.URL.Path == path {
			n++
		}
	}
	return n
}

// serveDir puts d's files in a fakeCache behind an httptest server.
func serveDir(t *testing.T, files map[string][]byte) (*fakeCache, *httptest.Server) {
	fc := &fakeCache{files: files, statuses: map[string][]int{}}
	srv := httptest.NewServer(fc)
	t.Cleanup(srv.Close)
	return fc, srv
}

func TestHTTP(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	ni := addTestNAR(t, d, "http", strings.Repeat("over the wire ", 5000), "none")
	if err := d.PutNarInfo(t.Context(), ni); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, name := range []string{"nix-cache-info", ni.StorePath.Hash + ".narinfo", ni.URL} {
		data, err := io.ReadAll(mustOpen(t, d, name))
		if err != nil {
			t.Fatal(err)
		}
		files["/sub/"+name] = data
	}
	fc, srv := serveDir(t, files)

	// http.DefaultClient asks for gzip on its own and would gunzip; the
	// bytes must still be the file's.
	h, err := OpenHTTP(ctx, srv.URL+"/sub/", http.DefaultClient)
	if err != nil {
		t.Fatal(err)
	}
	if h.URL() != srv.URL+"/sub" || h.StoreDir() != testStore || h.Info().Priority != 40 || !h.Info().WantMassQuery {
		t.Errorf("OpenHTTP = %s %+v", h.URL(), h.Info())
	}
	got, err := h.NarInfo(ctx, ni.StorePath.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != ni.String() {
		t.Errorf("NarInfo = %s, want %s", got, ni)
	}
	for _, url := range []string{ni.URL, srv.URL + "/sub/" + ni.URL} {
		r, err := h.Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(r)
		r.Close()
		if !bytes.Equal(body, files["/sub/"+ni.URL]) {
			t.Errorf("Open(%s) returned %d bytes, not the file's %d", url, len(body), len(files["/sub/"+ni.URL]))
		}
	}
	for _, r := range fc.requests {
		if ae := r.Header.Get("Accept-Encoding"); ae != "identity" {
			t.Errorf("request %s had Accept-Encoding %q, want identity", r.URL, ae)
		}
	}

	missing := strings.Repeat("1", 32)
	for _, code := range []int{404, 403, 410} {
		fc.statuses["/sub/"+missing+".narinfo"] = []int{code}
		_, err := WithRetry(h, 3, time.Millisecond).NarInfo(ctx, missing)
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), srv.URL+"/sub/"+missing+".narinfo") {
			t.Errorf("NarInfo answered %d = %v, want ErrNotFound naming the URL", code, err)
		}
	}
	if n := fc.count("/sub/" + missing + ".narinfo"); n != 3 {
		t.Errorf("misses were fetched %d times, want 3 (no retries)", n)
	}
	if _, err := h.Open(ctx, "nar/missing.nar"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open(missing) = %v, want ErrNotFound", err)
	}
	if _, err := h.Open(ctx, "file:///etc/passwd"); err == nil {
		t.Error("Open(file://...) succeeded")
	}
}

func mustOpen(t *testing.T, d *Cache, name string) io.Reader {
	t.Helper()
	f, err := d.Open(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestHTTPRetry(t *testing.T) {
	ctx := context.Background()
	info := []byte("StoreDir: /test/store\n")
	fc, srv := serveDir(t, map[string][]byte{"/nix-cache-info": info, "/nar/x.nar": []byte("x")})
	h, err := OpenHTTP(ctx, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if h.Info().Priority != 50 || h.Info().WantMassQuery {
		t.Errorf("defaults = %+v, want priority 50, no mass query", h.Info())
	}

	// 500 three times: retried, then the last error, naming URL and status.
	fc.statuses["/nar/x.nar"] = []int{500, 500, 500}
	_, err = WithRetry(h, 3, time.Millisecond).Open(ctx, "nar/x.nar")
	if err == nil || !strings.Contains(err.Error(), srv.URL+"/nar/x.nar") || !strings.Contains(err.Error(), "500") {
		t.Errorf("Open after three 500s = %v, want an error naming the URL and 500", err)
	}
	if n := fc.count("/nar/x.nar"); n != 3 {
		t.Errorf("requests = %d, want 3", n)
	}
	// 502 then 503 then the file.
	fc.statuses["/nar/x.nar"] = []int{502, 503}
	r, err := WithRetry(h, 3, time.Millisecond).Open(ctx, "nar/x.nar")
	if err != nil {
		t.Fatalf("Open after two 5xx = %v", err)
	}
	r.Close()
	// Cancelling stops the backoff.
	fc.statuses["/nar/x.nar"] = []int{500, 500}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = WithRetry(h, 5, time.Hour).Open(cctx, "nar/x.nar")
	if err == nil || time.Since(start) > 10*time.Second {
		t.Errorf("Open with an hour of backoff and a 50ms deadline = %v after %v", err, time.Since(start))
	}
}

// resetServer accepts connections, reads a request and resets the
// connection: a server that breaks off part-way. It returns its URL and
// the number of connections it took so far.
func resetServer(t *testing.T) (string, func() int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var n atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Read(make([]byte, 4096))
			c.(*net.TCPConn).SetLinger(0) // close with a reset
			c.Close()
		}
	}()
	return "http://" + l.Addr().String(), func() int { return int(n.Load()) }
}

// TestHTTPDown: a request to a cache that does not answer is tried
// again, but for a connection refused, which fails at once; every answer
// that is no answer matches storage.ErrUnavailable (exit 75), as a
// bucket's does, and names the URL.
func TestHTTPDown(t *testing.T) {
	info := []byte("StoreDir: /test/store\n")
	fc, srv := serveDir(t, map[string][]byte{"/nix-cache-info": info})
	reset, resets := resetServer(t)
	refused := "http://" + s3test.RefusedAddr(t)
	for _, tt := range []struct {
		name        string
		base        string
		status      int // served three times, when base is srv's
		requests    func() int
		want        int // requests
		unavailable bool
	}{
		{"refused", refused, 0, nil, 0, true},
		{"reset", reset, 0, resets, 3, true},
		{"503", srv.URL, 503, func() int { return fc.count("/nar/x.nar") }, 3, true},
		{"502", srv.URL, 502, func() int { return fc.count("/nar/x.nar") }, 3, true},
		{"500", srv.URL, 500, func() int { return fc.count("/nar/x.nar") }, 3, false},
		{"404", srv.URL, 404, func() int { return fc.count("/nar/x.nar") }, 1, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fc.mu.Lock()
			fc.requests = nil
			fc.statuses["/nar/x.nar"] = []int{tt.status, tt.status, tt.status}
			fc.mu.Unlock()
			h := &HTTP{base: tt.base, client: NewHTTPClient(), info: CacheInfo{StoreDir: "/test/store"}}
			before := 0
			if tt.requests != nil {
				before = tt.requests()
			}
			// A backoff of a minute, cut to five seconds: a refusal tried
			// again would take them.
			backoff := time.Minute
			if tt.want > 1 {
				backoff = time.Millisecond
			}
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			start := time.Now()
			_, err := WithRetry(h, 3, backoff).Open(ctx, "nar/x.nar")
			took := time.Since(start)
			if err == nil || !strings.Contains(err.Error(), tt.base+"/nar/x.nar: ") {
				t.Fatalf("Open = %v, want an error naming %s", err, tt.base+"/nar/x.nar")
			}
			if errors.Is(err, storage.ErrUnavailable) != tt.unavailable {
				t.Errorf("Open = %v, unavailable %v, want %v", err, !tt.unavailable, tt.unavailable)
			}
			if tt.requests != nil {
				if got := tt.requests() - before; got != tt.want {
					t.Errorf("%d requests, want %d", got, tt.want)
				}
			} else if took > 2*time.Second {
				t.Errorf("took %s: tried again", took)
			}
			t.Logf("%s: %v", took.Round(time.Millisecond), err)
		})
	}
}

// TestTransient: what a request's failure says about trying it again.
func TestTransient(t *testing.T) {
	u := "http://x.invalid/nar/x.nar"
	noAnswer := func(err error) error {
		return &NetError{Op: "GET", URL: u, Err: &url.Error{Op: "Get", URL: u, Err: &net.OpError{Op: "dial", Net: "tcp", Err: err}}}
	}
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{noAnswer(&os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}), false},
		{noAnswer(&net.DNSError{Err: "no such host", Name: "x.invalid", IsNotFound: true}), false},
		{noAnswer(&net.DNSError{Err: "i/o timeout", Name: "x.invalid", IsTimeout: true}), true},
		{noAnswer(&os.SyscallError{Syscall: "read", Err: syscall.ECONNRESET}), true},
		{fmt.Errorf("read %s: %w", u, io.ErrUnexpectedEOF), true},
		{&StatusError{Op: "GET", URL: u, Status: "503 Service Unavailable", Code: 503}, true},
		{&StatusError{Op: "GET", URL: u, Status: "429 Too Many Requests", Code: 429}, true},
		{&StatusError{Op: "GET", URL: u, Status: "404 Not Found", Code: 404}, false},
		{&StatusError{Op: "GET", URL: u, Status: "400 Bad Request", Code: 400}, false},
		{fmt.Errorf("GET %s: %w", u, context.Canceled), false},
		{ErrCorrupt, false},
	} {
		if got := transient(tt.err); got != tt.want {
			t.Errorf("transient(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestOpenHTTPErrors(t *testing.T) {
	ctx := context.Background()
	_, srv := serveDir(t, map[string][]byte{"/bad/nix-cache-info": []byte("Priority: 1\n")})
	addr := s3test.RefusedAddr(t)
	for _, tt := range []struct {
		url, want   string // the error's start
		unavailable bool
	}{
		{srv.URL + "/none", "open " + srv.URL + "/none/nix-cache-info: 404 Not Found", false},
		{srv.URL + "/bad", "open " + srv.URL + "/bad/nix-cache-info: no StoreDir", false},
		{"http://" + addr, "open http://" + addr + "/nix-cache-info: dial tcp " + addr + ": connect: connection refused", true},
		{"ftp://example.org", "open cache ftp://example.org: not an http", false},
		{"http://", "open cache http://: not an http", false},
	} {
		_, err := OpenHTTP(ctx, tt.url, nil)
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) || errors.Is(err, storage.ErrUnavailable) != tt.unavailable {
			t.Errorf("OpenHTTP(%s) = %v, want an error starting %q, unavailable %v", tt.url, err, tt.want, tt.unavailable)
		}
	}
}

func TestOpen(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	_, srv := serveDir(t, map[string][]byte{"/nix-cache-info": []byte("StoreDir: /test/store\n")})
	for _, loc := range []string{d.String(), "file://" + d.String(), "file://" + d.String() + "?compression=zstd", srv.URL} {
		src, err := Open(ctx, loc, nil)
		if err != nil {
			t.Errorf("Open(%s): %v", loc, err)
			continue
		}
		if _, err := src.NarInfo(ctx, strings.Repeat("0", 32)); !errors.Is(err, ErrNotFound) {
			t.Errorf("Open(%s).NarInfo(missing) = %v", loc, err)
		}
	}
	for _, loc := range []string{"s3://bucket", "file://", t.TempDir()} {
		if _, err := Open(ctx, loc, nil); err == nil {
			t.Errorf("Open(%s) succeeded", loc)
		}
	}
}

// TestOpenHTTPRetries: the GET of nix-cache-info that opens a cache is
// tried again on a 503 or a connection reset, as a narinfo's is and as
// Nix does, up to RetryAttempts times; a refused connection fails at
// once. What is still no answer matches storage.ErrUnavailable.
func TestOpenHTTPRetries(t *testing.T) {
	info := []byte("StoreDir: /test/store\n")
	reset, resets := resetServer(t)
	refused := "http://" + s3test.RefusedAddr(t)
	for _, tt := range []struct {
		name     string
		statuses []int // answered before the file
		base     string
		requests func() int // for base other than the file server's
		want     int        // requests
		err      string     // "" for an open that succeeds
	}{
		{"503 once", []int{503}, "", nil, 2, ""},
		{"503 twice", []int{503, 503}, "", nil, 3, ""},
		{"503 always", []int{503, 503, 503, 503}, "", nil, RetryAttempts, ": 503 Service Unavailable"},
		{"reset", nil, reset, resets, RetryAttempts, ": read tcp "},
		{"refused", nil, refused, nil, 0, ": dial tcp "},
		{"404", []int{404}, "", nil, 1, ": 404 Not Found"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // the tries wait seconds in all
			fc, srv := serveDir(t, map[string][]byte{"/nix-cache-info": info})
			fc.statuses["/nix-cache-info"] = tt.statuses
			base, requests := tt.base, tt.requests
			if base == "" {
				base, requests = srv.URL, func() int { return fc.count("/nix-cache-info") }
			}
			before := 0
			if requests != nil {
				before = requests()
			}
			start := time.Now()
			h, err := OpenHTTP(t.Context(), base, nil)
			took := time.Since(start)
			t.Logf("%s: %v", took.Round(time.Millisecond), err)
			if tt.err == "" {
				if err != nil || h.StoreDir() != "/test/store" {
					t.Fatalf("OpenHTTP = %v, want the cache", err)
				}
			} else {
				want := "open " + base + "/nix-cache-info" + tt.err
				if err == nil || !strings.HasPrefix(err.Error(), want) {
					t.Fatalf("OpenHTTP = %v, want an error starting %q", err, want)
				}
				if unavailable := tt.name != "404"; errors.Is(err, storage.ErrUnavailable) != unavailable {
					t.Errorf("OpenHTTP = %v, unavailable %v, want %v", err, !unavailable, unavailable)
				}
			}
			if requests != nil {
				if got := requests() - before; got != tt.want {
					t.Errorf("%d requests, want %d", got, tt.want)
				}
			} else if took >= RetryBackoff {
				t.Errorf("took %s: tried again", took)
			}
		})
	}
}
