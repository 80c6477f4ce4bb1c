package cache

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
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
	// A dead server is a network error: transient, named.
	srv.Close()
	_, err = WithRetry(h, 2, time.Millisecond).Open(ctx, "nar/x.nar")
	if err == nil || !transient(err) || !strings.Contains(err.Error(), srv.URL) {
		t.Errorf("Open from a closed server = %v, want a transient error naming the URL", err)
	}
}

func TestOpenHTTPErrors(t *testing.T) {
	ctx := context.Background()
	_, srv := serveDir(t, map[string][]byte{"/bad/nix-cache-info": []byte("Priority: 1\n")})
	for _, tt := range []struct{ url, want string }{
		{srv.URL + "/none", srv.URL + "/none/nix-cache-info: 404"},
		{srv.URL + "/bad", "no StoreDir"},
		{"ftp://example.org", "not an http"},
		{"http://", "not an http"},
	} {
		if _, err := OpenHTTP(ctx, tt.url, nil); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("OpenHTTP(%s) = %v, want an error containing %q", tt.url, err, tt.want)
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
