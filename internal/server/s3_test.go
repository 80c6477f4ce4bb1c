package server_test

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/server"
	"github.com/nix-airgap/nix-airgap/internal/storage/s3test"
)

// TestNarInfoStoreDown serves a bucket in front of a directory and then
// cuts the bucket's store off, refusing connections or answering none: a
// narinfo or NAR only the bucket may hold is a server error, which Nix
// retries and does not remember, not a miss, which a client remembers and
// answers by building; the directory still answers for what it holds.
// Every answer comes within a second or two, not after retries that keep
// a client from going on to its other substituters.
func TestNarInfoStoreDown(t *testing.T) {
	s3 := s3test.Start(t)
	dir, bucket, names := bucketAndDir(t, s3, 3)
	for _, tc := range []struct {
		how    string
		cut    func(*proxy, *testing.T)
		within time.Duration
	}{
		{"refusing connections", func(p *proxy, _ *testing.T) { p.close() }, time.Second},
		// A connection waits for the dial timeout.
		{"answering none", (*proxy).blackhole, 4 * time.Second},
		// A request waits for the response header timeout.
		{"hanging", func(p *proxy, _ *testing.T) { p.hang() }, 7 * time.Second},
	} {
		t.Run(tc.how, func(t *testing.T) {
			p := startProxy(t, s3.Endpoint)
			_, base := testServer(t, server.Config{Dirs: []string{p.via(bucket), dir}, Log: slog.New(slog.DiscardHandler)})
			client := &http.Client{Timeout: 30 * time.Second}
			get := func(path string) (int, time.Duration) {
				t.Helper()
				return timedGet(t, client, base+path)
			}
			if got, _ := get(names.narinfos[0]); got != http.StatusOK {
				t.Fatalf("GET %s from the bucket: %d, want 200", names.narinfos[0], got)
			}
			tc.cut(p, t)
			for _, tt := range []struct {
				what, path string
				ok         bool
			}{
				{"a narinfo only the bucket has", names.narinfos[1], false},
				{"a narinfo the directory has", names.narinfos[2], true},
				{"a narinfo neither has", "/" + strings.Repeat("1", 32) + ".narinfo", false},
				{"a NAR both have", names.nars[0], true},
				{"a NAR neither has", "/nar/" + strings.Repeat("0", 52) + ".nar", false},
			} {
				got, took := get(tt.path)
				t.Logf("GET %s (%s): %d after %s", tt.path, tt.what, got, took.Round(time.Millisecond))
				if tt.ok && got != http.StatusOK || !tt.ok && got < 500 {
					t.Errorf("GET %s (%s) with the bucket's store down: %d, want %s", tt.path, tt.what, got, map[bool]string{true: "200", false: "a 5xx"}[tt.ok])
				}
				if took > tc.within {
					t.Errorf("GET %s (%s) with the bucket's store down: answered after %s, want within %s", tt.path, tt.what, took.Round(time.Millisecond), tc.within)
				}
			}
		})
	}
}

// timedGet GETs url, reading the whole answer, and says its status and
// how long it took.
func timedGet(t *testing.T, client *http.Client, url string) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, time.Since(start)
}

// bucketAndDir makes a cache of n small paths, and one NAR of 1 MiB, in a
// directory and copies it into a new bucket of s3; then the directory
// keeps every NAR but only the last narinfo.
func bucketAndDir(t *testing.T, s3 *s3test.Server, n int) (dir, bucket string, names benchNames) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "cache")
	names = makeBenchCache(t, dir, n, 64, 1)
	bucket = s3.Bucket(t)
	copyToBucket(t, dir, bucket)
	for _, n := range names.narinfos[:n-1] {
		if err := os.Remove(filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	return dir, bucket, names
}

// proxy forwards TCP connections to an address until closed, when it
// refuses new ones and cuts those open: a store gone down.
type proxy struct {
	addr     string
	to       string
	hung     atomic.Bool
	accepted atomic.Int64
	mu       sync.Mutex
	ln       net.Listener
	conns    []net.Conn
	ups      []net.Conn
	hole     int        // blackhole's listening socket, or -1
	queued   []net.Conn // the connections that fill its queue
}

func startProxy(t *testing.T, to string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: ln.Addr().String(), to: to, hole: -1}
	t.Cleanup(p.close)
	p.serve(ln)
	return p
}

// via is the URL of bucket, on the store the proxy forwards to, through
// the proxy.
func (p *proxy) via(bucket string) string {
	return strings.Replace(bucket, "endpoint="+p.to, "endpoint="+p.addr, 1)
}

func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.accepted.Add(1)
			p.mu.Lock()
			p.conns = append(p.conns, c)
			p.mu.Unlock()
			if p.hung.Load() {
				continue
			}
			up, err := net.Dial("tcp", p.to)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.ups = append(p.ups, up)
			p.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() {
				io.Copy(c, up)
				if !p.hung.Load() {
					c.Close()
				}
			}()
		}
	}()
}

func (p *proxy) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ln.Close()
	for _, c := range append(append(p.conns, p.ups...), p.queued...) {
		c.Close()
	}
	p.conns, p.ups, p.queued = nil, nil, nil
	if p.hole >= 0 {
		syscall.Close(p.hole)
		p.hole = -1
	}
}

// restore takes connections at the proxy's address again, after close or
// blackhole, and forwards them, unless hung: the store back up.
func (p *proxy) restore(t *testing.T, hung bool) {
	t.Helper()
	p.close()
	p.hung.Store(hung)
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.serve(ln)
}

// hang keeps taking connections but answers nothing more on any of them:
// a store that is up but stuck.
func (p *proxy) hang() {
	p.hung.Store(true)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, up := range p.ups {
		up.Close()
	}
	p.ups = nil
}

// blackhole closes the proxy and listens at its address again but never
// accepts, and fills the queue of connections waiting to be: a connection
// then is never answered, as to a store whose host is gone.
func (p *proxy) blackhole(t *testing.T) {
	p.close()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.hole = fd
	p.mu.Unlock()
	addr := p.ln.Addr().(*net.TCPAddr)
	sa := &syscall.SockaddrInet4{Port: addr.Port}
	copy(sa.Addr[:], addr.IP.To4())
	// Reusing the address its closed connections still hold; a backlog
	// of 0 takes one connection waiting.
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, sa); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	for range 16 {
		c, err := net.DialTimeout("tcp", p.addr, 300*time.Millisecond)
		if err != nil {
			return // full: connections now wait unanswered
		}
		p.mu.Lock()
		p.queued = append(p.queued, c)
		p.mu.Unlock()
	}
	t.Fatalf("listening at %s without accepting: its queue never filled", p.addr)
}
