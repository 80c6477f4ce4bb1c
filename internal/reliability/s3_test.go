package reliability_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/server"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storage/s3test"
)

// TestS3Replicas is a site whose cache is a bucket of a real S3 server
// (SeaweedFS): bundles are imported into the bucket, two stateless serve
// replicas stand in front of it, and stock Nix inside an airgap that
// reaches only the replicas substitutes from each, trusting only the site
// key. A delta imported into the bucket while both run is seen by the
// replica that did not import it within seconds. Nix's own s3://
// substituter reads the same bucket, where the Nix build has S3 support.
func TestS3Replicas(t *testing.T) {
	s := newSite(t, 30, 8)
	url := s3test.Start(t).Bucket(t)
	base := filepath.Join(t.TempDir(), "base")
	s.pack(t, base)
	s.run(t, "import", base, "--cache", url, "--public-key", s.pkFile)
	s.run(t, "verify", url, "--public-key", s.pkFile)

	siteKey, _, err := signing.Generate("site-1")
	if err != nil {
		t.Fatal(err)
	}
	ns := nixtest.NewNetNS(t)
	var replicas []string // inside the airgap
	var probes []string   // the same replicas, from the test
	for i := range 2 {
		srv, err := server.New(server.Config{Dirs: []string{url}, Key: &siteKey, Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		t.Cleanup(func() { srv.Close() })
		inside, err := ns.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		outside, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		for _, ln := range []net.Listener{inside, outside} {
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { srv.Serve(ctx, ln); close(done) }()
			t.Cleanup(func() { cancel(); <-done })
		}
		replicas = append(replicas, "http://"+inside.Addr().String())
		probes = append(probes, "http://"+outside.Addr().String())
	}

	// Nix reads an s3:// bucket itself where it is built with S3
	// support: of Debian's builds, 2.34 (sid) is; 2.8 (bookworm) and 2.26
	// (trixie) are not and say they cannot open the store, so the step
	// skips there, naming the version.
	t.Run("nix's own s3 substituter", func(t *testing.T) {
		root := filepath.Join(t.TempDir(), "client")
		cmd := s.n.Command(t.Context(), "nix", "copy", "--from", url, "--to", "local?root="+root, s.top.String(),
			"--option", "trusted-public-keys", s.pk.String())
		cmd.Env = append(cmd.Env, "AWS_ACCESS_KEY_ID=nix-airgap-test", "AWS_SECRET_ACCESS_KEY=nix-airgap-test")
		out, err := cmd.CombinedOutput()
		if err != nil && (strings.Contains(string(out), "don't know how to open Nix store") || strings.Contains(string(out), "scheme 's3'")) {
			v, _ := nixtest.Version()
			t.Skipf("%s is built without S3 support: %s", v, strings.TrimSpace(string(out)))
		}
		if err != nil {
			t.Fatalf("nix copy --from %s: %v\n%s", url, err, out)
		}
		got := strings.Fields(s.n.Run(t, "nix", "path-info", "--store", "local?root="+root, "-r", s.top.String()))
		if len(got) != len(s.paths) {
			t.Errorf("nix copy from the bucket gave %d paths, want %d", len(got), len(s.paths))
		}
	})

	s.n.Run(t, "nix-collect-garbage")
	if _, err := os.Stat(s.top.String()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after GC, %s: %v; want it gone", s.top, err)
	}
	client := s.n.In(ns)
	copyFrom := func(t *testing.T, replica, path string) {
		t.Helper()
		root := filepath.Join(t.TempDir(), "client")
		if _, err := client.Output(t.Context(), "nix", "copy", "--from", replica, "--to", "local?root="+root, path,
			"--option", "trusted-public-keys", siteKey.Public().String()); err != nil {
			t.Fatalf("nix copy --from replica %s: %v", replica, err)
		}
		client.Run(t, "nix", "store", "verify", "--store", "local?root="+root, "--no-trust", "-r", path)
	}
	for i, r := range replicas {
		t.Run(fmt.Sprintf("stock Nix from replica %d", i), func(t *testing.T) { copyFrom(t, r, s.top.String()) })
	}

	// A delta, imported into the bucket (as through replica 0's site):
	// replica 1 serves it within seconds, misses it answered before
	// included.
	added := s.addPaths(t, "delta", 3, 4)
	newTop := added[len(added)-1]
	narinfo := "/" + newTop.Hash + ".narinfo"
	if code := get(t, probes[1]+narinfo); code != http.StatusNotFound {
		t.Fatalf("replica 1 before the delta's import: %d, want 404", code)
	}
	delta := filepath.Join(t.TempDir(), "delta")
	s.packPath(t, newTop, delta)
	s.run(t, "import", delta, "--cache", url, "--public-key", s.pkFile)
	start := time.Now()
	for get(t, probes[1]+narinfo) != http.StatusOK {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("replica 1 does not serve the delta 10 s after its import")
		}
		time.Sleep(50 * time.Millisecond)
	}
	seen := time.Since(start)
	t.Logf("replica 1 served the delta %s after its import", seen.Round(time.Millisecond))
	if seen > 3*time.Second {
		t.Errorf("replica 1 saw the delta after %s, want within seconds", seen)
	}
	copyFrom(t, replicas[1], newTop.String())
}

func get(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestImportCrashS3 kills `nix-airgap import` into a bucket with SIGKILL
// at random moments, round after round, and checks the bucket after every
// kill: each narinfo's NAR object there and whole, no reference dangling,
// a record only with every narinfo. A last import finishes, and the bucket
// verifies.
func TestImportCrashS3(t *testing.T) {
	rounds := envInt(t, "NIX_AIRGAP_CRASH_ROUNDS", 3)
	s := newSite(t, envInt(t, "NIX_AIRGAP_CRASH_PATHS", 50), 16)
	srv := s3test.Start(t)
	src := filepath.Join(t.TempDir(), "bundle.tar")
	s.pack(t, src)
	want := len(s.paths)
	args := func(url string) []string {
		return []string{"import", src, "--cache", url, "--public-key", s.pkFile, "--log-level", "error"}
	}
	st := crashStats{rounds: rounds}
	probe := srv.Bucket(t)
	st.full = timed(t, func() { s.run(t, args(probe)...) })
	if got := checkCache(t, probe); got.narinfos != want || got.dangling != 0 || !got.record {
		t.Fatalf("uninterrupted import: %+v, want %d narinfos", got, want)
	}
	url := srv.Bucket(t)
	st.kill(s, t, nil, func() []string { return args(url) }, func(killed bool) bool {
		complete := st.checkImport(t, url, want, killed)
		if complete {
			url = srv.Bucket(t)
		}
		return complete
	})
	s.run(t, args(url)...)
	if got := checkCache(t, url); got.narinfos != want || got.dangling != 0 || !got.record {
		t.Errorf("after the kills and a last import: %+v, want %d narinfos, all references, a record", got, want)
	}
	if a, b := bucketTree(t, url), bucketTree(t, probe); a != b {
		t.Errorf("the bucket differs from an uninterrupted import's:\n%s\nwant\n%s", a, b)
	}
	s.run(t, "verify", url, "--public-key", s.pkFile)
	t.Logf("import into a bucket: %s", st)
}

// bucketTree lists a bucket's objects with their sizes, but lock objects,
// which a killed import leaves behind until they go stale.
func bucketTree(t *testing.T, url string) string {
	t.Helper()
	b, err := storage.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var lines []string
	for info, err := range storage.Walk(t.Context(), b, "") {
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(info.Name, storage.LockDir+"/") {
			continue
		}
		lines = append(lines, fmt.Sprintf("%s %d", info.Name, info.Size))
	}
	return strings.Join(lines, "\n")
}
