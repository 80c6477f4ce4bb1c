package server_test

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
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

// TestProxyHoldsPort: the proxy that cuts a store off in these tests keeps
// its port while the store is down, refusing connections or answering
// none, so that no other process can listen there and restore always
// gets it back.
func TestProxyHoldsPort(t *testing.T) {
	store, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	go func() {
		for {
			c, err := store.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "up")
			c.Close()
		}
	}()
	p := startProxy(t, store.Addr().String())
	forwards := func(when string) {
		t.Helper()
		c, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		defer c.Close()
		if got, err := io.ReadAll(c); string(got) != "up" || err != nil {
			t.Errorf("%s: read %q, %v through the proxy; want %q", when, got, err, "up")
		}
	}
	held := func(when string) {
		t.Helper()
		if ln, err := net.Listen("tcp", p.addr); !errors.Is(err, syscall.EADDRINUSE) {
			if err == nil {
				ln.Close()
			}
			t.Errorf("%s: another listener at the proxy's %s: %v, want address in use", when, p.addr, err)
		}
	}
	forwards("started")
	p.close()
	if c, err := net.DialTimeout("tcp", p.addr, time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		if err == nil {
			c.Close()
		}
		t.Errorf("closed: dial %s: %v, want connection refused", p.addr, err)
	}
	held("closed")
	p.restore(t, false)
	forwards("restored after close")
	p.blackhole(t)
	held("blackholed")
	p.restore(t, false)
	forwards("restored after blackhole")
}

// proxy forwards TCP connections to an address until closed, when it
// refuses new ones and cuts those open: a store gone down. Its socket
// stays bound to its port from start to cleanup, listening or not, so
// that no other process can take the port while the store is down and
// restore always gets it back.
type proxy struct {
	addr     string
	to       string
	fd       int // the socket at addr
	hung     atomic.Bool
	accepted atomic.Int64
	mu       sync.Mutex
	ln       net.Listener // accepting from fd, or nil
	conns    []net.Conn
	ups      []net.Conn
	queued   []net.Conn // the connections that fill a blackhole's queue
}

func startProxy(t *testing.T, to string) *proxy {
	t.Helper()
	fd, addr := boundSocket(t)
	p := &proxy{addr: addr, to: to, fd: fd}
	t.Cleanup(func() {
		p.close()
		syscall.Close(fd)
	})
	p.listen(t, 128)
	p.serve(t)
	return p
}

// via is the URL of bucket, on the store the proxy forwards to, through
// the proxy.
func (p *proxy) via(bucket string) string {
	return strings.Replace(bucket, "endpoint="+p.to, "endpoint="+p.addr, 1)
}

// boundSocket is a TCP socket bound to a free port of 127.0.0.1 and not
// listening: connections to it are refused. Bound to a port it names, not
// to port 0, it keeps the port when it stops listening.
func boundSocket(t *testing.T) (fd int, addr string) {
	t.Helper()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		err = syscall.Bind(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}})
		if err == nil {
			return fd, net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		}
		syscall.Close(fd)
		if !errors.Is(err, syscall.EADDRINUSE) { // else another process took the port first
			t.Fatal(err)
		}
	}
	t.Fatal("no free port on 127.0.0.1 after 100 tries")
	return -1, ""
}

// listen makes the proxy's socket listen with a queue of backlog. It
// takes SO_REUSEADDR only while listening: re-listening needs it past the
// TIME_WAIT of connections it closed, but with it set, a socket that does
// not listen lets another process listen at its port.
func (p *proxy) listen(t *testing.T, backlog int) {
	t.Helper()
	if err := syscall.SetsockoptInt(p.fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(p.fd, backlog); err != nil {
		t.Fatalf("listen at %s: %v", p.addr, err)
	}
}

// serve accepts connections at the proxy's listening socket and forwards
// them, unless hung.
func (p *proxy) serve(t *testing.T) {
	t.Helper()
	fd, err := syscall.Dup(p.fd)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), p.addr)
	ln, err := net.FileListener(f) // a dup of fd: closing it leaves p.fd as it is
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.ln != ln { // closed since Accept returned
				p.mu.Unlock()
				c.Close()
				return
			}
			p.accepted.Add(1)
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

// close stops the proxy's socket listening, which refuses new connections
// and resets those queued, and cuts those open; the socket keeps its port.
func (p *proxy) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	// On Linux, shutting a listening socket down for reading stops it
	// listening (one not listening would be marked shut down instead).
	if on, err := syscall.GetsockoptInt(p.fd, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN); err == nil && on == 1 {
		syscall.Shutdown(p.fd, syscall.SHUT_RD)
		syscall.SetsockoptInt(p.fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 0)
	}
	for _, c := range append(append(p.conns, p.ups...), p.queued...) {
		c.Close()
	}
	p.conns, p.ups, p.queued = nil, nil, nil
}

// restore takes connections at the proxy's address again, after close or
// blackhole, and forwards them, unless hung: the store back up.
func (p *proxy) restore(t *testing.T, hung bool) {
	t.Helper()
	p.close()
	p.hung.Store(hung)
	p.listen(t, 128)
	p.serve(t)
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
	// A backlog of 0 takes one connection waiting.
	p.listen(t, 0)
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
