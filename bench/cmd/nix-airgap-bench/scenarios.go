package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
)

// Scenario and tool names, used by the report's comparisons.
const (
	scPackLocal    = "pack from the local store"
	scPackUpstream = "pack from an upstream cache"
	scClient       = "nix copy --from the server"
	scClients      = "32 clients: nix copy --from the server at once"
	scNAR          = "NAR downloads (wrk, 4 connections)"
	scVerify       = "verify and import"

	toolNixXz      = "nix copy (xz, default)"
	toolNixZstd    = "nix copy (zstd)"
	toolPackZstd   = "nix-airgap pack (zstd, default)"
	toolPackXz     = "nix-airgap pack --compression xz"
	toolNginx      = "nginx"
	toolServe      = "nix-airgap serve"
	toolCatCold    = "cat (cold cache)"
	toolVerifyCold = "nix-airgap verify (cold cache)"
	toolDeepCold   = "nix-airgap verify --deep (cold cache)"
	toolImportCold = "nix-airgap import (cold cache)"
	toolCatWarm    = "cat (warm cache)"
	toolVerifyWarm = "nix-airgap verify (warm cache)"
)

var wrkConns = []int{1, 16, 64}

func scNarinfo(c int) string { return fmt.Sprintf("narinfo requests (wrk, %d connections)", c) }

func (b *bench) out(name string) string { return filepath.Join(b.work, "out", name) }

// sample runs one timed command into a fresh output dir and records the
// size of what it wrote.
func (b *bench) sample(ctx context.Context, s *Series, env []string, out string, argv ...string) error {
	if out != "" {
		if err := removeAll(out); err != nil {
			return err
		}
	}
	// No run pays for writing back what the one before it left dirty.
	syscall.Sync()
	x, err := b.r.Run(ctx, env, "", argv...)
	if err != nil {
		return err
	}
	if out != "" {
		x.Bytes = dirSize(out)
		x.NarBytes = dirSize(filepath.Join(out, "nar"))
	}
	s.Samples = append(s.Samples, x)
	b.log.Info("run", "scenario", s.Scenario, "tool", s.Tool, "seconds", fmt.Sprintf("%.2f", x.Seconds), "rssMiB", x.MaxRSS>>20, "bytes", x.Bytes, "load", x.Load1)
	return nil
}

func (b *bench) packLocal(ctx context.Context) error {
	top := b.closure.Top
	type tool struct {
		s    *Series
		out  string
		argv []string
	}
	nixCopy := func(name, comp string) tool {
		out := b.out(name)
		url := "file://" + out + "?compression=" + comp + "&secret-key=" + b.key
		return tool{out: out, argv: syncedTo(out, "nix", "copy", "--to", url, top)}
	}
	pack := func(name string, extra ...string) tool {
		out := b.out(name)
		argv := append([]string{b.bin, "pack", top, "--mode", "runtime", "--no-build", "--out", out, "--secret-key", b.key, "--no-progress"}, extra...)
		return tool{out: out, argv: argv}
	}
	tools := map[string]tool{
		toolNixXz:    nixCopy("nix-xz", "xz"),
		toolNixZstd:  nixCopy("nix-zstd", "zstd"),
		toolPackZstd: pack("pack-zstd"),
		toolPackXz:   pack("pack-xz", "--compression", "xz"),
	}
	order := []string{toolNixXz, toolPackZstd, toolNixZstd, toolPackXz}
	for _, name := range order {
		t := tools[name]
		t.s = b.put(&Series{Scenario: scPackLocal, Tool: name, Command: showCommand(t.argv, b)})
		tools[name] = t
	}
	// Every run reads the store from the page cache: the first one must
	// not pay for reading it from disk.
	b.r.Run(ctx, nil, "", "bash", "-c", "find "+string(b.storeDir)+" -type f -print0 | xargs -0 cat >/dev/null")
	for i := range b.runs {
		for _, name := range b.round(i, order) {
			t := tools[name]
			if err := b.sample(ctx, t.s, b.freshEnv(), t.out, t.argv...); err != nil {
				return err
			}
		}
		b.log.Info("pack: run done", "run", i+1, "of", b.runs)
	}
	return nil
}

// syncedTo runs argv and then syncs the file system holding out, so that
// nix copy, which does not fsync what it writes to a file:// store, is timed
// with the durability pack gives its output.
func syncedTo(out string, argv ...string) []string {
	return append([]string{"sh", "-c", syncScript, "sh", out}, argv...)
}

const syncScript = `out=$1; shift; "$@" && exec sync -f "$out"`

// showCommand is argv as the report shows it: syncedTo's wrapper as "&& sync".
func showCommand(argv []string, b *bench) string {
	if len(argv) > 5 && argv[0] == "sh" && argv[2] == syncScript {
		return showCommand(argv[5:], b) + " && sync -f " + redact(argv[4:5], b)[0]
	}
	return strings.Join(redact(argv, b), " ")
}

// redact shows paths relative to the work dir in the report.
func redact(argv []string, b *bench) []string {
	out := make([]string, len(argv))
	for i, a := range argv {
		a = strings.ReplaceAll(a, b.closure.Top, "$TOP")
		a = strings.ReplaceAll(a, b.bin, "nix-airgap")
		a = strings.ReplaceAll(a, b.work, "$WORK")
		if strings.ContainsAny(a, "?&' ") {
			a = "'" + a + "'"
		}
		out[i] = a
	}
	return out
}

func (b *bench) packUpstream(ctx context.Context) error {
	up := filepath.Join(b.work, "upstream")
	// Like cache.nixos.org's recent uploads; a zstd upstream also spares
	// the run Nix's slow xz once more.
	upComp := "zstd"
	up += "-" + upComp
	if _, err := os.Stat(filepath.Join(up, "nix-cache-info")); err != nil {
		b.log.Info("upstream: making the upstream cache with nix copy", "compression", upComp)
		if _, err := b.r.Run(ctx, nil, "", "nix", "copy", "--to", "file://"+up+"?compression="+upComp+"&secret-key="+b.key, b.closure.Top); err != nil {
			return err
		}
	}
	ng, err := startNginx(ctx, filepath.Join(b.work, "nginx-up"), up)
	if err != nil {
		return err
	}
	defer ng.stop()
	url := "http://" + ng.addr
	// A Nix whose store dir is the same but whose database is empty: the
	// closure is valid only upstream.
	emptyEnv, err := isolatedEmpty(b)
	if err != nil {
		return err
	}
	top := b.closure.Top
	type tool struct {
		s    *Series
		out  string
		argv []string
	}
	trust := []string{"--option", "trusted-public-keys", b.pubKey}
	tools := map[string]tool{
		toolNixXz:    {out: b.out("up-nix-xz"), argv: syncedTo(b.out("up-nix-xz"), append([]string{"nix", "copy", "--from", url, "--to", "file://" + b.out("up-nix-xz"), top}, trust...)...)},
		toolNixZstd:  {out: b.out("up-nix-zstd"), argv: syncedTo(b.out("up-nix-zstd"), append([]string{"nix", "copy", "--from", url, "--to", "file://" + b.out("up-nix-zstd") + "?compression=zstd", top}, trust...)...)},
		toolPackZstd: {out: b.out("up-pack"), argv: []string{b.bin, "pack", top, "--mode", "runtime", "--no-build", "--substituter", url, "--public-key", b.pubKey, "--out", b.out("up-pack"), "--secret-key", b.key, "--no-progress"}},
	}
	order := []string{toolNixXz, toolPackZstd, toolNixZstd}
	for _, name := range order {
		t := tools[name]
		cmd := showCommand(t.argv, b)
		cmd = strings.ReplaceAll(cmd, b.pubKey, "$PUBKEY")
		cmd = strings.ReplaceAll(cmd, url, "http://$UPSTREAM")
		t.s = b.put(&Series{Scenario: scPackUpstream, Tool: name, Command: cmd})
		tools[name] = t
	}
	tools[toolPackZstd].s.Note = "NARs copied verbatim from upstream, compressed with " + upComp + " as upstream has them (the upstream cache was made with nix copy --to 'file://$WORK/upstream-" + upComp + "?compression=" + upComp + "&secret-key=...')"
	for i := range b.runs {
		for _, name := range b.round(i, order) {
			t := tools[name]
			if err := b.sample(ctx, t.s, freshCache(emptyEnv, b), t.out, t.argv...); err != nil {
				return err
			}
			// The empty database must stay empty.
			if err := emptyDB(b); err != nil {
				return err
			}
		}
		b.log.Info("upstream: run done", "run", i+1, "of", b.runs)
	}
	return nil
}

// round is the tools of run i: the xz ones only in the first b.xzRuns.
func (b *bench) round(i int, order []string) []string {
	var out []string
	for _, t := range order {
		if i >= b.xzRuns && (t == toolNixXz || t == toolPackXz) {
			continue
		}
		out = append(out, t)
	}
	return out
}

func emptyDB(b *bench) error {
	return removeAll(filepath.Join(b.work, "nix-empty", "var"))
}

func isolatedEmpty(b *bench) ([]string, error) {
	if err := emptyDB(b); err != nil {
		return nil, err
	}
	return isolatedEnv(filepath.Join(b.work, "nix-empty"), b)
}

func freshCache(env []string, b *bench) []string {
	dir, _ := os.MkdirTemp(filepath.Join(b.work, "nix/tmp"), "cache-")
	out := slices.Clone(env)
	for i, e := range out {
		if strings.HasPrefix(e, "XDG_CACHE_HOME=") {
			out[i] = "XDG_CACHE_HOME=" + dir
		}
	}
	// IsolatedEnv made the state dirs once; recreate what emptyDB removed.
	for _, e := range out {
		for _, k := range []string{"NIX_STATE_DIR=", "NIX_LOG_DIR="} {
			if strings.HasPrefix(e, k) {
				os.MkdirAll(strings.TrimPrefix(e, k), 0o755)
			}
		}
	}
	return out
}

// server is a child process serving HTTP on addr.
type server struct {
	cmd  *exec.Cmd
	addr string
}

func (s *server) stop() {
	if s.cmd.Process != nil {
		s.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			s.cmd.Process.Kill()
			<-done
		}
	}
}

// vmHWM is the server's peak resident set so far, bytes.
func (s *server) vmHWM() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			kb, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// cpu is the user and system CPU the server has used so far, in seconds:
// its process's and its children's (nginx's workers), alive or not.
func (s *server) cpu() float64 {
	pid := s.cmd.Process.Pid
	ticks := procTicks(pid, true)
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	for _, f := range strings.Fields(string(b)) {
		if child, err := strconv.Atoi(f); err == nil {
			ticks += procTicks(child, false)
		}
	}
	return float64(ticks) / userHZ
}

// userHZ is the unit of /proc's CPU times, fixed on Linux.
const userHZ = 100

// procTicks reads a process's utime and stime from /proc/PID/stat and,
// with waited, its waited-for children's too.
func procTicks(pid int, waited bool) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command, which may hold spaces, in parentheses.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	n := 2 // utime, stime: fields 14 and 15, here 11 and 12
	if waited {
		n = 4 // and cutime, cstime
	}
	var t int64
	for _, v := range f[11 : 11+n] {
		x, _ := strconv.ParseInt(v, 10, 64)
		t += x
	}
	return t
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func waitHTTP(ctx context.Context, url string) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s did not answer within 20s", url)
}

// nginxConf serves root as static files, as a plain binary cache host would.
const nginxConf = `daemon off;
master_process on;
user root;
worker_processes auto;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	sendfile on;
	tcp_nopush on;
	tcp_nodelay on;
	keepalive_timeout 65;
	keepalive_requests 1000000;
	default_type application/octet-stream;
	types { text/x-nix-narinfo narinfo; }
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	server {
		listen %[2]s;
		root %[3]s;
	}
}
`

func startNginx(ctx context.Context, dir, root string) (*server, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(nginxConf, dir, addr, root)), 0o644); err != nil {
		return nil, err
	}
	nginx := "nginx"
	if _, err := exec.LookPath(nginx); err != nil {
		nginx = "/usr/sbin/nginx"
	}
	cmd := exec.Command(nginx, "-p", dir, "-c", conf)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start nginx: %w", err)
	}
	s := &server{cmd: cmd, addr: addr}
	if err := waitHTTP(ctx, "http://"+addr+"/nix-cache-info"); err != nil {
		s.stop()
		return nil, fmt.Errorf("nginx: %w", err)
	}
	return s, nil
}

func (b *bench) startServe(ctx context.Context, root string) (*server, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(b.bin, "serve", root, "--listen", addr, "--log-level", "warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start nix-airgap serve: %w", err)
	}
	s := &server{cmd: cmd, addr: addr}
	if err := waitHTTP(ctx, "http://"+addr+"/nix-cache-info"); err != nil {
		s.stop()
		return nil, fmt.Errorf("nix-airgap serve: %w", err)
	}
	return s, nil
}

// wrkScript cycles through the URLs listed in a file, one per request.
const wrkScript = `local paths = {}
for line in io.lines(%q) do paths[#paths + 1] = line end
local i = math.random(#paths)
request = function()
	i = i %% #paths + 1
	return wrk.format("GET", paths[i])
end
`

// writeURLs lists the files under root whose names match, as URL paths,
// with a wrk script cycling over them.
func writeURLs(root, dir, name string, match func(string) bool) (string, int, error) {
	var urls []string
	filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() && match(p) {
			rel, _ := filepath.Rel(root, p)
			urls = append(urls, "/"+rel)
		}
		return nil
	})
	list := filepath.Join(dir, name+".urls")
	if err := os.WriteFile(list, []byte(strings.Join(urls, "\n")+"\n"), 0o644); err != nil {
		return "", 0, err
	}
	script := filepath.Join(dir, name+".lua")
	return script, len(urls), os.WriteFile(script, []byte(fmt.Sprintf(wrkScript, list)), 0o644)
}

var (
	reRPS     = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	reRead    = regexp.MustCompile(`(\d+) requests in ([0-9.]+)(us|ms|s|m), ([0-9.]+)([KMGT]?B) read`)
	reLat     = regexp.MustCompile(`(?m)^\s+(50|90|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
	reBad     = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	reSockErr = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

func unit(v float64, u string) float64 {
	switch u {
	case "us":
		return v / 1000
	case "s":
		return v * 1000
	case "KB":
		return v * 1024
	case "MB":
		return v * (1 << 20)
	case "GB":
		return v * (1 << 30)
	case "TB":
		return v * (1 << 40)
	}
	return v
}

// wrk runs wrk for the bench's duration and parses its summary.
func (b *bench) wrk(ctx context.Context, s *Series, addr, script string, conns int) error {
	threads := min(2, conns)
	argv := []string{"wrk", "-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns), "-d", fmt.Sprintf("%ds", int(b.duration.Seconds())), "--timeout", "10s", "--latency", "-s", script, "http://" + addr + "/"}
	cctx, cancel := context.WithTimeout(ctx, b.duration+30*time.Second)
	defer cancel()
	x := Sample{Load1: load1()}
	out, err := exec.CommandContext(cctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, out)
	}
	text := string(out)
	if m := reBad.FindString(text); m != "" {
		return fmt.Errorf("wrk against %s: %s\n%s", s.Tool, m, text)
	}
	// Requests slower than wrk's timeout are counted, not fatal: on a
	// loaded machine a few happen to either server.
	if m := reSockErr.FindStringSubmatch(text); m != nil {
		for _, v := range m[1:] {
			n, _ := strconv.Atoi(v)
			x.Errors += n
		}
	}
	m := reRPS.FindStringSubmatch(text)
	if m == nil {
		return fmt.Errorf("wrk: no Requests/sec in\n%s", text)
	}
	rps, _ := strconv.ParseFloat(m[1], 64)
	if m := reRead.FindStringSubmatch(text); m != nil {
		v, _ := strconv.ParseFloat(m[4], 64)
		d, _ := strconv.ParseFloat(m[2], 64)
		x.Bytes = int64(unit(v, m[5]))
		x.Seconds = unit(d, m[3]) / 1000
	}
	for _, l := range reLat.FindAllStringSubmatch(text, -1) {
		v, _ := strconv.ParseFloat(l[2], 64)
		v = unit(v, l[3])
		switch l[1] {
		case "50":
			x.P50 = v
		case "90":
			x.P90 = v
		case "99":
			x.P99 = v
		}
	}
	x.Value = rps
	if s.Scenario == scNAR && x.Seconds > 0 {
		x.Value = float64(x.Bytes) / x.Seconds
	}
	s.Samples = append(s.Samples, x)
	b.log.Info("wrk", "scenario", s.Scenario, "tool", s.Tool, "value", fmt.Sprintf("%.0f", x.Value), "p99ms", x.P99, "load", x.Load1)
	return nil
}

// namedServer is a server under test and the tool its series are of.
type namedServer struct {
	name string
	s    *server
}

// startBoth starts nginx, with its files in the work dir's nginxDir, and
// serve, both on the bundle at root.
func (b *bench) startBoth(ctx context.Context, nginxDir, root string) ([]namedServer, error) {
	ng, err := startNginx(ctx, filepath.Join(b.work, nginxDir), root)
	if err != nil {
		return nil, err
	}
	na, err := b.startServe(ctx, root)
	if err != nil {
		ng.stop()
		return nil, err
	}
	return []namedServer{{toolNginx, ng}, {toolServe, na}}, nil
}

// stopAll stops servers, the last started first.
func stopAll(servers []namedServer) {
	for _, sv := range slices.Backward(servers) {
		sv.s.stop()
	}
}

// inTurn is xs in the order of run i: every other run reverses it, so
// that none always goes first.
func inTurn[T any](xs []T, i int) []T {
	order := slices.Clone(xs)
	if i%2 == 1 {
		slices.Reverse(order)
	}
	return order
}

func (b *bench) serve(ctx context.Context) error {
	root := b.out("pack-zstd")
	if _, err := os.Stat(filepath.Join(root, "manifest.json")); err != nil {
		return fmt.Errorf("serve needs the bundle of the pack section in %s: %w", root, err)
	}
	servers, err := b.startBoth(ctx, "nginx-serve", root)
	if err != nil {
		return err
	}
	defer stopAll(servers)
	na := servers[1].s
	dir := filepath.Join(b.work, "wrk")
	os.MkdirAll(dir, 0o755)
	narinfos, n, err := writeURLs(root, dir, "narinfo", func(p string) bool { return strings.HasSuffix(p, ".narinfo") })
	if err != nil {
		return err
	}
	nars, _, err := writeURLs(root, dir, "nar", func(p string) bool { return strings.Contains(p, "/nar/") })
	if err != nil {
		return err
	}
	b.log.Info("serve: wrk", "narinfos", n)

	wrkCmd := func(c int, script string) string {
		return fmt.Sprintf("wrk -t %d -c %d -d %ds --timeout 10s --latency -s %s http://$SERVER/", min(2, c), c, int(b.duration.Seconds()), strings.ReplaceAll(script, b.work, "$WORK"))
	}
	for _, c := range wrkConns {
		series := map[string]*Series{}
		for _, sv := range servers {
			series[sv.name] = b.put(&Series{Scenario: scNarinfo(c), Tool: sv.name, Command: wrkCmd(c, narinfos)})
		}
		for range b.runs {
			for _, sv := range servers {
				if err := b.wrk(ctx, series[sv.name], sv.s.addr, narinfos, c); err != nil {
					return err
				}
			}
		}
	}
	series := map[string]*Series{}
	for _, sv := range servers {
		series[sv.name] = b.put(&Series{Scenario: scNAR, Tool: sv.name, Command: wrkCmd(4, nars)})
	}
	for range b.runs {
		for _, sv := range servers {
			if err := b.wrk(ctx, series[sv.name], sv.s.addr, nars, 4); err != nil {
				return err
			}
		}
	}

	client := filepath.Join(b.work, "client")
	for _, sv := range servers {
		argv := []string{"nix", "copy", "--from", "http://" + sv.s.addr, "--to", client, b.closure.Top, "--option", "trusted-public-keys", b.pubKey}
		cmd := strings.Join(redact(argv, b), " ")
		cmd = strings.ReplaceAll(strings.ReplaceAll(cmd, sv.s.addr, "$SERVER"), b.pubKey, "$PUBKEY")
		series[sv.name] = b.put(&Series{Scenario: scClient, Tool: sv.name, Command: cmd})
	}
	for i := range b.runs {
		for _, sv := range inTurn(servers, i) {
			argv := []string{"nix", "copy", "--from", "http://" + sv.s.addr, "--to", client, b.closure.Top, "--option", "trusted-public-keys", b.pubKey}
			if err := b.sample(ctx, series[sv.name], b.freshEnv(), client, argv...); err != nil {
				return err
			}
		}
	}
	removeAll(client)
	series[toolServe].Note = fmt.Sprintf("nix-airgap serve's peak RSS over the whole serve section: %d MiB", na.vmHWM()>>20)
	return nil
}

// clients is how many nix copy --from run at once in scClients.
const clients = 32

// clientsSection has 32 stock Nix clients copy the closure at once, each
// into a store of its own with a fresh narinfo cache, from nginx and from
// serve on the pack section's bundle, in alternating runs. A sample is the
// wall time until the last client finishes; CPU adds up the clients',
// ServerCPU is the server's, MaxRSS is the largest client's.
func (b *bench) clientsSection(ctx context.Context) error {
	root := b.out("pack-zstd")
	if _, err := os.Stat(filepath.Join(root, "manifest.json")); err != nil {
		// Without the pack section: the same bundle, untimed.
		b.log.Info("clients: packing the bundle the pack section would")
		if _, err := b.r.Run(ctx, nil, "", b.bin, "pack", b.closure.Top, "--mode", "runtime", "--no-build", "--out", root, "--key", b.key, "--no-progress"); err != nil {
			return err
		}
	}
	servers, err := b.startBoth(ctx, "nginx-clients", root)
	if err != nil {
		return err
	}
	defer stopAll(servers)
	na := servers[1].s
	dir := filepath.Join(b.work, "clients")
	var closure int64
	for _, p := range b.closure.Paths {
		closure += p.Size
	}
	stores := newClientStores(dir, clients*(closure+clientOverhead))
	series := map[string]*Series{}
	for _, sv := range servers {
		cmd := fmt.Sprintf("for i in $(seq %d); do nix copy --from http://$SERVER --to %s/client-$i %s --option trusted-public-keys $PUBKEY & done; wait",
			clients, strings.ReplaceAll(dir, b.work, "$WORK"), strings.Join(redact([]string{b.closure.Top}, b), " "))
		series[sv.name] = b.put(&Series{Scenario: scClients, Tool: sv.name, Command: cmd})
	}
	for i := range b.runs {
		for _, sv := range inTurn(servers, i) {
			if err := stores.make(); err != nil {
				return err
			}
			syscall.Sync()
			x := Sample{Load1: load1()}
			var mu sync.Mutex
			g, gctx := errgroup.WithContext(ctx)
			cpu0 := sv.s.cpu()
			start := time.Now()
			for c := range clients {
				to := filepath.Join(dir, fmt.Sprintf("client-%d", c))
				g.Go(func() error {
					y, err := b.r.Run(gctx, b.freshEnv(), "", "nix", "copy", "--from", "http://"+sv.s.addr, "--to", to, b.closure.Top,
						"--option", "trusted-public-keys", b.pubKey)
					mu.Lock()
					x.CPU += y.CPU
					x.MaxRSS = max(x.MaxRSS, y.MaxRSS)
					mu.Unlock()
					return err
				})
			}
			err := g.Wait()
			x.Seconds = time.Since(start).Seconds()
			x.ServerCPU = sv.s.cpu() - cpu0
			if rerr := stores.remove(); err == nil {
				err = rerr
			}
			if err != nil {
				return err
			}
			s := series[sv.name]
			s.Samples = append(s.Samples, x)
			b.log.Info("run", "scenario", s.Scenario, "tool", s.Tool, "seconds", fmt.Sprintf("%.2f", x.Seconds),
				"clients-cpu", fmt.Sprintf("%.1f", x.CPU), "server-cpu", fmt.Sprintf("%.2f", x.ServerCPU), "load", x.Load1)
		}
	}
	where := "on disk (" + dir + "): 32 closures did not fit in half the available memory"
	if stores.tmpfs {
		where = "on a tmpfs of their own, so that the clients' disk writes do not swamp the comparison"
	}
	for _, sv := range servers {
		s := series[sv.name]
		s.Note = fmt.Sprintf("the clients' stores were %s; %s's own CPU (user+system) per run: %s s", where, sv.name,
			fmtStat(stat(s.field(func(x Sample) float64 { return x.ServerCPU })), "%.2f"))
	}
	series[toolServe].Note += fmt.Sprintf("; its peak RSS over the section: %d MiB", na.vmHWM()>>20)
	return nil
}

// clientOverhead is what a client's store holds besides the closure's
// files: its database, directories and inodes.
const clientOverhead = 32 << 20

// clientStores is the directory of the clients' stores: a tmpfs of its own
// when they fit in half of the available memory, mounted before each run
// and unmounted after it (freeing gigabytes at once, where removing them
// from disk takes minutes), and a directory on disk otherwise.
type clientStores struct {
	dir   string
	size  int64
	tmpfs bool
}

func newClientStores(dir string, need int64) *clientStores {
	return &clientStores{dir: dir, size: need + need/4, tmpfs: need < memAvailable()/2}
}

func (c *clientStores) make() error {
	if err := removeAll(c.dir); err != nil {
		return err
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return err
	}
	if !c.tmpfs {
		return nil
	}
	if err := syscall.Mount("tmpfs", c.dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0755", c.size)); err != nil {
		return fmt.Errorf("mount a tmpfs on %s: %w", c.dir, err)
	}
	return nil
}

func (c *clientStores) remove() error {
	if c.tmpfs {
		if err := syscall.Unmount(c.dir, 0); err != nil {
			return fmt.Errorf("unmount %s: %w", c.dir, err)
		}
	}
	return removeAll(c.dir)
}

// memAvailable is the kernel's estimate of the memory available without
// swapping, in bytes.
func memAvailable() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if kb, ok := strings.CutPrefix(l, "MemAvailable:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(kb), " kB"), 10, 64)
			return n << 10
		}
	}
	return 0
}

func (b *bench) verify(ctx context.Context) error {
	bundle := b.out("pack-zstd")
	if _, err := os.Stat(filepath.Join(bundle, "manifest.json")); err != nil {
		return fmt.Errorf("verify needs the bundle of the pack section in %s: %w", bundle, err)
	}
	size := dirSize(bundle)
	cache := filepath.Join(b.work, "imported")
	catCmd := "find " + bundle + " -type f -print0 | xargs -0 cat >/dev/null"
	type tool struct {
		name string
		cold bool
		out  string
		argv []string
	}
	tools := []tool{
		{toolCatCold, true, "", []string{"bash", "-c", catCmd}},
		{toolVerifyCold, true, "", []string{b.bin, "verify", bundle, "--public-key", b.pub}},
		{toolDeepCold, true, "", []string{b.bin, "verify", "--deep", bundle, "--public-key", b.pub}},
		{toolImportCold, true, cache, []string{b.bin, "import", bundle, "--cache", cache, "--public-key", b.pub}},
		{toolCatWarm, false, "", []string{"bash", "-c", catCmd}},
		{toolVerifyWarm, false, "", []string{b.bin, "verify", bundle, "--public-key", b.pub}},
	}
	series := map[string]*Series{}
	for _, t := range tools {
		cmd := strings.Join(redact(t.argv, b), " ")
		if t.cold {
			cmd = "sync; echo 3 > /proc/sys/vm/drop_caches; " + cmd
		}
		series[t.name] = b.put(&Series{Scenario: scVerify, Tool: t.name, Command: cmd})
	}
	for range b.runs {
		for _, t := range tools {
			if t.cold {
				if err := dropCaches(); err != nil {
					return fmt.Errorf("drop caches: %w", err)
				}
			} else {
				// Warm: read everything once first.
				b.r.Run(ctx, nil, "", "bash", "-c", catCmd)
			}
			s := series[t.name]
			if err := b.sample(ctx, s, nil, t.out, t.argv...); err != nil {
				return err
			}
			s.Samples[len(s.Samples)-1].Bytes = size
		}
	}
	removeAll(cache)
	return nil
}

func cmdOut(ctx context.Context, argv ...string) string {
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return strings.TrimSpace(string(out) + " " + err.Error())
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	var lines []string
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, " ")
}

func sortInt64(xs []int64) { slices.Sort(xs) }
