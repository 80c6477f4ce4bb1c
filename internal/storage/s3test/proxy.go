package s3test

import (
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Proxy forwards TCP connections to an address until closed, when it
// refuses new ones and cuts those open: a store gone down. Its socket
// stays bound to its port from start to cleanup, listening or not, so
// that no other process can take the port while the store is down and
// Restore always gets it back.
type Proxy struct {
	// Addr is where it listens, 127.0.0.1:PORT.
	Addr string
	to   string
	fd   int // the socket at addr
	hung atomic.Bool
	// Accepted counts the connections it took.
	Accepted atomic.Int64
	mu       sync.Mutex
	ln       net.Listener // accepting from fd, or nil
	conns    []net.Conn
	ups      []net.Conn
	queued   []net.Conn // the connections that fill a blackhole's queue
}

// StartProxy starts a Proxy to to, 127.0.0.1:PORT, until the test ends.
func StartProxy(t testing.TB, to string) *Proxy {
	t.Helper()
	fd, addr := boundSocket(t)
	p := &Proxy{Addr: addr, to: to, fd: fd}
	t.Cleanup(func() {
		p.Close()
		syscall.Close(fd)
	})
	p.listen(t, 128)
	p.serve(t)
	return p
}

// Via is the URL of bucket, on the store the Proxy forwards to, through
// the Proxy.
func (p *Proxy) Via(bucket string) string {
	return strings.Replace(bucket, "endpoint="+p.to, "endpoint="+p.Addr, 1)
}

// boundSocket is a TCP socket bound to a free port of 127.0.0.1 and not
// listening: connections to it are refused. Bound to a port it names, not
// to port 0, it keeps the port when it stops listening.
func boundSocket(t testing.TB) (fd int, addr string) {
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

// listen makes the Proxy's socket listen with a queue of backlog. It
// takes SO_REUSEADDR only while listening: re-listening needs it past the
// TIME_WAIT of connections it closed, but with it set, a socket that does
// not listen lets another process listen at its port.
func (p *Proxy) listen(t testing.TB, backlog int) {
	t.Helper()
	if err := syscall.SetsockoptInt(p.fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(p.fd, backlog); err != nil {
		t.Fatalf("listen at %s: %v", p.Addr, err)
	}
}

// serve accepts connections at the Proxy's listening socket and forwards
// them, unless hung.
func (p *Proxy) serve(t testing.TB) {
	t.Helper()
	fd, err := syscall.Dup(p.fd)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), p.Addr)
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
			p.Accepted.Add(1)
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

// Close stops the Proxy's socket listening, which refuses new connections
// and resets those queued, and cuts those open; the socket keeps its port.
func (p *Proxy) Close() {
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

// Restore takes connections at the Proxy's address again, after close or
// blackhole, and forwards them, unless hung: the store back up.
func (p *Proxy) Restore(t testing.TB, hung bool) {
	t.Helper()
	p.Close()
	p.hung.Store(hung)
	p.listen(t, 128)
	p.serve(t)
}

// Hang keeps taking connections but answers nothing more on any of them:
// a store that is up but stuck.
func (p *Proxy) Hang() {
	p.hung.Store(true)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, up := range p.ups {
		up.Close()
	}
	p.ups = nil
}

// Blackhole closes the Proxy and listens at its address again but never
// accepts, and fills the queue of connections waiting to be: a connection
// then is never answered, as to a store whose host is gone.
func (p *Proxy) Blackhole(t testing.TB) {
	p.Close()
	// A backlog of 0 takes one connection waiting.
	p.listen(t, 0)
	for range 16 {
		c, err := net.DialTimeout("tcp", p.Addr, 300*time.Millisecond)
		if err != nil {
			return // full: connections now wait unanswered
		}
		p.mu.Lock()
		p.queued = append(p.queued, c)
		p.mu.Unlock()
	}
	t.Fatalf("listening at %s without accepting: its queue never filled", p.Addr)
}
