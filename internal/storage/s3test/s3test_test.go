package s3test_test

import (
	"errors"
	"net"
	"syscall"
	"testing"

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
