package cli

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/pack"
	"github.com/nix-airgap/nix-airgap/internal/storage"
)

// TestUnavailableHint: the hint after exit 75 names what did not answer:
// a channel's server, a binary cache or an object store.
func TestUnavailableHint(t *testing.T) {
	const u = "http://127.0.0.1:1/nixexprs.tar.xz"
	noAnswer := storage.Unavailable(&cache.NetError{Op: "GET", URL: u, Err: syscall.ECONNREFUSED})
	for _, tt := range []struct {
		err  error
		want string // the hint's start
	}{
		{&pack.ChannelError{Name: "nixpkgs", Err: noAnswer}, "The channel's server did not answer"},
		{&pack.ChannelError{Name: "nixpkgs", Err: &cache.StatusError{Op: "GET", URL: u, Status: "503 Service Unavailable", Code: 503}}, "The channel's server did not answer"},
		{fmt.Errorf("plan: %w", noAnswer), "The binary cache did not answer"},
		{storage.Unavailable(fmt.Errorf("open s3://cache/nix-cache-info: %w", syscall.ECONNREFUSED)), "The object store did not answer"},
		// A lock lost as its refreshes failed: work stopped, to be done again.
		{fmt.Errorf("gc: %w", &storage.LockLostError{Lock: "s3://cache/nix-airgap/locks/exclusive-1", For: 4 * time.Minute, Err: syscall.ECONNREFUSED}), "The object store did not answer"},
	} {
		if got := unavailableHint(tt.err); !strings.HasPrefix(got, tt.want) {
			t.Errorf("unavailableHint(%v) = %q, want %q…", tt.err, got, tt.want)
		}
		if ExitCode(tt.err) != ExitUnavailable {
			t.Errorf("ExitCode(%v) = %d, want %d", tt.err, ExitCode(tt.err), ExitUnavailable)
		}
	}
}
