package nixtest

import (
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Request is one request the Internet received.
type Request struct {
	Method string
	Path   string
}

// Internet is a local HTTP server on 127.0.0.1 playing "the internet":
// upstream download sites that a test can watch and switch off. It lives
// in the test process's network namespace, so commands in a NetNS cannot
// reach it.
type Internet struct {
	// URL is the base URL, such as http://127.0.0.1:41234, with no
	// trailing slash.
	URL string
	// Dir holds the served files: GET /NAME serves Dir/NAME.
	Dir string

	t   testing.TB
	srv *httptest.Server

	mu       sync.Mutex
	requests []Request
}

// StartInternet starts an Internet serving an empty dir; it stops when
// the test ends.
func StartInternet(t testing.TB) *Internet {
	t.Helper()
	inet := &Internet{Dir: t.TempDir(), t: t}
	inet.srv = httptest.NewServer(http.HandlerFunc(inet.serve))
	inet.URL = inet.srv.URL
	t.Cleanup(inet.Stop)
	return inet
}

// serve answers like a plain static file server: GET and HEAD of files,
// 404 for anything else. It never sets Content-Encoding (Nix 2.8 would
// try to decode the body).
func (inet *Internet) serve(w http.ResponseWriter, r *http.Request) {
	inet.mu.Lock()
	inet.requests = append(inet.requests, Request{Method: r.Method, Path: r.URL.Path})
	inet.mu.Unlock()
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name := path.Clean("/" + r.URL.Path)
	f, err := os.Open(filepath.Join(inet.Dir, filepath.FromSlash(name)))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			http.NotFound(w, r)
			return
		}
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		http.NotFound(w, r)
		return
	}
	http.ServeContent(w, r, name, st.ModTime(), f)
}

// Add publishes data as NAME (a slash-separated relative path such as
// "dist/hello-1.0.tar.gz") and returns its URL. It fails the test on a
// bad name; call it from the test goroutine.
func (inet *Internet) Add(name string, data []byte) (url string) {
	inet.t.Helper()
	if !fs.ValidPath(name) || name == "." || strings.Contains(name, `\`) {
		inet.t.Fatalf("internet add %q: not a clean relative slash-separated path", name)
	}
	file := filepath.Join(inet.Dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		inet.t.Fatalf("internet add %s: %v", name, err)
	}
	if err := os.WriteFile(file, data, 0o644); err != nil {
		inet.t.Fatalf("internet add %s: %v", name, err)
	}
	return inet.URL + "/" + name
}

// Requests returns every request received so far, in order.
func (inet *Internet) Requests() []Request {
	inet.mu.Lock()
	defer inet.mu.Unlock()
	return append([]Request(nil), inet.requests...)
}

// Fetched reports how many GET requests asked for NAME (as passed to Add).
func (inet *Internet) Fetched(name string) int {
	n := 0
	for _, r := range inet.Requests() {
		if r.Method == http.MethodGet && r.Path == "/"+name {
			n++
		}
	}
	return n
}

// Stop shuts the Internet down: from then on every connection to URL is
// refused, as if the network were gone. It is safe to call twice.
func (inet *Internet) Stop() {
	inet.srv.Close()
}
