package server_test

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/cli"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/server"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storage/s3test"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// TestLayerBreaker: once a bucket's store stops answering, serve skips
// the bucket for a back-off instead of waiting for it on every request:
// of many requests only the first waits for the timeout, and the rest are
// answered at once, from the other layers or with a 503, which Nix
// retries and does not remember as a miss. After the back-off (on the
// server's clock, which the test moves) one request at a time tries the
// store again; the first it answers brings the bucket back, a failed one
// doubles the back-off. Going down and coming back are logged once each.
func TestLayerBreaker(t *testing.T) {
	s3 := s3test.Start(t)
	dir, bucket, names := bucketAndDir(t, s3, 12)
	// Narinfos neither layer has: each asked once, so that no answer
	// comes from the server's memory.
	next := 0
	absent := func() string {
		next++
		return fmt.Sprintf("/z%031d.narinfo", next)
	}
	for _, layered := range []bool{false, true} {
		t.Run(map[bool]string{false: "bucket alone", true: "bucket before a directory"}[layered], func(t *testing.T) {
			p := s3test.StartProxy(t, s3.Endpoint)
			dirs := []string{p.Via(bucket)}
			if layered {
				dirs = append(dirs, dir)
			}
			var logs nixtest.SyncBuffer
			clock := newClock()
			_, base := testServer(t, server.Config{Dirs: dirs, Now: clock.Now,
				Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			client := &http.Client{Timeout: 30 * time.Second}
			get := func(path string, want int, within time.Duration) {
				t.Helper()
				if got, took := timedGet(t, client, base+path); got != want || took > within {
					t.Errorf("GET %s: %d after %s; want %d within %s", path, got, took.Round(time.Millisecond), want, within)
				}
			}
			logged := func(downs, ups int) {
				t.Helper()
				if d, u := strings.Count(logs.String(), "layer down"), strings.Count(logs.String(), "layer back up"); d != downs || u != ups {
					t.Errorf("logged %d times down and %d back up, want %d and %d:\n%s", d, u, downs, ups, logs.String())
				}
			}
			get(names.narinfos[0], http.StatusOK, time.Second)

			// A store whose host is gone: a connection waits for the
			// two-second dial timeout.
			p.Blackhole(t)
			const n = 10
			start := time.Now()
			get(names.narinfos[1], http.StatusServiceUnavailable, 4*time.Second)
			for range n - 1 {
				get(absent(), http.StatusServiceUnavailable, 500*time.Millisecond)
			}
			t.Logf("%d narinfo requests with the bucket's store not answering: %s in all", n, time.Since(start).Round(time.Millisecond))
			if layered {
				get(names.narinfos[11], http.StatusOK, 500*time.Millisecond)
				get(names.nars[0], http.StatusOK, 500*time.Millisecond)
			}
			logged(1, 0)
			if up, trips, state := layerMetrics(t, base, dirs[0]); up != 0 || trips != 1 || state != "down" {
				t.Errorf("metrics: layer up %d, tripped %d times, %s; want 0, 1 and down", up, trips, state)
			}

			// Back up: not tried before the back-off ends, then the
			// first request brings the bucket back.
			p.Restore(t, false)
			get(names.narinfos[2], http.StatusServiceUnavailable, 500*time.Millisecond)
			clock.Advance(time.Second)
			get(names.narinfos[2], http.StatusOK, time.Second)
			get(names.narinfos[3], http.StatusOK, time.Second)
			logged(1, 1)

			// Down again, refusing connections: a probe that fails
			// doubles the back-off to two seconds.
			p.Close()
			get(names.narinfos[4], http.StatusServiceUnavailable, time.Second)
			clock.Advance(time.Second)
			get(names.narinfos[4], http.StatusServiceUnavailable, time.Second) // the probe
			p.Restore(t, false)
			clock.Advance(time.Second)
			get(names.narinfos[4], http.StatusServiceUnavailable, 500*time.Millisecond)
			clock.Advance(time.Second)
			get(names.narinfos[4], http.StatusOK, time.Second)
			logged(2, 2)
			if up, trips, state := layerMetrics(t, base, dirs[0]); up != 1 || trips != 2 || state != "up" {
				t.Errorf("metrics: layer up %d, tripped %d times, %s; want 1, 2 and up", up, trips, state)
			}
			if layered {
				return
			}

			// Half open: while a probe waits on a store that is up but
			// stuck (five seconds for an answer), other requests are
			// not sent after it.
			p.Close()
			get(names.narinfos[5], http.StatusServiceUnavailable, time.Second)
			p.Restore(t, true)
			clock.Advance(time.Second)
			accepted := p.Accepted.Load()
			var wg sync.WaitGroup
			wg.Go(func() { get(names.narinfos[5], http.StatusServiceUnavailable, 7*time.Second) })
			for p.Accepted.Load() == accepted {
				time.Sleep(10 * time.Millisecond)
			}
			for range n {
				get(absent(), http.StatusServiceUnavailable, 500*time.Millisecond)
			}
			wg.Wait()
			if got := p.Accepted.Load() - accepted; got != 1 {
				t.Errorf("%d connections to the store while it was stuck, want the probe's alone", got)
			}
			logged(3, 2)

			// While probes fail, the back-off doubles up to 30 seconds,
			// each failed probe logged at debug level only.
			p.Close()
			for _, backoff := range []time.Duration{2, 4, 8, 16, 30, 30} {
				clock.Advance(backoff*time.Second - time.Millisecond)
				get(absent(), http.StatusServiceUnavailable, 500*time.Millisecond)
				clock.Advance(time.Millisecond)
				get(absent(), http.StatusServiceUnavailable, time.Second) // the probe
			}
			probes := strings.Split(logs.String(), "layer still down")[1:]
			if len(probes) != 8 || !strings.Contains(probes[6], "retry_in=30s") || !strings.Contains(probes[7], "retry_in=30s") {
				t.Errorf("%d failed probes logged, want 8, the last two to back off 30 s:\n%s", len(probes), logs.String())
			}
			logged(3, 2)
		})
	}
}

// TestNixStoreDown: stock Nix asks a serve whose only layer is a bucket
// whose store is down, and fails with the 503, not as for a path no cache
// has; once the store is back, the same Nix, with its narinfo cache and
// the default narinfo-cache-negative-ttl of an hour, substitutes the path:
// it did not remember the 503 as a miss.
func TestNixStoreDown(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	s3 := s3test.Start(t)
	src := filepath.Join(t.TempDir(), "greeting")
	writeFile(t, src, []byte("hello from the bucket\n"))
	path := n.Run(t, "nix-store", "--add", src)
	key := genKey(t, "bucket-1")
	keyFile := filepath.Join(t.TempDir(), "bucket.sec")
	writeFile(t, keyFile, []byte(key.String()))
	dir := filepath.Join(t.TempDir(), "cache")
	n.Run(t, "nix", "copy", "--to", "file://"+dir+"?secret-key="+keyFile, path)
	bucket := s3.Bucket(t)
	copyToBucket(t, dir, bucket)
	n.Run(t, "nix-store", "--delete", path)

	p := s3test.StartProxy(t, s3.Endpoint)
	_, base := testServer(t, server.Config{Dirs: []string{p.Via(bucket)}, Log: slog.New(slog.NewTextHandler(t.Output(), nil))})
	substitute := func() (string, error) {
		return n.Output(t.Context(), "nix-store", "-r", path, "--option", "substituters", base,
			"--option", "trusted-public-keys", key.Public().String())
	}

	p.Close()
	start := time.Now()
	out, err := substitute()
	t.Logf("nix-store -r with the store down: %v after %s", err, time.Since(start).Round(time.Millisecond))
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("nix-store -r with the bucket's store down: %q, %v; want a failure naming the 503", out, err)
	}

	p.Restore(t, false)
	narinfo := "/" + filepath.Base(path)[:32] + ".narinfo"
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get(base + narinfo)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Logf("serve answered the narinfo %s after the store came back", time.Since(start).Round(time.Millisecond))
			break
		}
		if time.Since(start) > 40*time.Second {
			t.Fatalf("serve still answers %d 40 s after the store came back", resp.StatusCode)
		}
	}
	if out, err := substitute(); err != nil || out != path {
		t.Fatalf("nix-store -r with the store back: %q, %v; want %s substituted", out, err, path)
	}
}

// TestLayerDownAtStart: serve starts with a bucket whose store does not
// answer, layered with a directory: the directory's paths are served and
// the bucket's are 503s; once the store answers, the bucket is read and
// served. Its nix-cache-info must be for the store dir being served,
// which clients have read already: a bucket for another store dir, or
// with no nix-cache-info, is left out for good, its paths misses, and
// logged as an error once. /metrics shows each bucket's state (down, up,
// or left out, which layer_up alone does not tell from down) and trips.
func TestLayerDownAtStart(t *testing.T) {
	s3 := s3test.Start(t)
	dir, bucket, names := bucketAndDir(t, s3, 3)
	_, other, _ := bucketAndDir(t, s3, 3)
	put(t, other, cache.CacheInfoFile, "StoreDir: /other/store\nWantMassQuery: 1\nPriority: 30\n")
	empty := s3.Bucket(t)
	for _, tc := range []struct {
		name   string
		bucket string
		late   int    // what a narinfo only the bucket has is once its store answers
		logged string // the error logged then, if any
	}{
		{"same store dir", bucket, http.StatusOK, ""},
		{"another store dir", other, http.StatusNotFound, "is for store /other/store but the layers served are for /nix/store"},
		{"no nix-cache-info", empty, http.StatusNotFound, cache.ErrNoCacheInfo.Error()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := s3test.StartProxy(t, s3.Endpoint)
			p.Close()
			via := p.Via(tc.bucket)
			var logs nixtest.SyncBuffer
			clock := newClock()
			_, base := testServer(t, server.Config{Dirs: []string{via, dir}, Now: clock.Now,
				Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			client := &http.Client{Timeout: 30 * time.Second}
			get := func(path string, want int) {
				t.Helper()
				if got, took := timedGet(t, client, base+path); got != want || took > time.Second {
					t.Errorf("GET %s: %d after %s; want %d within a second", path, got, took.Round(time.Millisecond), want)
				}
			}
			const cacheInfo = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n"
			gauges := func(up, trips int, state string) {
				t.Helper()
				if gotUp, gotTrips, gotState := layerMetrics(t, base, via); gotUp != up || gotTrips != trips || gotState != state {
					t.Errorf("metrics: layer up %d, tripped %d times, %s; want %d, %d and %s", gotUp, gotTrips, gotState, up, trips, state)
				}
				if got := string(do(t, "GET", base, "/nix-cache-info", nil).body); got != cacheInfo {
					t.Errorf("nix-cache-info %q, want %q", got, cacheInfo)
				}
			}
			count := func(what string, want int) {
				t.Helper()
				if got := strings.Count(logs.String(), what); got != want {
					t.Errorf("logged %q %d times, want %d:\n%s", what, got, want, logs.String())
				}
			}

			count("layer down at start", 1)
			gauges(0, 1, "down")
			get(names.narinfos[2], http.StatusOK) // the directory's
			get(names.nars[0], http.StatusOK)
			get(names.narinfos[0], http.StatusServiceUnavailable) // the bucket's

			// The store answers, and the first request after the
			// back-off reads the bucket.
			p.Restore(t, false)
			get(names.narinfos[0], http.StatusServiceUnavailable)
			clock.Advance(time.Second)
			get(names.narinfos[0], tc.late)
			get(names.narinfos[1], tc.late)
			get(names.narinfos[2], http.StatusOK)
			clock.Advance(time.Minute)
			get(names.narinfos[1], tc.late)
			if tc.late == http.StatusOK {
				gauges(1, 1, "up")
				count("layer back up", 1)
				count("level=ERROR", 0)
				return
			}
			gauges(0, 1, "left_out")
			count("layer back up", 0)
			count("layer left out", 1)
			count(tc.logged, 1)
		})
	}
}

// TestAllLayersDownAtStart: serve does not start if no layer opens, with
// the first bucket's failure, and exits 75 for a systemd unit to start it
// again later; a mistake in the configuration stops it even when another
// layer is down, with the exit code of the mistake.
func TestAllLayersDownAtStart(t *testing.T) {
	s3 := s3test.Start(t)
	dir, bucket, _ := bucketAndDir(t, s3, 1)
	p, q := s3test.RefusedAddr(t), s3test.RefusedAddr(t)
	via := func(addr string) string { return strings.Replace(bucket, "endpoint="+s3.Endpoint, "endpoint="+addr, 1) }
	missing := s3.URL("nosuch")
	refused := func(addr string) string {
		return "serve: open s3://" + strings.TrimPrefix(strings.SplitN(bucket, "?", 2)[0], "s3://") + "/nix-cache-info: dial tcp " + addr + ": connect: connection refused"
	}
	for _, tt := range []struct {
		dirs []string
		is   error
		code int // serve's exit code: try again later, or fix it
		want string
	}{
		{[]string{via(p)}, storage.ErrUnavailable, cli.ExitUnavailable, refused(p)},
		{[]string{via(p), via(q)}, storage.ErrUnavailable, cli.ExitUnavailable, refused(p)},
		{[]string{via(p), missing, dir}, storage.ErrNoBucket, cli.ExitMissing, "serve: open s3://nosuch/nix-cache-info: no such bucket"},
	} {
		s, err := server.New(server.Config{Dirs: tt.dirs})
		if err == nil {
			s.Close()
		}
		if !errors.Is(err, tt.is) || err.Error() != tt.want || cli.ExitCode(err) != tt.code {
			t.Errorf("serve %q: %v (exit %d), want %q (exit %d)", tt.dirs, err, cli.ExitCode(err), tt.want, tt.code)
		}
	}
}

// layerMetrics reads a bucket layer's gauge, count of trips and state
// (the one of its state series that is 1) from /metrics, and checks that
// no directory layer has any.
func layerMetrics(t *testing.T, base, layer string) (up, trips int, state string) {
	t.Helper()
	body := string(do(t, "GET", base, "/metrics", nil).body)
	up, trips = -1, -1
	states := map[string]int{}
	for _, m := range []struct {
		name, typ string
		v         *int
	}{
		{"nix_airgap_layer_up", "gauge", &up},
		{"nix_airgap_layer_state", "gauge", nil},
		{"nix_airgap_layer_trips_total", "counter", &trips},
	} {
		head := fmt.Sprintf("# TYPE %s %s\n", m.name, m.typ)
		_, series, ok := strings.Cut(body, head)
		if !ok {
			t.Fatalf("metrics lack %q:\n%s", head, body)
		}
		for line := range strings.Lines(series) {
			if strings.HasPrefix(line, "#") {
				break
			}
			l, v, ok := strings.Cut(strings.TrimSpace(line), "} ")
			n, err := strconv.Atoi(v)
			this := m.name + "{layer=" + strconv.Quote(layer)
			switch {
			case !ok || err != nil || !strings.HasPrefix(l, m.name+`{layer="s3://`):
				t.Errorf("metrics: unexpected %q after %q", line, head)
			case m.v != nil && l == this:
				*m.v = n
			case m.v == nil && strings.HasPrefix(l, this+",state="):
				st, err := strconv.Unquote(strings.TrimPrefix(l, this+",state="))
				if _, dup := states[st]; err != nil || dup || n > 1 {
					t.Errorf("metrics: unexpected %q after %q", line, head)
				}
				states[st] = n
			}
		}
	}
	for st, n := range states {
		if n == 1 {
			state += st
		}
	}
	if len(states) != 3 || states["up"]+states["down"]+states["left_out"] != 1 {
		t.Errorf("metrics: layer %s has states %v, want one of up, down and left_out 1, the others 0", layer, states)
	}
	return up, trips, state
}

// put writes a file into the bucket at url.
func put(t *testing.T, url, name, content string) {
	t.Helper()
	b, err := storage.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Put(t.Context(), name, strings.NewReader(content), int64(len(content))); err != nil {
		t.Fatal(err)
	}
}

// TestLayerBackUpOnScrape: a bucket layer down is probed by /metrics once
// its back-off is over, so that nix_airgap_layer_up reads 1 and serve logs
// it back up when its store answers again, with no client asking for a
// path; before the back-off is over a scrape sends the store nothing.
func TestLayerBackUpOnScrape(t *testing.T) {
	s3 := s3test.Start(t)
	_, bucket, names := bucketAndDir(t, s3, 1)
	p := s3test.StartProxy(t, s3.Endpoint)
	var logs nixtest.SyncBuffer
	clock := newClock()
	_, base := testServer(t, server.Config{Dirs: []string{p.Via(bucket)}, Now: clock.Now, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	p.Close()
	if got, _ := timedGet(t, http.DefaultClient, base+names.narinfos[0]); got != http.StatusServiceUnavailable {
		t.Fatalf("GET %s with the store down: %d, want 503", names.narinfos[0], got)
	}
	p.Restore(t, false)
	accepted := p.Accepted.Load()
	if up, _, state := layerMetrics(t, base, p.Via(bucket)); up != 0 || state != "down" || p.Accepted.Load() != accepted {
		t.Errorf("metrics in the back-off: layer up %d, %s, %d connections to the store; want 0, down and none", up, state, p.Accepted.Load()-accepted)
	}
	clock.Advance(time.Second)
	if up, _, state := layerMetrics(t, base, p.Via(bucket)); up != 1 || state != "up" {
		t.Errorf("metrics after the back-off, the store back: layer up %d, %s; want 1 and up", up, state)
	}
	if strings.Count(logs.String(), "layer back up") != 1 {
		t.Errorf("serve did not log the layer back up once:\n%s", logs.String())
	}
}

// TestListingLayerDown: a NAR listing is made from the layer that has
// the path when another layer's store does not answer, as its narinfo
// is served; only a path no layer that answers has is a 503.
func TestListingLayerDown(t *testing.T) {
	s3 := s3test.Start(t)
	w := newWorld(t, genKey(t, "k"))
	bucket := s3.Bucket(t)
	copyToBucket(t, w.f.dir, bucket)
	p := s3test.StartProxy(t, s3.Endpoint)
	p.Close()
	_, base := testServer(t, server.Config{Dirs: []string{p.Via(bucket), w.f.dir}, Now: newClock().Now, Log: slog.New(slog.DiscardHandler)})
	client := &http.Client{Timeout: 30 * time.Second}
	for _, tc := range []struct {
		hash string
		want int
	}{
		{w.flat.Hash, http.StatusOK},
		{strings.Repeat("0", storepath.HashLen), http.StatusServiceUnavailable},
	} {
		if got, _ := timedGet(t, client, base+"/"+cache.ListingFile(tc.hash)); got != tc.want {
			t.Errorf("GET %s with the first layer's store down: %d, want %d", cache.ListingFile(tc.hash), got, tc.want)
		}
	}
}
