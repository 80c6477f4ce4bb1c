package pack

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/netrc"
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

// TestChannelCredentials: a channel's URL is fetched with the credentials
// of its user info or, without, of the Packer's client (as netrc gives
// them), and no error says the password.
func TestChannelCredentials(t *testing.T) {
	var got atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pw, _ := r.BasicAuth()
		got.Store(user + ":" + pw)
		if user+":"+pw != "site:s3cret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		w.Write([]byte("not a tarball"))
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	n, err := netrc.Parse([]byte("machine 127.0.0.1 login site password s3cret\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		url      string
		client   *http.Client
		sent     string
		status   int
		password string
	}{
		{"http://site:wrongpw@" + host + "/nixexprs.tar.xz", nil, "site:wrongpw", http.StatusUnauthorized, "wrongpw"},
		{"http://site:s3cret@" + host + "/nixexprs.tar.xz", nil, "site:s3cret", 0, "s3cret"},
		{srv.URL + "/nixexprs.tar.xz", cache.WithNetrc(nil, n), "site:s3cret", 0, "s3cret"},
		{srv.URL + "/nixexprs.tar.xz", nil, ":", http.StatusUnauthorized, "s3cret"},
	} {
		opts := Options{TempDir: t.TempDir(), Channels: []Channel{{Name: "nixpkgs", Source: tt.url}}}
		_, err := (&Packer{HTTPClient: tt.client}).addChannels(t.Context(), nil, opts, nil)
		var se *cache.StatusError
		if err == nil || got.Load() != tt.sent || errors.As(err, &se) != (tt.status != 0) || (se != nil && se.Code != tt.status) {
			t.Errorf("%s: %v, sent %v; want an error, %q sent and status %d", storage.Redact(tt.url), err, got.Load(), tt.sent, tt.status)
		}
		if err != nil && strings.Contains(err.Error(), tt.password) {
			t.Errorf("%s: error %q says the password", storage.Redact(tt.url), err)
		}
	}
}
