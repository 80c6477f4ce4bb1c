package s3test_test

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/storage/s3test"
)

// TestRefusedAddr: a connection to RefusedAddr is refused, and no one
// else may listen there while the test runs.
func TestRefusedAddr(t *testing.T) {
	addr := s3test.RefusedAddr(t)
	for range 3 {
		if c, err := net.Dial("tcp", addr); !errors.Is(err, syscall.ECONNREFUSED) {
			if c != nil {
				c.Close()
			}
			t.Fatalf("dial %s: %v, want connection refused", addr, err)
		}
	}
	if l, err := net.Listen("tcp", addr); !errors.Is(err, syscall.EADDRINUSE) {
		if l != nil {
			l.Close()
		}
		t.Fatalf("listen %s: %v, want address in use", addr, err)
	}
}

// TestProxyHoldsPort: the Proxy that cuts a store off in these tests keeps
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
	p := s3test.StartProxy(t, store.Addr().String())
	forwards := func(when string) {
		t.Helper()
		c, err := net.DialTimeout("tcp", p.Addr, time.Second)
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		defer c.Close()
		if got, err := io.ReadAll(c); string(got) != "up" || err != nil {
			t.Errorf("%s: read %q, %v through the Proxy; want %q", when, got, err, "up")
		}
	}
	held := func(when string) {
		t.Helper()
		if ln, err := net.Listen("tcp", p.Addr); !errors.Is(err, syscall.EADDRINUSE) {
			if err == nil {
				ln.Close()
			}
			t.Errorf("%s: another listener at the Proxy's %s: %v, want address in use", when, p.Addr, err)
		}
	}
	forwards("started")
	p.Close()
	if c, err := net.DialTimeout("tcp", p.Addr, time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		if err == nil {
			c.Close()
		}
		t.Errorf("closed: dial %s: %v, want connection refused", p.Addr, err)
	}
	held("closed")
	p.Restore(t, false)
	forwards("restored after close")
	p.Blackhole(t)
	held("blackholed")
	p.Restore(t, false)
	forwards("restored after blackhole")
}
