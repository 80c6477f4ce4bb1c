package reliability_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
)

// wrkScript mixes requests from urls.txt (one "GET PATH" a line, chosen
// at random) and reports status counts and latency percentiles.
const wrkScript = `
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  s200, s404, sother = 0, 0, 0
  urls = {}
  for line in io.lines(args[1]) do table.insert(urls, line) end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end
function request() return wrk.format("GET", urls[math.random(#urls)]) end
function response(status, headers, body)
  if status == 200 then s200 = s200 + 1 elseif status == 404 then s404 = s404 + 1 else sother = sother + 1 end
end
function done(summary, latency, requests)
  local a, b, c = 0, 0, 0
  for _, t in ipairs(threads) do a = a + t:get("s200"); b = b + t:get("s404"); c = c + t:get("sother") end
  io.write(string.format("RESULT requests %d\nRESULT bytes %d\nRESULT duration_us %d\n", summary.requests, summary.bytes, summary.duration))
  io.write(string.format("RESULT status200 %d\nRESULT status404 %d\nRESULT statusother %d\n", a, b, c))
  io.write(string.format("RESULT err_connect %d\nRESULT err_read %d\nRESULT err_write %d\nRESULT err_status %d\nRESULT err_timeout %d\n",
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status, summary.errors.timeout))
  for _, p in ipairs({50, 90, 99, 99.9}) do io.write(string.format("RESULT p%s_us %d\n", p, latency:percentile(p))) end
  io.write(string.format("RESULT max_us %d\n", latency.max))
end
`

// rss reads a process's resident set size in KiB.
func rss(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return -1
}

// TestLoad runs `nix-airgap serve` on 127.0.0.1 under wrk for
// $NIX_AIRGAP_LOAD_DURATION (skipped when unset) with 64 connections,
// mixing narinfos (40%), NARs (25%), missing narinfos (20%) and hashed-
// mirror files (15%), while slow clients hold connections open. It wants no
// error and no status but 200 and 404, samples serve's RSS every 10 s, and
// reports req/s and latency percentiles. $NIX_AIRGAP_BIN, when set, is the
// binary to serve with (a release build); $NIX_AIRGAP_LOAD_REPORT, when set,
// gets the figures.
func TestLoad(t *testing.T) {
	durS := os.Getenv("NIX_AIRGAP_LOAD_DURATION")
	if durS == "" {
		t.Skip("set NIX_AIRGAP_LOAD_DURATION (scripts/reliability.sh does)")
	}
	dur, err := time.ParseDuration(durS)
	if err != nil {
		t.Fatal(err)
	}
	nixtest.Require(t)
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		t.Fatal("the load test needs wrk (apt-get install wrk)")
	}
	conns := envInt(t, "NIX_AIRGAP_LOAD_CONNS", 64)
	slow := envInt(t, "NIX_AIRGAP_SLOWLORIS_CONNS", 256)

	// A cache of 500 text paths (16 KiB of hex each), 40 of 1 MiB, and 100
	// flat fixed-output files for the hashed mirror.
	s := newSite(t, 500, 128)
	bigs := s.addPaths(t, "big", 40, 8192)
	var flats []string
	var flatSums [][32]byte
	src := t.TempDir()
	for i := range 100 {
		data := make([]byte, 4096+i*1024)
		for j := range data {
			data[j] = byte(rand.Uint32())
		}
		f := filepath.Join(src, fmt.Sprintf("src-%d.tar.gz", i))
		if err := os.WriteFile(f, data, 0o644); err != nil {
			t.Fatal(err)
		}
		p := strings.TrimSpace(s.n.Run(t, "nix-store", "--add-fixed", "sha256", f))
		flats = append(flats, p)
		flatSums = append(flatSums, sha256.Sum256(data))
	}
	bundleDir := filepath.Join(t.TempDir(), "bundle")
	s.run(t, append([]string{"pack", s.top.String(), bigs[len(bigs)-1].String(), "--mode", "runtime", "--no-build", "--no-progress", "--key", s.skFile, "--out", bundleDir}, flats...)...)
	cacheDir := filepath.Join(t.TempDir(), "cache")
	s.run(t, "import", bundleDir, "--cache", cacheDir, "--public-key", s.pkFile)

	var urls []string
	d, err := cache.OpenDir(cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	var narinfos, nars []string
	for ni, err := range d.NarInfos(t.Context()) {
		if err != nil {
			t.Fatal(err)
		}
		narinfos = append(narinfos, "/"+ni.StorePath.Hash+".narinfo")
		nars = append(nars, "/"+ni.URL)
	}
	d.Close()
	pick := func(list []string, n int) {
		for range n {
			urls = append(urls, list[rand.IntN(len(list))])
		}
	}
	pick(narinfos, 4000)
	pick(nars, 2500)
	for range 2000 {
		var h [16]byte
		for i := range h {
			h[i] = "0123456789abcdfghijklmnpqrsvwxyz"[rand.IntN(32)]
		}
		urls = append(urls, "/"+string(h[:])+string(h[:])+".narinfo")
	}
	for range 1500 {
		urls = append(urls, fmt.Sprintf("/sha256/%x", flatSums[rand.IntN(len(flatSums))]))
	}
	urlFile := filepath.Join(t.TempDir(), "urls.txt")
	os.WriteFile(urlFile, []byte(strings.Join(urls, "\n")+"\n"), 0o644)
	luaFile := filepath.Join(t.TempDir(), "mix.lua")
	os.WriteFile(luaFile, []byte(wrkScript), 0o644)
	// Each kind alone, for a short while first, to tell where latency
	// comes from.
	kinds := []struct{ name, file string }{
		{"narinfo", narinfos[0]}, {"NAR", nars[0]}, {"404", urls[len(urls)-2000]}, {"mirror", urls[len(urls)-1]},
	}
	for i := range kinds {
		var list []string
		switch i {
		case 0:
			list = urls[:4000]
		case 1:
			list = urls[4000:6500]
		case 2:
			list = urls[6500:8500]
		case 3:
			list = urls[8500:]
		}
		kinds[i].file = filepath.Join(t.TempDir(), "urls.txt")
		os.WriteFile(kinds[i].file, []byte(strings.Join(list, "\n")+"\n"), 0o644)
	}

	// serve, on a loopback port.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	serve := s.cli(ctx, "serve", cacheDir, "--listen", addr, "--log-level", "error")
	if bin := os.Getenv("NIX_AIRGAP_BIN"); bin != "" {
		serve.Path, serve.Args[0] = bin, bin
	}
	var serveOut bytes.Buffer
	serve.Stdout, serve.Stderr = &serveOut, &serveOut
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	base := "http://" + addr
	for i := 0; ; i++ {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if i > 100 {
			t.Fatalf("serve did not come up: %v\n%s", err, serveOut.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, u := range []string{narinfos[0], nars[0], fmt.Sprintf("/sha256/%x", flatSums[0])} {
		resp, err := http.Get(base + u)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s before the load: %v %v", u, resp.Status, err)
		}
		resp.Body.Close()
	}
	var byKind []string
	for _, k := range kinds {
		out, err := exec.CommandContext(ctx, wrk, "-t", "2", "-c", strconv.Itoa(conns), "-d", "5s",
			"--timeout", "5s", "-s", luaFile, base, "--", k.file).CombinedOutput()
		if err != nil {
			t.Fatalf("wrk: %v\n%s", err, out)
		}
		r := wrkResults(out)
		byKind = append(byKind, fmt.Sprintf("%s alone: %.0f req/s, p50 %.2f ms, p99 %.2f ms", k.name,
			float64(r["requests"])/(float64(r["duration_us"])/1e6), float64(r["p50_us"])/1000, float64(r["p99_us"])/1000))
	}

	pid := serve.Process.Pid
	rssStart := rss(pid)
	loadStart, _ := os.ReadFile("/proc/loadavg")

	// RSS every 10 s, slow clients, and wrk.
	var samples []string
	var rssWarm, rssMax, rssEnd int
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(10 * time.Second)
		defer tick.Stop()
		start := time.Now()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				r := rss(pid)
				samples = append(samples, fmt.Sprintf("%ds:%dMiB", int(time.Since(start).Seconds()), r/1024))
				if rssWarm == 0 && time.Since(start) >= 30*time.Second {
					rssWarm = r
				}
				rssMax = max(rssMax, r)
			}
		}
	})
	var slowDropped, slowOpened int
	var slowMu sync.Mutex
	for range slow {
		wg.Go(func() {
			deadline := time.Now().Add(dur)
			for time.Now().Before(deadline) {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					time.Sleep(time.Second)
					continue
				}
				slowMu.Lock()
				slowOpened++
				slowMu.Unlock()
				req := "GET /nix-cache-info HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 1000)
				for j := 0; j < len(req) && time.Now().Before(deadline); j++ {
					c.SetWriteDeadline(time.Now().Add(5 * time.Second))
					if _, err := c.Write([]byte{req[j]}); err != nil {
						break
					}
					c.SetReadDeadline(time.Now().Add(time.Second))
					var b [64]byte
					if _, err := c.Read(b[:]); err == nil || !isTimeout(err) {
						slowMu.Lock()
						slowDropped++
						slowMu.Unlock()
						break
					}
				}
				c.Close()
			}
		})
	}

	out, err := exec.CommandContext(ctx, wrk, "-t", "2", "-c", strconv.Itoa(conns), "-d", strconv.Itoa(int(dur.Seconds()))+"s",
		"--timeout", "5s", "-s", luaFile, base, "--", urlFile).CombinedOutput()
	close(done)
	wg.Wait()
	rssEnd = rss(pid)
	loadEnd, _ := os.ReadFile("/proc/loadavg")
	if err != nil {
		t.Fatalf("wrk: %v\n%s", err, out)
	}
	res := wrkResults(out)
	// serve must still answer normally.
	resp, err := http.Get(base + narinfos[0])
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("GET after the load: %v", err)
	} else {
		resp.Body.Close()
	}
	cancel()
	serve.Wait()

	secs := float64(res["duration_us"]) / 1e6
	errs := res["statusother"] + res["err_connect"] + res["err_read"] + res["err_write"] + res["err_timeout"]
	report := fmt.Sprintf(`load: %s, %d connections (wrk -t 2), %d slow clients, on 127.0.0.1
requests: %d (%.0f/s), %.1f MiB/s; 200: %d, 404: %d (%.1f%%, 20%% expected), other statuses: %d
socket errors: connect %d, read %d, write %d, timeout %d
latency: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms
serve RSS: %d MiB at start, %d MiB after 30 s, %d MiB max, %d MiB at the end
RSS samples: %s
slow clients: %d connections opened, %d dropped by the server
%s
machine load average (/proc/loadavg): %s at start, %s at the end
`, dur, conns, slow,
		res["requests"], float64(res["requests"])/secs, float64(res["bytes"])/secs/(1<<20), res["status200"], res["status404"],
		100*float64(res["status404"])/float64(max(res["requests"], 1)), res["statusother"],
		res["err_connect"], res["err_read"], res["err_write"], res["err_timeout"],
		float64(res["p50_us"])/1000, float64(res["p90_us"])/1000, float64(res["p99_us"])/1000, float64(res["p99.9_us"])/1000, float64(res["max_us"])/1000,
		rssStart/1024, rssWarm/1024, rssMax/1024, rssEnd/1024, strings.Join(samples, " "), slowOpened, slowDropped, strings.Join(byKind, "\n"), strings.TrimSpace(string(loadStart)), strings.TrimSpace(string(loadEnd)))
	t.Log("\n" + report)
	if f := os.Getenv("NIX_AIRGAP_LOAD_REPORT"); f != "" {
		os.WriteFile(f, []byte(report+"\nwrk output:\n"+string(out)), 0o644)
	}
	if errs != 0 {
		t.Errorf("%d errors under load:\n%s", errs, out)
	}
	if res["requests"] == 0 || res["status200"] == 0 || res["status404"] == 0 {
		t.Errorf("wrk did not run the mix:\n%s", out)
	}
	if rssWarm > 0 && rssMax > 2*rssWarm+64<<10 {
		t.Errorf("serve's RSS grew from %d KiB after warm-up to %d KiB", rssWarm, rssMax)
	}
	// Those still open at the end were not due to be dropped yet.
	if slowDropped < slowOpened-slow {
		t.Errorf("%d slow clients connected, only %d dropped by the server", slowOpened, slowDropped)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// wrkResults parses the RESULT lines wrkScript prints.
func wrkResults(out []byte) map[string]int64 {
	res := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "RESULT" {
			res[f[1]], _ = strconv.ParseInt(f[2], 10, 64)
		}
	}
	return res
}
