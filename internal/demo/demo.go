// Package demo runs the whole airgap story on the built-in example world
// with stock Nix: build it online, pack it, verify it, cut the internet,
// wipe the store, and then, inside a loopback-only network namespace,
// import and serve the bundle and build the world again, plus a changed
// variant rebuilt from the bundled sources.
//
// Every step is a real command — nix-build, nix-collect-garbage and
// nix-airgap itself — run as a subprocess, exactly as a user would type
// it, so the demo shows what to do as much as it proves that it works.
// Those two are the only nix programs it runs itself, playing the user;
// what it asks Nix (its version, whether a path is still valid) goes
// through nixcli, as everywhere else in nix-airgap.
package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/netns"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/progress"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
	"github.com/nix-airgap/nix-airgap/internal/world"
)

// Demo is one run of the demo. The zero value is not usable: set Exe.
type Demo struct {
	// Exe is the nix-airgap binary the steps run.
	Exe string
	// Dir is the work dir. Empty means a new temp dir, removed at the
	// end unless Keep is set.
	Dir string
	// Keep keeps the work dir.
	Keep bool
	// NoIsolation skips the network namespace even where one can be
	// made.
	NoIsolation bool
	// Out receives the story; nil means io.Discard.
	Out io.Writer
	// Log receives debug detail; nil means discard.
	Log *slog.Logger
}

// ErrStep reports a step whose outcome was not what the story needs: a
// build that should have substituted everything built something, say.
var ErrStep = errors.New("demo step failed")

// run is the state of one Run.
type run struct {
	*Demo
	out     io.Writer
	dir     string
	env     []string       // the isolated Nix's environment
	nix     *nixcli.Runner // what nix-airgap itself asks that Nix
	ns      *netns.NS
	step    int
	begun   time.Time // the run's start
	started time.Time // the current step's start
}

// Run runs the demo.
func (d *Demo) Run(ctx context.Context) (err error) {
	r := &run{Demo: d, out: d.Out, begun: time.Now()}
	if r.out == nil {
		r.out = io.Discard
	}
	if r.Log == nil {
		r.Log = slog.New(slog.DiscardHandler)
	}
	r.dir = d.Dir
	if r.dir == "" {
		if r.dir, err = os.MkdirTemp("", "nix-airgap-demo-"); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		if !d.Keep {
			defer os.RemoveAll(r.dir)
		}
	} else if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if err := r.story(ctx); err != nil {
		return err
	}
	fmt.Fprintf(r.out, "\nDone in %s: built online, packed, verified, and rebuilt offline from the bundle alone.\n", since(r.begun))
	if d.Keep || d.Dir != "" {
		fmt.Fprintf(r.out, "Everything is kept in %s.\n", r.dir)
	}
	return nil
}

// story tells the demo's steps: online, the crossing, offline.
func (r *run) story(ctx context.Context) error {
	f := r.files()
	if err := r.isolate(ctx, f.storeDir); err != nil {
		return err
	}
	build, res, err := r.online(ctx, f)
	if err != nil {
		return err
	}
	if err := r.cross(ctx, f.storeDir, res.out); err != nil {
		return err
	}
	if r.ns != nil {
		defer r.ns.Close()
	}
	return r.offline(ctx, f, build, res)
}

// demoFiles are where one run keeps its parts.
type demoFiles struct {
	world, secret, public, bundle, cache string
	storeDir                             storepath.Dir
}

func (r *run) files() demoFiles {
	keys := filepath.Join(r.dir, "keys")
	return demoFiles{
		world:    filepath.Join(r.dir, "world"),
		secret:   filepath.Join(keys, "demo.sec"),
		public:   filepath.Join(keys, "demo.pub"),
		bundle:   filepath.Join(r.dir, "bundle"),
		cache:    filepath.Join(r.dir, "cache"),
		storeDir: storepath.Dir(filepath.Join(r.dir, "nix", "store")),
	}
}

// isolate sets up a Nix of the demo's own under r.dir.
func (r *run) isolate(ctx context.Context, storeDir storepath.Dir) error {
	env, err := nixcli.IsolatedEnv(filepath.Join(r.dir, "nix"), storeDir, "")
	if err != nil {
		return err
	}
	// nix-airgap's own settings pass through; nothing else of the
	// caller's environment does.
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "NIX_AIRGAP_") {
			env = append(env, kv)
		}
	}
	r.env = env
	r.nix = &nixcli.Runner{Env: env, Log: r.Log, KnownStoreDir: storeDir}
	version, err := r.nix.Version(ctx)
	if err != nil {
		return fmt.Errorf("demo needs Nix (run scripts/setup.sh): %w", err)
	}
	fmt.Fprintf(r.out, "nix-airgap demo: the whole airgap story on a built-in example, with stock %s.\n", version)
	fmt.Fprintf(r.out, "Nix here is isolated under %s (store %s); nothing touches the machine's own store.\n\n", filepath.Join(r.dir, "nix"), storeDir)
	return nil
}

// online builds the example with its sources on a loopback "internet",
// then packs and verifies it. It returns the build command and result.
func (r *run) online(ctx context.Context, f demoFiles) (build []string, res buildResult, err error) {
	for _, d := range []string{f.world, filepath.Dir(f.secret)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, res, err
		}
	}
	inet, err := startInternet()
	if err != nil {
		return nil, res, err
	}
	defer inet.Close()
	w, err := world.Generate(f.world, inet.URL, world.Options{})
	if err != nil {
		return nil, res, err
	}
	inet.files = w.Files
	r.begin("the internet: serve the example world's %d sources on %s", len(w.Files), inet.URL)
	r.end("")

	r.begin("online: build the example system with stock nix-build")
	build = []string{"nix-build", "--no-out-link", w.File, "-A", "toplevel"}
	if res, err = r.nixBuild(ctx, nil, build...); err != nil {
		return nil, res, err
	}
	r.end("%d derivations built, %d sources downloaded", res.built, inet.requests())
	if err := r.hello(ctx, nil, res.out, world.Greeting("", "")); err != nil {
		return nil, res, err
	}

	steps := []struct {
		title string
		args  []string
		size  string // a directory whose size the step reports
	}{
		{"make a signing key", []string{"keygen", "--name", "demo-1", "--secret-key", f.secret, "--public-key", f.public}, ""},
		{"pack everything the system needs to run and to be rebuilt", []string{"pack", "--file", w.File, "--attr", "toplevel", "--secret-key", f.secret, "--out", f.bundle}, f.bundle},
		{"verify the bundle against the public key", []string{"verify", f.bundle, "--public-key", f.public}, ""},
	}
	for _, s := range steps {
		r.begin("%s", s.title)
		if err := r.airgap(ctx, nil, s.args...); err != nil {
			return nil, res, err
		}
		detail := ""
		if s.size != "" {
			detail = dirSize(s.size)
		}
		r.end("%s", detail)
	}
	return build, res, nil
}

// cross stops the internet's last use and wipes the store, then puts the
// offline steps in a loopback-only network namespace where it can.
func (r *run) cross(ctx context.Context, storeDir storepath.Dir, out string) error {
	r.begin("cross the airgap: stop the internet and wipe the store")
	if _, err := r.output(ctx, "nix-collect-garbage"); err != nil {
		return err
	}
	top, err := storeDir.Parse(out)
	if err != nil {
		return fmt.Errorf("%w: nix-build printed %q: %w", ErrStep, out, err)
	}
	if valid, err := r.nix.IsValid(ctx, top); err != nil || valid {
		return fmt.Errorf("%w: %s is still in the store after garbage collection (%v)", ErrStep, out, err)
	}
	r.end("the system is gone")

	if r.NoIsolation {
		return nil
	}
	ns, err := netns.New(ctx)
	switch {
	case errors.Is(err, netns.ErrUnavailable):
		fmt.Fprintf(r.out, "    note: no network namespace here (%v);\n    the offline steps run without isolation, the internet merely stopped.\n", err)
		return nil
	case err != nil:
		return err
	}
	r.ns = ns
	fmt.Fprintf(r.out, "    the offline steps run in a network namespace with only loopback: no way out.\n")
	return nil
}

// offline imports and serves the bundle, then rebuilds the system, and a
// changed one, from it alone.
func (r *run) offline(ctx context.Context, f demoFiles, build []string, res buildResult) error {
	r.begin("import the bundle into the site cache")
	if err := r.airgap(ctx, nil, "import", f.bundle, "--cache", f.cache, "--public-key", f.public); err != nil {
		return err
	}
	r.end("")

	r.begin("serve the cache")
	url, stop, err := r.serve(ctx, f.cache, f.secret)
	if err != nil {
		return err
	}
	defer stop()
	r.end("%s", url)

	conf, err := r.outputAirgap(ctx, "client-config", "--url", url, "--public-key", f.public)
	if err != nil {
		return err
	}
	fmt.Fprintf(r.out, "    clients put this in nix.conf (nix-airgap client-config):\n%s", indent(conf, "      "))
	pub, err := os.ReadFile(f.public)
	if err != nil {
		return err
	}
	client := []string{"--option", "substituters", url, "--option", "trusted-public-keys", strings.TrimSpace(string(pub))}

	r.begin("offline: build the same system with stock nix-build")
	again, err := r.nixBuild(ctx, r.ns, append(build, client...)...)
	if err != nil {
		return err
	}
	if again.built != 0 || again.out != res.out {
		return fmt.Errorf("%w: offline build built %d derivations into %s; want 0, substituted as %s", ErrStep, again.built, again.out, res.out)
	}
	r.end("%d paths substituted, nothing built", again.fetched)
	if err := r.hello(ctx, r.ns, again.out, world.Greeting("", "")); err != nil {
		return err
	}

	r.begin("offline: change a library deep in the graph and rebuild")
	changed, err := r.nixBuild(ctx, r.ns, append(append(build, world.Args("", "patched")...), client...)...)
	if err != nil {
		return err
	}
	r.end("%d derivations rebuilt from the bundled sources and compiler", changed.built)
	return r.hello(ctx, r.ns, changed.out, world.Greeting("", "patched"))
}

// begin starts a numbered step.
func (r *run) begin(format string, args ...any) {
	r.step++
	r.started = time.Now()
	fmt.Fprintf(r.out, "%2d. %s\n", r.step, fmt.Sprintf(format, args...))
}

// end closes a step with its outcome and timing.
func (r *run) end(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if msg != "" {
		msg += ", "
	}
	fmt.Fprintf(r.out, "    ✓ %sin %s\n", msg, since(r.started))
}

func since(t time.Time) string {
	return time.Since(t).Round(10 * time.Millisecond).String()
}

// command makes a command with the isolated Nix's environment, inside ns
// when it is not nil.
func (r *run) command(ctx context.Context, ns *netns.NS, prog string, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if ns != nil {
		cmd = ns.Command(ctx, prog, args...)
	} else {
		cmd = exec.CommandContext(ctx, prog, args...)
	}
	cmd.Env = r.env
	return cmd
}

// exec runs a command, showing it as a user would type it, and returns
// its stdout and stderr; a failure carries the stderr.
func (r *run) exec(ctx context.Context, ns *netns.NS, show bool, prog string, args ...string) (stdout, stderr string, err error) {
	if show {
		name := filepath.Base(prog)
		if prog == r.Exe {
			name = "nix-airgap"
		}
		fmt.Fprintf(r.out, "    $ %s\n", shellQuote(append([]string{name}, args...)))
	}
	cmd := r.command(ctx, ns, prog, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	r.Log.Debug("run", "cmd", cmd.Args)
	if err := cmd.Run(); err != nil {
		return o.String(), e.String(), fmt.Errorf("%s %s: %w\n%s", filepath.Base(prog), strings.Join(args, " "), err, tail(e.String(), 30))
	}
	return o.String(), e.String(), nil
}

func (r *run) output(ctx context.Context, prog string, args ...string) (string, error) {
	out, _, err := r.exec(ctx, nil, false, prog, args...)
	return out, err
}

// airgap runs a nix-airgap command and shows what it printed.
func (r *run) airgap(ctx context.Context, ns *netns.NS, args ...string) error {
	out, _, err := r.exec(ctx, ns, true, r.Exe, args...)
	if err == nil && strings.TrimSpace(out) != "" {
		fmt.Fprint(r.out, indent(out, "      "))
	}
	return err
}

func (r *run) outputAirgap(ctx context.Context, args ...string) (string, error) {
	out, _, err := r.exec(ctx, nil, false, r.Exe, args...)
	return out, err
}

// buildResult is what one nix-build did.
type buildResult struct {
	out            string
	built, fetched int
}

var (
	builtRE   = regexp.MustCompile(`(?m)^these (\d+) derivations will be built|^this derivation will be built`)
	fetchedRE = regexp.MustCompile(`(?m)^these (\d+) paths will be fetched|^this path will be fetched`)
)

// nixBuild runs nix-build and counts what it built and fetched from
// Nix's own announcements.
func (r *run) nixBuild(ctx context.Context, ns *netns.NS, args ...string) (buildResult, error) {
	stdout, stderr, err := r.exec(ctx, ns, true, args[0], args[1:]...)
	if err != nil {
		return buildResult{}, err
	}
	return buildResult{
		out:     strings.TrimSpace(stdout),
		built:   count(builtRE, stderr),
		fetched: count(fetchedRE, stderr),
	}, nil
}

func count(re *regexp.Regexp, s string) int {
	m := re.FindStringSubmatch(s)
	switch {
	case m == nil:
		return 0
	case m[1] == "":
		return 1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// hello runs the system's bin/hello and checks what it says.
func (r *run) hello(ctx context.Context, ns *netns.NS, out, want string) error {
	got, _, err := r.exec(ctx, ns, false, filepath.Join(out, "bin", "hello"))
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%w: %s/bin/hello printed %q, want %q", ErrStep, out, got, want)
	}
	fmt.Fprintf(r.out, "    $ %s/bin/hello\n%s", out, indent(got, "      "))
	return nil
}

// serve starts nix-airgap serve on the cache, in the namespace if there
// is one, and waits until it answers.
func (r *run) serve(ctx context.Context, cacheDir, secret string) (url string, stop func(), err error) {
	addr := "127.0.0.1:8080"
	if r.ns == nil {
		if addr, err = freeAddr(); err != nil {
			return "", nil, err
		}
	}
	args := []string{"serve", cacheDir, "--listen", addr, "--secret-key", secret}
	fmt.Fprintf(r.out, "    $ %s\n", shellQuote(append([]string{"nix-airgap"}, args...)))
	cmd := r.command(ctx, r.ns, r.Exe, args...)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start serve: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stop = func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	url = "http://" + addr
	deadline := time.Now().Add(10 * time.Second)
	for {
		// Probe from where the clients are: inside the namespace.
		_, _, err := r.exec(ctx, r.ns, false, netns.Busybox, "wget", "-q", "-O", "/dev/null", url+"/healthz")
		if err == nil {
			return url, stop, nil
		}
		select {
		case err := <-done:
			return "", nil, fmt.Errorf("serve exited: %v\n%s", err, tail(logs.String(), 30))
		default:
		}
		if time.Now().After(deadline) {
			stop()
			return "", nil, fmt.Errorf("serve did not answer on %s within 10s:\n%s", url, tail(logs.String(), 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// internet is the demo's stand-in for the download sites the world's
// sources come from.
type internet struct {
	URL   string
	files map[string][]byte
	srv   *http.Server
	gets  atomic.Int64
}

func startInternet() (*internet, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("start the internet: %w", err)
	}
	inet := &internet{URL: "http://" + ln.Addr().String()}
	inet.srv = &http.Server{Handler: http.HandlerFunc(inet.serve), ReadHeaderTimeout: 10 * time.Second}
	go inet.srv.Serve(ln)
	return inet, nil
}

func (inet *internet) serve(w http.ResponseWriter, req *http.Request) {
	data, ok := inet.files[strings.TrimPrefix(req.URL.Path, "/")]
	if !ok || (req.Method != http.MethodGet && req.Method != http.MethodHead) {
		http.NotFound(w, req)
		return
	}
	inet.gets.Add(1)
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.Write(data)
}

func (inet *internet) requests() int64 { return inet.gets.Load() }

func (inet *internet) Close() { inet.srv.Close() }

func dirSize(dir string) string {
	var n int64
	var files int
	filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
				files++
			}
		}
		return nil
	})
	return fmt.Sprintf("%s, %s", progress.Plural(files, "file"), progress.IEC(uint64(n)))
}

func indent(s, prefix string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(s, "\n") {
		if line != "" {
			b.WriteString(prefix + line)
		}
	}
	if !strings.HasSuffix(b.String(), "\n") {
		b.WriteString("\n")
	}
	return b.String()
}

func tail(s string, lines int) string {
	all := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

func shellQuote(args []string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.IndexFunc(a, func(c rune) bool {
			return !(c == '/' || c == '-' || c == '.' || c == '_' || c == ':' || c == '=' || c == ',' || c == '+' ||
				'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9')
		}) < 0 {
			quoted[i] = a
		} else {
			quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(quoted, " ")
}
