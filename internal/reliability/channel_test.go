package reliability_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/cache/cachetest"
)

// Memory a channel-sized command may use: a floor plus a budget per path,
// for what is held whole (the graph, the manifest, what is left of each
// path's narinfo) and the garbage collector's headroom over it; nothing
// grows with NAR sizes. At 100,000 paths that is the 1 GiB. pack
// needs the most: 183 MiB at 20,000 paths, 534 MiB at 100,000
// (bench/analysis.md).
const (
	rssFloorKiB   = 64 << 10
	rssPerPathKiB = 10
)

// TestChannel is a channel-sized mirror: an upstream cache of
// $NIX_AIRGAP_CHANNEL_PATHS (20,000 unless set; scripts/nix-matrix.sh
// sets 2,000 for the other Nix versions) signed paths on loopback
// (cachetest.WriteChannel), which plan and pack take whole, pack (into a
// directory, then into a .tar) killed half-way and resumed without
// fetching again what it had; the bundle directory is
// imported into a cache, killed and resumed too, and served to stock
// Nix. Each command's peak RSS stays within a budget per path.
// bench/plan-channel.sh measures the same at 100,000.
func TestChannel(t *testing.T) {
	n := envInt(t, "NIX_AIRGAP_CHANNEL_PATHS", 20000)
	s := newSite(t, 1, 1)
	start := time.Now()
	ch, err := cachetest.WriteChannel(t.Context(), t.TempDir(), s.n.StoreDir, n)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a channel of %d paths written in %s", n, time.Since(start).Round(time.Millisecond))
	budget := rssFloorKiB + rssPerPathKiB*n

	upstream, nars := countingUpstream(t, ch.Dir)
	from := []string{"--paths-from", ch.PathsFile, "--mode", "runtime", "--substituter", upstream,
		"--public-key", ch.KeyFile, "--no-build"}

	measure := func(t *testing.T, what string, args ...string) {
		t.Helper()
		took, kib := s.peak(t, args...)
		t.Logf("%s of %d paths: %s, %.0f paths/s, peak RSS %d MiB", what, n, took.Round(time.Millisecond),
			float64(n)/took.Seconds(), kib>>10)
		if kib > budget {
			t.Errorf("%s of %d paths: peak RSS %d MiB, want at most %d MiB", what, n, kib>>10, budget>>10)
		}
	}
	measure(t, "plan", append([]string{"plan"}, from...)...)

	packTo := func(out string) []string {
		return append(append([]string{"pack"}, from...), "--no-progress", "--key", s.skFile, "--out", out)
	}
	bundleDir := filepath.Join(t.TempDir(), "bundle")
	packArgs := packTo(bundleDir)
	killed := s.killWhen(t, func() bool { return nars.Load() >= int64(n/2) }, packArgs...)
	fetched := nars.Load()
	t.Logf("pack killed after %d of %d NAR files came", fetched, n)
	nars.Store(0)
	measure(t, "pack, resumed", packArgs...)
	if !killed {
		t.Errorf("pack finished before it was killed, half-way")
	}
	// What the killed run fetched, the resumed run does not fetch again:
	// it reuses what was published and adopts the NAR files of the batch
	// that was not (internal/cache's group commit), so only what was in
	// flight (pack's 8 downloads) comes again.
	again := fetched + nars.Load() - int64(n)
	t.Logf("pack resumed: %d NAR files fetched, %d of them again", nars.Load(), again)
	if maxAgain := int64(16); again > maxAgain {
		t.Errorf("the resumed pack fetched %d NAR files the killed one had fetched, want at most %d", again, maxAgain)
	}
	s.run(t, "verify", bundleDir, "--public-key", s.pkFile)

	// The same into a .tar: the next pack goes on after the last whole
	// narinfo of the tar the killed one left, so only the NAR files in
	// flight (8 downloads at once) come again.
	tarFile := filepath.Join(t.TempDir(), "bundle.tar")
	nars.Store(0)
	if !s.killWhen(t, func() bool { return nars.Load() >= int64(n/2) }, packTo(tarFile)...) {
		t.Errorf("pack to a tar finished before it was killed, half-way")
	}
	fetched = nars.Load()
	nars.Store(0)
	measure(t, "pack to a tar, resumed", packTo(tarFile)...)
	again = fetched + nars.Load() - int64(n)
	t.Logf("pack to a tar killed after %d NAR files came, resumed: %d fetched, %d of them again", fetched, nars.Load(), again)
	if maxAgain := int64(64); again > maxAgain {
		t.Errorf("the resumed pack to a tar fetched %d NAR files the killed one had fetched, want at most %d", again, maxAgain)
	}
	s.run(t, "verify", tarFile, "--public-key", s.pkFile)

	cacheDir := filepath.Join(t.TempDir(), "cache")
	importArgs := []string{"import", bundleDir, "--cache", cacheDir, "--public-key", s.pkFile}
	s.killWhen(t, func() bool {
		d, err := cache.OpenDir(cacheDir)
		if err != nil {
			return false
		}
		defer d.Close()
		for range d.NarInfos(t.Context()) {
			return true
		}
		return false
	}, importArgs...)
	if st := checkCache(t, cacheDir); st.dangling != 0 || (st.record && st.narinfos != n) {
		t.Fatalf("after a killed import: %+v", st)
	}
	measure(t, "import, resumed", importArgs...)
	if st := checkCache(t, cacheDir); st.narinfos != n || st.dangling != 0 || !st.record {
		t.Fatalf("after the resumed import: %+v, want %d narinfos, every reference there, a record", st, n)
	}

	// serve, asked for every narinfo 16 at a time, then stock Nix copies
	// the closure of a path of layer 8 (about a tenth of the channel) from
	// it.
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(t.Context())
	serve := s.cli(ctx, "serve", cacheDir, "--listen", addr, "--access-log=false", "--log-level", "error")
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	var served sync.WaitGroup
	served.Add(1)
	go func() { serve.Wait(); served.Done() }()
	t.Cleanup(func() { cancel(); served.Wait() })
	base := "http://" + addr
	waitUp(t, base)
	start = time.Now()
	g, gctx := errgroup.WithContext(t.Context())
	g.SetLimit(16)
	for _, p := range ch.Paths {
		g.Go(func() error {
			req, _ := http.NewRequestWithContext(gctx, "GET", base+"/"+cache.NarInfoFile(p.Hash), nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("serve %s: %s", p, resp.Status)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	kib := rss(serve.Process.Pid)
	t.Logf("serve: %d narinfos in %s (%.0f/s), RSS then %d MiB", n, took.Round(time.Millisecond), float64(n)/took.Seconds(), kib>>10)
	if kib > budget {
		t.Errorf("serve after %d narinfos: RSS %d MiB, want at most %d MiB", n, kib>>10, budget>>10)
	}
	top := ch.Paths[n/5]
	root := filepath.Join(t.TempDir(), "client")
	s.n.Run(t, "nix", "copy", "--from", base, "--to", "local?root="+root, top.String(),
		"--option", "trusted-public-keys", s.pk.String())
	closure := strings.Fields(s.n.Run(t, "nix", "path-info", "--store", "local?root="+root, "-r", top.String()))
	if want := cachetest.Layers/5 + 1; len(closure) < want {
		t.Errorf("nix copy from serve: a closure of %d paths, want at least one per layer (%d)", len(closure), want)
	}
	t.Logf("stock Nix copied a closure of %d paths from serve", len(closure))
}

// peak runs the CLI and returns how long it took and its peak RSS in KiB,
// which the CLI writes itself (writePeakRSS).
func (s *site) peak(t *testing.T, args ...string) (time.Duration, int) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "peak-rss")
	cmd := s.cli(t.Context(), args...)
	cmd.Env = append(cmd.Env, peakRSS+"="+file)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if err != nil {
		t.Fatalf("nix-airgap %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("nix-airgap %s: peak RSS: %v", strings.Join(args, " "), err)
	}
	kib, err := strconv.Atoi(strings.TrimSuffix(string(b), " kB"))
	if err != nil {
		t.Fatalf("nix-airgap %s: peak RSS %q: %v", strings.Join(args, " "), b, err)
	}
	return took, kib
}

// killWhen starts the CLI, SIGKILLs it once cond holds (polled every
// 20 ms) and reports whether the kill landed before it finished.
func (s *site) killWhen(t *testing.T, cond func() bool, args ...string) bool {
	t.Helper()
	cmd := s.cli(t.Context(), args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("nix-airgap %s failed without being killed: %v\n%s", strings.Join(args, " "), err, out.String())
			}
			return false
		case <-tick.C:
		}
		if cond() {
			break
		}
	}
	cmd.Process.Signal(syscall.SIGKILL)
	err := <-exited
	var ee *exec.ExitError
	if errors.As(err, &ee) && !ee.Exited() {
		return true
	}
	if err != nil {
		t.Fatalf("nix-airgap %s failed without being killed: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return false
}

// countingUpstream serves the cache in dir on a loopback port, counting
// the NAR files it sends, and returns its URL and the count.
func countingUpstream(t *testing.T, dir string) (string, *atomic.Int64) {
	t.Helper()
	nars := new(atomic.Int64)
	files := http.FileServer(http.Dir(dir))
	return "http://" + listen(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/nar/") {
			nars.Add(1)
		}
		files.ServeHTTP(w, r)
	})), nars
}

// listen serves h on a loopback port until the test ends and returns
// its address.
func listen(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// freeAddr returns a loopback address nothing listens on, for a child
// process to listen on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitUp waits for serve at base to answer.
func waitUp(t *testing.T, base string) {
	t.Helper()
	for i := 0; ; i++ {
		resp, err := http.Get(base + "/nix-cache-info")
		if err == nil {
			resp.Body.Close()
			return
		}
		if i > 200 {
			t.Fatalf("serve at %s did not come up: %v", base, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
