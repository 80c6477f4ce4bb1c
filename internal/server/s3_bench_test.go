package server_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/server"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storage/s3test"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

func TestMain(m *testing.M) { os.Exit(s3test.Main(m)) }

// BenchmarkServeS3 compares serve from an S3 bucket (SeaweedFS on
// loopback) with serve from a directory holding the same cache, three
// replicas each: narinfo latency when a replica first reads each narinfo
// (cold), when it is asked again at once (hot: from memory, unless the
// cold pass outlasted the recheck interval) and once the recheck interval
// has passed (warm: a bucket replica reads it again, a directory one
// stats it), p50 and p99 over every request of 8 clients; and NAR
// throughput, the same 64 MiB of NARs through the replicas. Run it with
//
//	go test ./internal/server -run '^$' -bench ServeS3 -benchtime 1x
func BenchmarkServeS3(b *testing.B) {
	const paths, narSize, nars = 2000, 512, 64
	dir := filepath.Join(b.TempDir(), "cache")
	names := makeBenchCache(b, dir, paths, narSize, nars)
	url := s3test.Start(b).Bucket(b)
	copyToBucket(b, dir, url)
	for _, loc := range []struct{ name, location string }{{"dir", dir}, {"s3", url}} {
		var replicas []string
		for range 3 {
			s, err := server.New(server.Config{Dirs: []string{loc.location}, Log: slog.New(slog.DiscardHandler), AccessLog: nil})
			if err != nil {
				b.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { s.Serve(ctx, ln); close(done) }()
			b.Cleanup(func() { cancel(); <-done; s.Close() })
			replicas = append(replicas, "http://"+ln.Addr().String())
		}
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		b.Run(loc.name, func(b *testing.B) {
			for range b.N {
				cold := fetchAll(b, client, replicas, names.narinfos, 8)
				hot := fetchAll(b, client, replicas, names.narinfos, 8)
				// Past any replica's recheck interval (at most half the grace).
				time.Sleep(cache.RemovalGrace)
				warm := fetchAll(b, client, replicas, names.narinfos, 8)
				start := time.Now()
				n := fetchBytes(b, client, replicas, names.nars, 8)
				secs := time.Since(start).Seconds()
				b.ReportMetric(float64(pct(cold, 50).Microseconds()), "cold-p50-µs")
				b.ReportMetric(float64(pct(cold, 99).Microseconds()), "cold-p99-µs")
				b.ReportMetric(float64(pct(hot, 50).Microseconds()), "hot-p50-µs")
				b.ReportMetric(float64(pct(hot, 99).Microseconds()), "hot-p99-µs")
				b.ReportMetric(float64(pct(warm, 50).Microseconds()), "warm-p50-µs")
				b.ReportMetric(float64(pct(warm, 99).Microseconds()), "warm-p99-µs")
				b.ReportMetric(float64(n)/secs/(1<<20), "NAR-MiB/s")
			}
		})
	}
}

type benchNames struct{ narinfos, nars []string }

// makeBenchCache writes a cache of n narinfos with NARs of size bytes,
// and big NAR files of 1 MiB, named for the requests.
func makeBenchCache(b testing.TB, dir string, n, size, big int) benchNames {
	c, err := cache.CreateDir(dir, storepath.DefaultDir, 40)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	var names benchNames
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range n + big {
		sz := size
		if i >= n {
			sz = 1 << 20
		}
		data := make([]byte, sz)
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		f, err := c.AddFile(b.Context(), bytes.NewReader(data), "")
		if err != nil {
			b.Fatal(err)
		}
		p, err := storepath.DefaultDir.Base(fmt.Sprintf("%032d-bench-%d", i, i))
		if err != nil {
			b.Fatal(err)
		}
		ni := &narinfo.NarInfo{StorePath: p, URL: f.URL, Compression: "none", FileHash: f.Hash, FileSize: uint64(f.Size), NarHash: f.Hash, NarSize: uint64(f.Size)}
		if err := c.PutNarInfo(b.Context(), ni); err != nil {
			b.Fatal(err)
		}
		if i < n {
			names.narinfos = append(names.narinfos, "/"+p.Hash+".narinfo")
		} else {
			names.nars = append(names.nars, "/"+f.URL)
		}
	}
	return names
}

func copyToBucket(b testing.TB, dir, url string) {
	src, err := storage.OpenDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	dst, err := storage.Open(b.Context(), url)
	if err != nil {
		b.Fatal(err)
	}
	defer dst.Close()
	for info, err := range storage.Walk(b.Context(), src, "") {
		if err != nil {
			b.Fatal(err)
		}
		data, _, err := storage.ReadFile(b.Context(), src, info.Name, 1<<30)
		if err != nil {
			b.Fatal(err)
		}
		if err := dst.Put(b.Context(), info.Name, bytes.NewReader(data), int64(len(data))); err != nil {
			b.Fatal(err)
		}
	}
}

// fetchAll GETs every path from the replicas in turn, clients at a time,
// and returns each request's latency.
func fetchAll(b *testing.B, client *http.Client, replicas, paths []string, clients int) []time.Duration {
	var mu sync.Mutex
	var lat []time.Duration
	work := make(chan int)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for i := range work {
				start := time.Now()
				resp, err := client.Get(replicas[i%len(replicas)] + paths[i])
				if err != nil {
					b.Error(err)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("%s: %s", paths[i], resp.Status)
				}
				d := time.Since(start)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		})
	}
	for i := range paths {
		work <- i
	}
	close(work)
	wg.Wait()
	return lat
}

// fetchBytes GETs every path from every replica, clients at a time, and
// returns the bytes received.
func fetchBytes(b *testing.B, client *http.Client, replicas, paths []string, clients int) int64 {
	var all []string
	for _, r := range replicas {
		for _, p := range paths {
			all = append(all, r+p)
		}
	}
	var total int64
	var mu sync.Mutex
	work := make(chan string)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for u := range work {
				resp, err := client.Get(u)
				if err != nil {
					b.Error(err)
					continue
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				total += n
				mu.Unlock()
			}
		})
	}
	for _, u := range all {
		work <- u
	}
	close(work)
	wg.Wait()
	return total
}

func pct(xs []time.Duration, p int) time.Duration {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, len(s)*p/100)]
}
