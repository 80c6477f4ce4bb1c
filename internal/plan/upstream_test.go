package plan_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// TestOpenUpstreamCredentials: an upstream's URL may carry credentials,
// which its requests send, but the Upstream's URL, which plans, manifests
// and messages show, has its password redacted.
func TestOpenUpstreamCredentials(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, pw, _ := r.BasicAuth(); u != "site" || pw != "s3cret" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		w.Write([]byte("StoreDir: /nix/store\n"))
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	up, err := plan.OpenUpstream(t.Context(), "http://site:s3cret@"+host+"/", "/nix/store", nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "http://site:xxxxx@" + host; up.URL != want {
		t.Errorf("URL = %q; want %q", up.URL, want)
	}
	_, err = plan.OpenUpstream(t.Context(), "http://site:wrongpw@"+host, "/nix/store", nil)
	var se *cache.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusUnauthorized || strings.Contains(err.Error(), "wrongpw") {
		t.Errorf("with a wrong password: %v; want a 401 without the password", err)
	}
}

// TestOpenUpstreamOtherStore: a cache whose nix-cache-info names another
// store dir is refused, naming both.
func TestOpenUpstreamOtherStore(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "nix-cache-info"), []byte("StoreDir: /other/store\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := plan.OpenUpstream(t.Context(), "file://"+dir, "/nix/store", nil)
	if want := "it is for store /other/store, not /nix/store"; !errors.Is(err, storepath.ErrWrongDir) || !strings.Contains(err.Error(), want) {
		t.Errorf("OpenUpstream of a cache for /other/store: %v; want storepath.ErrWrongDir, %q", err, want)
	}
}
