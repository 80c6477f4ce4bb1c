package server_test

import (
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
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
		cut    func(*s3test.Proxy, testing.TB)
		within time.Duration
	}{
		{"refusing connections", func(p *s3test.Proxy, _ testing.TB) { p.Close() }, time.Second},
		// A connection waits for the dial timeout.
		{"answering none", (*s3test.Proxy).Blackhole, 4 * time.Second},
		// A request waits for the response header timeout.
		{"hanging", func(p *s3test.Proxy, _ testing.TB) { p.Hang() }, 7 * time.Second},
	} {
		t.Run(tc.how, func(t *testing.T) {
			p := s3test.StartProxy(t, s3.Endpoint)
			_, base := testServer(t, server.Config{Dirs: []string{p.Via(bucket), dir}, Log: slog.New(slog.DiscardHandler)})
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
