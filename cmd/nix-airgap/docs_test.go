package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/cli"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/world"
)

// The README and docs/guide.md are tested by running their shell blocks,
// in order, as an operator would, against the test world: a site flake
// whose nixosConfigurations.gateway is the world's toplevel. A block runs
// when its fence names the machine it runs on, "```sh ROLE [STEP]":
//
//	online  the connected machine: Nix, the Internet, the site flake
//	server  the offline server, in a network namespace with no way out,
//	        without Nix
//	client  a client of it in the namespace, with a Nix of its own
//	airgap  a machine in the namespace with the online machine's Nix
//	        (the README's "inside the airgap", whose check needs Nix)
//
// Other blocks (installing packages, nixos-rebuild) are for reading only.
// STEP names a block the test acts around: it edits the site before the
// "update" block, and runs the system a "build" step built.
//
// What is site-specific is mapped to the test's own places: /etc/, /srv/,
// /usr/local/ and /var/ to a directory of each machine's, /media/usb to a
// shared one, ~/site to the site flake, the server's address to the
// namespace's loopback, a volume size to one the test's bundles fill
// several times over, and the online machine's <nixpkgs> to the world's
// nixpkgs-shaped channel. sudo runs its command as it is; a line starting
// nix-airgap serve runs in the background (stopping the one before), and
// the block goes on once it answers.

// docBlock is one shell block a test runs.
type docBlock struct {
	role, step string
	line       int
	script     string
}

// docBlocks reads the runnable shell blocks of a Markdown file.
func docBlocks(t *testing.T, name string) []docBlock {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []docBlock
	var cur *docBlock
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur == nil && strings.HasPrefix(line, "```sh "):
			f := strings.Fields(strings.TrimPrefix(line, "```sh "))
			cur = &docBlock{role: f[0], line: n}
			if len(f) > 1 {
				cur.step = f[1]
			}
			if !slices.Contains([]string{"online", "server", "client", "airgap"}, cur.role) {
				t.Fatalf("%s:%d: unknown machine %q", name, n, cur.role)
			}
		case cur != nil && line == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.script += line + "\n"
		}
	}
	return blocks
}

// site is the test's airgap: the machines the blocks run on.
type site struct {
	t                  *testing.T
	tmp, media, flake  string
	online, client     *nixtest.Nix
	ns                 *nixtest.NetNS
	shim, nonix        string
	serveLog, servePID string
	before             map[string]func()
	outputs            map[string]string // by step
	system             string
	clientStore        string // what the client sees in the store dir
}

// newSite makes the machines, the site flake and its git repository.
func newSite(t *testing.T) *site {
	s := &site{t: t, tmp: t.TempDir(), before: map[string]func(){}, outputs: map[string]string{}}
	s.online = nixtest.New(t, nixtest.Options{})
	// The client's store has the online store's directory but files of
	// its own: a directory mounted over it in each client command.
	s.client = nixtest.New(t, nixtest.Options{StoreDir: s.online.StoreDir})
	s.clientStore = s.mkdir("machines", "client", "nix-store")
	inet := nixtest.StartInternet(t)
	s.media = s.mkdir("media", "usb")
	s.flake = s.mkdir("home", "site")
	w, err := world.Generate(s.flake, inet.URL, world.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range w.Files {
		inet.Add(name, data)
	}
	s.system = s.online.Run(t, "nix", "eval", "--impure", "--raw", "--expr", "builtins.currentSystem")
	s.writeFlake("")
	s.git("init", "-q")
	s.git("add", ".")
	s.git("commit", "-q", "-m", "the site's systems")
	s.online.Run(t, "nix", "flake", "lock", s.flake)
	s.git("add", ".")
	s.git("commit", "-q", "--allow-empty", "-m", "lock")
	s.ns = nixtest.NewNetNS(t)
	// A site LAN inside the airgap: an interface with an address but no
	// route out (a veth pair whose both ends are in the namespace). With
	// loopback alone, Nix decides it is offline and stops substituting,
	// which no machine on a real LAN sees.
	for _, args := range [][]string{
		{"link", "add", "lan0", "type", "veth", "peer", "name", "lan1"},
		{"addr", "add", "10.77.0.1/24", "dev", "lan0"},
		{"link", "set", "lan0", "up"},
		{"link", "set", "lan1", "up"},
	} {
		if out, err := s.ns.Command(t.Context(), "ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s in the airgap: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	s.shim = s.mkdir("shim")
	s.write(filepath.Join(s.shim, "sudo"), "#!/bin/sh\nexec \"$@\"\n", 0o755)
	wrapper := "#!/bin/sh\n" + asMain + "=1 exec " + exe + " \"$@\"\n"
	for _, role := range []string{"online", "client", "airgap"} {
		s.write(filepath.Join(s.root(role), "usr", "local", "bin", "nix-airgap"), wrapper, 0o755)
	}
	s.nonix = s.mkdir("nonix")
	for _, dir := range []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), "nix") {
				os.Symlink(filepath.Join(dir, e.Name()), filepath.Join(s.nonix, e.Name()))
			}
		}
	}
	// The client's nix.conf is where the guide says it is.
	conf, err := os.ReadFile(filepath.Join(s.client.Root, "etc", "nix.conf"))
	if err != nil {
		t.Fatal(err)
	}
	s.write(filepath.Join(s.root("client"), "etc", "nix", "nix.conf"), string(conf), 0o644)
	s.serveLog, s.servePID = filepath.Join(s.tmp, "serve.log"), filepath.Join(s.tmp, "serve.pid")
	t.Cleanup(s.stopServe)
	return s
}

func (s *site) mkdir(elem ...string) string {
	d := filepath.Join(append([]string{s.tmp}, elem...)...)
	if err := os.MkdirAll(d, 0o755); err != nil {
		s.t.Fatal(err)
	}
	return d
}

func (s *site) write(name, content string, mode os.FileMode) {
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(content), mode); err != nil {
		s.t.Fatal(err)
	}
}

func (s *site) git(args ...string) {
	s.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = s.flake
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=site", "GIT_AUTHOR_EMAIL=site@example.org",
		"GIT_COMMITTER_NAME=site", "GIT_COMMITTER_EMAIL=site@example.org", "HOME="+s.tmp)
	if out, err := cmd.CombinedOutput(); err != nil {
		s.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// writeFlake writes the site flake: one system, the world's toplevel,
// with its deep library at version deep.
func (s *site) writeFlake(deep string) {
	s.write(filepath.Join(s.flake, "flake.nix"), `{
  description = "The site's systems";
  outputs = { self }: {
    nixosConfigurations.gateway.config.system.build.toplevel =
      (import ./default.nix { system = "`+s.system+`"; deep = "`+deep+`"; }).toplevel;
  };
}
`, 0o644)
}

// update changes the site's systems, as a weekly update does.
func (s *site) update() {
	s.writeFlake("patched")
	s.git("commit", "-q", "-a", "-m", "weekly update")
}

// root is a machine's directory for /etc/, /srv/, /usr/local/, /var/.
func (s *site) root(role string) string { return filepath.Join(s.tmp, "machines", role) }

var rootedPath = regexp.MustCompile(`(^|[\s'"=(])(/etc/|/srv/|/usr/local/|/var/)`)

var serveLine = regexp.MustCompile(`^\s*(sudo\s+)?nix-airgap\s+serve\s`)

// script is what runs for a block on role.
func (s *site) script(b docBlock) string {
	var out strings.Builder
	out.WriteString(`set -euo pipefail
serve_stop() {
	if [ -s "$SERVE_PID" ]; then
		pid=$(cat "$SERVE_PID")
		kill "$pid" 2>/dev/null || true
		while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
		: >"$SERVE_PID"
	fi
}
serve_wait() {
	for i in $(seq 200); do
		/bin/busybox wget -q -O /dev/null "$1" 2>/dev/null && return 0
		kill -0 "$(cat "$SERVE_PID")" 2>/dev/null || break
		sleep 0.05
	done
	echo "nix-airgap serve does not answer on $1:" >&2
	cat "$SERVE_LOG" >&2
	return 1
}
`)
	r := strings.NewReplacer(
		"/media/usb", s.media,
		"~/site", s.flake,
		"http://cache.site:8080", "http://127.0.0.1:8080",
		"0.0.0.0:8080", "127.0.0.1:8080",
		// Media scaled down to the test site's bundles, so that they
		// take several volumes.
		"--volume-size 25GB", "--volume-size 64KiB",
	)
	root := s.root(b.role)
	for _, line := range strings.SplitAfter(b.script, "\n") {
		line = rootedPath.ReplaceAllString(r.Replace(line), "${1}"+root+"${2}")
		if serveLine.MatchString(line) {
			line = "serve_stop\n" + strings.TrimSpace(line) + " >>\"$SERVE_LOG\" 2>&1 &\n" +
				"echo $! >\"$SERVE_PID\"\nserve_wait http://127.0.0.1:8080/healthz\n"
		}
		out.WriteString(line)
	}
	return out.String()
}

// run runs a block on its machine and returns what it printed.
func (s *site) run(ctx context.Context, b docBlock) (string, error) {
	root := s.root(b.role)
	for _, d := range []string{"etc", "srv", "usr/local/bin", "var"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	path := filepath.Join(root, "usr", "local", "bin") + ":" + s.shim + ":"
	var env []string
	switch b.role {
	case "online", "airgap":
		env = setEnv(s.online.Env, "PATH", path+os.Getenv("PATH"))
		// The connected machine's <nixpkgs> is the site's channel.
		env = setEnv(env, "NIX_PATH", "nixpkgs="+filepath.Join(s.flake, "channel"))
	case "client":
		env = setEnv(s.client.Env, "PATH", path+os.Getenv("PATH"))
		env = setEnv(env, "NIX_CONF_DIR", filepath.Join(root, "etc", "nix"))
		// No NIX_PATH, as a user's: <nixpkgs> is then found in the
		// channels nix-channel installs (an empty one finds nothing).
		env = slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "NIX_PATH=") })
	case "server":
		home := s.mkdir("machines", "server", "root")
		env = []string{"PATH=" + path + s.nonix, "HOME=" + home, "TMPDIR=" + s.mkdir("machines", "server", "tmp"), "LANG=C.UTF-8"}
	}
	env = append(env, "SERVE_LOG="+s.serveLog, "SERVE_PID="+s.servePID)
	var cmd *exec.Cmd
	switch b.role {
	case "online":
		cmd = exec.CommandContext(ctx, "bash", "-c", s.script(b))
	case "client":
		cmd = s.clientCommand(ctx, "bash", "-c", s.script(b))
	default:
		cmd = s.ns.Command(ctx, "bash", "-c", s.script(b))
	}
	cmd.Env, cmd.Dir = env, s.flake
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// clientCommand runs a command on the client: in the airgap, seeing its
// own store.
func (s *site) clientCommand(ctx context.Context, prog string, args ...string) *exec.Cmd {
	return s.ns.Command(ctx, "unshare", append([]string{"--mount", "--propagation", "private", "--",
		"sh", "-c", `mount --bind "$0" "$1" && shift && exec "$@"`, s.clientStore, string(s.online.StoreDir), prog}, args...)...)
}

// stopServe stops the server the blocks left running.
func (s *site) stopServe() {
	data, _ := os.ReadFile(s.servePID)
	var pid int
	if _, err := fmt.Sscan(string(data), &pid); err == nil && pid > 0 {
		if p, err := os.FindProcess(pid); err == nil {
			p.Kill()
		}
	}
}

func setEnv(env []string, key, value string) []string {
	out := slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, key+"=") })
	return append(out, key+"="+value)
}

// runDoc runs every runnable block of the Markdown file name in order,
// failing t at the first that fails.
func (s *site) runDoc(name string) {
	t := s.t
	blocks := docBlocks(t, name)
	if len(blocks) == 0 {
		t.Fatalf("%s has no block to run", name)
	}
	for _, b := range blocks {
		if f := s.before[b.step]; f != nil {
			delete(s.before, b.step) // before the first block of the step
			f()
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
		out, err := s.run(ctx, b)
		cancel()
		t.Logf("%s:%d (%s %s):\n%s", name, b.line, b.role, b.step, out)
		if err != nil {
			t.Fatalf("%s:%d, on the %s machine: %v\n%s\n%s", name, b.line, b.role, err, b.script, out)
		}
		if b.step != "" {
			s.outputs[b.step] += out
		}
	}
}

// hello runs the system the last client build made, ~/site/result.
func (s *site) hello() string {
	s.t.Helper()
	out, err := s.clientCommand(s.t.Context(), filepath.Join(s.flake, "result", "bin", "hello")).Output()
	if err != nil {
		s.t.Fatalf("the built system's hello: %v", err)
	}
	return string(out)
}

// TestGuide runs docs/guide.md: the life of an airgap, from the first
// bundle to the weekly update and key rotation.
func TestGuide(t *testing.T) {
	s := newSite(t)
	s.before["update"] = s.update
	s.before["update-client"] = func() {
		if got, want := s.hello(), world.Greeting("", ""); got != want {
			t.Errorf("the first offline build says %q, want %q", got, want)
		}
	}
	s.runDoc("../../docs/guide.md")
	if got, want := s.hello(), world.Greeting("", "patched"); got != want {
		t.Errorf("after the weekly update the system says %q, want %q", got, want)
	}
	// The gc of the last section keeps the system the clients run.
	system, err := os.Readlink(filepath.Join(s.flake, "result"))
	if err != nil {
		t.Fatal(err)
	}
	hash, _, _ := strings.Cut(filepath.Base(system), "-")
	if _, err := os.Stat(filepath.Join(s.root("server"), "srv", "nix-cache", hash+".narinfo")); err != nil {
		t.Errorf("after the guide's gc, the cache lacks the clients' system %s: %v", system, err)
	}
	// The channel's hello, run on the client, substituted: nothing built.
	if out := s.outputs["channel"]; !strings.Contains(out, "Hello, world! (libbase 1.0)") || strings.Contains(out, "will be built") {
		t.Errorf("the client's nix-build '<nixpkgs>' -A hello: want its greeting, substituted, in\n%s", out)
	}
	// Several volumes, the verify of each saying how much of the paths
	// it checked, the import of all but the last naming what is missing
	// and how many paths wait for it.
	if out := s.outputs["volumes"]; strings.Count(out, "/site.0") < 3 || !strings.Contains(out, "still missing") || !strings.Contains(out, "volume set complete") ||
		!strings.Contains(out, " store paths whole") || !strings.Contains(out, "(the other volumes hold the rest)") ||
		!regexp.MustCompile(`: OK: \d+ of \d+ store paths complete in the cache, \d+ waits? for the other volumes, `).MatchString(out) {
		t.Errorf("the volumes step: want several volumes, how much of the paths each holds, and the volumes still missing, in\n%s", out)
	}
}

// TestREADME runs the README's commands, connected side and airgap side.
func TestREADME(t *testing.T) {
	s := newSite(t)
	s.runDoc("../../README.md")
}

// TestDocsSecretKeysStay checks that the docs never carry a secret key
// across the airgap: the packing key signs on the connected machine, and
// the server signs with a key of its own.
func TestDocsSecretKeysStay(t *testing.T) {
	secretKey := regexp.MustCompile(`--secret-key\s+(\S+)`)
	for _, name := range []string{"../../README.md", "../../docs/guide.md"} {
		online := map[string]bool{}
		var inside []string
		for _, b := range docBlocks(t, name) {
			for _, m := range secretKey.FindAllStringSubmatch(b.script, -1) {
				if b.role == "online" {
					online[m[1]] = true
				} else {
					inside = append(inside, m[1])
				}
			}
		}
		for _, k := range inside {
			if online[k] {
				t.Errorf("%s: the packing key %s signs inside the airgap too", name, k)
			}
		}
	}
}

// TestREADMECommands keeps the README's table of commands and the
// commands nix-airgap has the same, and checks that every flag the table
// names is one its command takes: in a row, `--flag …` is the row's
// command's, `COMMAND --flag` another command's, and `nix-channel --add`
// another program's.
func TestREADMECommands(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, _ := strings.Cut(string(readme), "\n## Commands\n")
	table, _, _ = strings.Cut(table, "\n\n")
	table = strings.ReplaceAll(table, `\|`, "/") // a | in a cell
	row := regexp.MustCompile("(?m)^\\| `([a-z-]+)[^|]*` \\|[^|]*\\|(.*)\\|$")
	code := regexp.MustCompile("`([^`]*)`")
	flag := regexp.MustCompile(`--[a-z][a-z0-9-]*`)
	documented := map[string]bool{}
	var flags [][2]string // command, flag
	for _, m := range row.FindAllStringSubmatch(table, -1) {
		documented[m[1]] = true
		for _, c := range code.FindAllStringSubmatch(m[2], -1) {
			words := strings.Fields(c[1])
			if len(words) == 0 {
				continue
			}
			cmd := m[1]
			if !strings.HasPrefix(words[0], "--") {
				cmd = words[0] // another command's flag, or another program's
			}
			for _, f := range flag.FindAllString(c[1], -1) {
				flags = append(flags, [2]string{cmd, f})
			}
		}
	}
	if len(documented) == 0 {
		t.Fatal("found no table of commands in the README")
	}

	help := func(args ...string) string {
		t.Helper()
		var out, stderr bytes.Buffer
		if err := cli.Run(t.Context(), args, &out, &stderr); err != nil {
			t.Fatalf("nix-airgap %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return out.String()
	}
	_, commands, _ := strings.Cut(help("--help"), "Available Commands:\n")
	commands, _, _ = strings.Cut(commands, "\n\n")
	var have []string
	for _, line := range strings.Split(commands, "\n") {
		if c := strings.Fields(line)[0]; c != "help" && c != "completion" {
			have = append(have, c)
		}
	}
	if diff := cmp.Diff(slices.Sorted(maps.Keys(documented)), have); diff != "" {
		t.Errorf("the README's commands (-) and nix-airgap's (+):\n%s", diff)
	}
	usage := map[string]string{}
	for _, cf := range flags {
		c, f := cf[0], cf[1]
		if !slices.Contains(have, c) {
			continue // not nix-airgap's
		}
		if usage[c] == "" {
			usage[c] = help(c, "--help")
		}
		if !regexp.MustCompile(`(?m)^\s+(-\w, )?` + f + `\b`).MatchString(usage[c]) {
			t.Errorf("the README says %s takes %s, which nix-airgap %s --help does not list", c, f, c)
		}
	}
}
