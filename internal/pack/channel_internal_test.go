package pack

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storage/s3test"
)

// TestChannelUnavailable: a channel's tarball URL whose server refuses
// the connection or answers 502, 503 or 504 fails the pack at once with
// a *ChannelError matching storage.ErrUnavailable (exit 75), as a binary
// cache's does; a 404 is a file missing, a 500 neither.
func TestChannelUnavailable(t *testing.T) {
	var status atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "nope", int(status.Load()))
	}))
	defer srv.Close()
	addr := s3test.RefusedAddr(t)
	for _, tt := range []struct {
		url    string
		status int
		want   string // the error, after "pack: channel nixpkgs: GET URL: "
		is     error
	}{
		{"http://" + addr + "/nixexprs.tar.xz", 0, "dial tcp " + addr + ": connect: connection refused", storage.ErrUnavailable},
		{srv.URL + "/nixexprs.tar.xz", 503, "503 Service Unavailable", storage.ErrUnavailable},
		{srv.URL + "/nixexprs.tar.xz", 502, "502 Bad Gateway", storage.ErrUnavailable},
		{srv.URL + "/nixexprs.tar.xz", 404, "404 Not Found", cache.ErrNotFound},
		{srv.URL + "/nixexprs.tar.xz", 500, "500 Internal Server Error", nil},
	} {
		status.Store(int32(tt.status))
		opts := Options{TempDir: t.TempDir(), Channels: []Channel{{Name: "nixpkgs", Source: tt.url}}}
		_, err := (&Packer{}).addChannels(t.Context(), nil, opts, nil)
		want := "pack: channel nixpkgs: GET " + tt.url + ": " + tt.want
		if err == nil || err.Error() != want {
			t.Errorf("%s (%d): %v, want %s", tt.url, tt.status, err, want)
			continue
		}
		if !errors.As(err, new(*ChannelError)) {
			t.Errorf("%s (%d): %v is no *ChannelError", tt.url, tt.status, err)
		}
		if errors.Is(err, storage.ErrUnavailable) != (tt.is == storage.ErrUnavailable) || (tt.is != nil && !errors.Is(err, tt.is)) {
			t.Errorf("%s (%d): %v, want it to match %v", tt.url, tt.status, err, tt.is)
		}
	}
}
