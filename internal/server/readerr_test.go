package server_test

import (
	"crypto/sha256"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/server"
	"github.com/nix-airgap/nix-airgap/internal/storage/s3test"
)

// TestMirrorStoreDown: a hashed-mirror file of a bucket whose store
// stopped answering is a server error, which Nix retries and does not
// remember, not a miss: whether the index of flat files is still fresh
// (the narinfo of its path cannot be looked up) or due to be read again
// (the manifests cannot be).
func TestMirrorStoreDown(t *testing.T) {
	s3 := s3test.Start(t)
	c := newFixture(t, testStore, genKey(t, "k"))
	c.addFlat("down.tar.gz", []byte("down\n"), "none")
	c.writeManifest(true)
	bucket := s3.Bucket(t)
	copyToBucket(t, c.dir, bucket)
	mirror := "/sha256/" + hexSum(sha256.New(), []byte("down\n"))
	for _, tc := range []struct {
		name  string
		after time.Duration // the clock moves on this much after the cut
	}{
		{"index fresh", 0},
		{"index read again", 2 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := s3test.StartProxy(t, s3.Endpoint)
			clock := newClock()
			_, base := testServer(t, server.Config{Dirs: []string{p.Via(bucket)}, Now: clock.Now, RescanInterval: time.Hour, Log: slog.New(slog.DiscardHandler)})
			client := &http.Client{Timeout: 30 * time.Second}
			if got, _ := timedGet(t, client, base+mirror); got != http.StatusOK {
				t.Fatalf("GET %s from the bucket: %d, want 200", mirror, got)
			}
			p.Close()
			clock.Advance(tc.after)
			if got, _ := timedGet(t, client, base+mirror); got < 500 {
				t.Errorf("GET %s with the bucket's store down: %d, want a 5xx", mirror, got)
			}
		})
	}
}
