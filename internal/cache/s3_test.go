package cache_test

import (
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storage/s3test"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

func TestMain(m *testing.M) { os.Exit(s3test.Main(m)) }

// A cache in a bucket gives each file the Content-Type nix copy --to
// s3:// gives it, whoever puts the file through its backend (an import
// publishes through it): what a client reading the bucket over HTTP sees.
func TestS3ContentTypes(t *testing.T) {
	srv := s3test.Start(t)
	location := srv.Bucket(t)
	u, err := url.Parse(location)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	b, err := storage.Open(ctx, location)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c, err := cache.CreateBackend(ctx, b, storepath.DefaultDir, 40)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hash := strings.Repeat("0", 32)
	for _, tt := range []struct{ name, want string }{
		{"nix-cache-info", "text/x-nix-cache-info"}, // put by CreateBackend
		{hash + ".narinfo", "text/x-nix-narinfo"},
		{hash + ".ls", "application/json"},
		{"nar/" + strings.Repeat("1", 52) + ".nar.zst", "application/x-nix-nar"},
		{"log/" + hash + "-hello.drv", "text/plain; charset=utf-8"},
		{"nix-airgap/channels/nixos.json", "application/json"},
		{"nix-airgap/other", "application/octet-stream"},
	} {
		if tt.name != cache.CacheInfoFile {
			if err := b.Put(ctx, tt.name, strings.NewReader("x"), 1); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := http.Head("http://" + srv.Endpoint + "/" + u.Host + "/" + tt.name)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || got != tt.want {
			t.Errorf("%s: %s, Content-Type %q; want 200, %q", tt.name, resp.Status, got, tt.want)
		}
	}
}
