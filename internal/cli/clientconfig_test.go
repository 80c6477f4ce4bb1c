package cli_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/cli"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
)

// Fixed keys, so the golden files are stable.
const (
	siteKey   = "site.example-1:Y2+N0Nw4RmGPB1w8vqy0cSBEvJbq3lsYpIS4tvbSvxU="
	bundleKey = "bundle.example-1:pc25KtpoI5n2ftChz8jXDXC3l0pMejgxQmHl6QNJ5SY="
)

func TestClientConfigGolden(t *testing.T) {
	// No nix to ask whether flakes are on: flake-registry comes with its
	// comment, whatever this machine's Nix says.
	t.Setenv("PATH", t.TempDir())
	dir := t.TempDir()
	site, bun := filepath.Join(dir, "site.pub"), filepath.Join(dir, "bundle.pub")
	writeTestFile(t, site, siteKey)
	writeTestFile(t, bun, bundleKey+"\n")
	auth, bearer := filepath.Join(dir, "auth"), filepath.Join(dir, "bearer")
	writeTestFile(t, auth, "# serve's auth file\nbasic bob:secret-2\nbasic alice:secret-1\nbearer secret-token\n")
	writeTestFile(t, bearer, "bearer secret-token\n")
	tests := []struct {
		golden string
		args   []string
	}{
		{"nixconf", []string{"--url", "http://cache.airgap:8080", "--public-key", site}},
		{"nixconf-two-keys", []string{"--url", "https://cache.airgap/nix/", "--public-key", site, "--public-key", bun}},
		{"nixconf-no-key", []string{"--url", "http://10.0.0.1:8080"}},
		{"nixos", []string{"--url", "http://cache.airgap:8080", "--public-key", site, "--nixos"}},
		{"nixos-two-keys", []string{"--nixos", "--url", "https://cache.airgap/nix/", "--public-key", site, "--public-key", bun}},
		{"nixconf-channels", []string{"--url", "http://cache.airgap:8080", "--public-key", site, "--channel", "nixpkgs", "--channel", "nixos-26.05"}},
		{"nixos-channels", []string{"--nixos", "--url", "http://cache.airgap:8080", "--public-key", site, "--channel", "nixpkgs"}},
		// No port: NIX_PATH, and so nix.nixPath, can name the server.
		{"nixconf-channels-no-port", []string{"--url", "https://cache.airgap/nix/", "--public-key", site, "--channel", "nixpkgs", "--channel", "nixos-26.05"}},
		{"nixos-channels-no-port", []string{"--nixos", "--url", "http://cache.airgap", "--public-key", site, "--channel", "nixpkgs"}},
		{"nixconf-2.34", []string{"--url", "http://cache.airgap:8080", "--public-key", site, "--nix-version", "2.34"}},
		{"nixconf-2.26-auth", []string{"--url", "https://cache.airgap:8443", "--public-key", site, "--nix-version", "2.26.3", "--auth-file", auth}},
		{"nixconf-bearer-only", []string{"--url", "https://cache.airgap:8443", "--public-key", site, "--auth-file", bearer}},
		{"nixos-2.34-auth", []string{"--nixos", "--url", "https://cache.airgap:8443", "--public-key", site, "--nix-version", "2.34.8", "--auth-file", auth}},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			code, stdout, stderr := run(t, append([]string{"client-config"}, tt.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if noKey := !slices.Contains(tt.args, "--public-key"); noKey != strings.HasPrefix(stderr, "warning: no --public-key: the clients will trust no key") {
				t.Errorf("stderr %q; want a warning only when no --public-key is given", stderr)
			}
			golden := filepath.Join("testdata", "client-config", tt.golden+".golden")
			if os.Getenv("UPDATE_GOLDEN") != "" {
				writeTestFile(t, golden, stdout)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(want), stdout); diff != "" {
				t.Errorf("output differs from %s (-want +got); UPDATE_GOLDEN=1 rewrites it:\n%s", golden, diff)
			}
			if strings.Contains(stdout, "secret") {
				t.Errorf("output shows a secret of the auth file:\n%s", stdout)
			}
			// An update of the golden files must not take in an empty paragraph.
			if strings.Contains(stdout, "\n#\n#\n") || strings.Contains(stdout, "\n\n\n") {
				t.Errorf("output has two blank lines in a row:\n%s", stdout)
			}
		})
	}
}

func TestClientConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pub")
	writeTestFile(t, bad, "not a key")
	tests := []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{}, cli.ExitUsage, "--url is required"},
		{[]string{"--url", "ftp://x"}, cli.ExitUsage, "ftp://x"},
		{[]string{"--url", "cache.airgap:8080"}, cli.ExitUsage, "want http"},
		{[]string{"--url", "http://x/${builtins.abort}"}, cli.ExitUsage, "must not contain"},
		{[]string{"--url", "http://x", "--public-key", filepath.Join(dir, "missing.pub")}, cli.ExitUsage, "missing.pub"},
		{[]string{"--url", "http://x", "--public-key", bad}, cli.ExitUsage, "bad.pub"},
		{[]string{"--url", "http://x", "--nix-version", "two"}, cli.ExitUsage, "--nix-version"},
		{[]string{"--url", "http://x", "--nix-version", "nix (Nix) 2.34"}, cli.ExitUsage, "--nix-version"},
		{[]string{"--url", "http://x", "--nix-version", "garbage"}, cli.ExitUsage, `--nix-version "garbage": want MAJOR.MINOR of Nix 2.8 or later, such as 2.34`},
		{[]string{"--url", "http://x", "--nix-version", "2.8garbage"}, cli.ExitUsage, `--nix-version "2.8garbage": want MAJOR.MINOR of Nix 2.8 or later, such as 2.34`},
		{[]string{"--url", "http://x", "--nix-version", "2.7pre20220101_0a1b2c3"}, cli.ExitUsage, `Nix 2.7pre20220101_0a1b2c3 is not supported`},
		{[]string{"--url", "http://x", "--nix-version", "2.34."}, cli.ExitUsage, `--nix-version "2.34.": want MAJOR.MINOR of Nix 2.8 or later, such as 2.34`},
		{[]string{"--url", "http://x", "--nix-version", "2.34.1.2"}, cli.ExitUsage, `--nix-version "2.34.1.2": want MAJOR.MINOR of Nix 2.8 or later, such as 2.34`},
		{[]string{"--url", "http://x", "--nix-version", "99999999999999999999.1"}, cli.ExitUsage, `--nix-version "99999999999999999999.1": want MAJOR.MINOR of Nix 2.8 or later, such as 2.34`},
		{[]string{"--url", "http://x", "--nix-version", "0.5"}, cli.ExitUsage, `--nix-version "0.5": Nix 0.5 is not supported: want 2.8 or later`},
		{[]string{"--url", "http://x", "--nix-version", "1.11"}, cli.ExitUsage, `--nix-version "1.11": Nix 1.11 is not supported: want 2.8 or later`},
		{[]string{"--url", "http://x", "--nix-version", "2.0"}, cli.ExitUsage, `--nix-version "2.0": Nix 2.0 is not supported: want 2.8 or later`},
		{[]string{"--url", "http://x", "--nix-version", "2.7"}, cli.ExitUsage, `--nix-version "2.7": Nix 2.7 is not supported: want 2.8 or later`},
		{[]string{"--url", "http://x", "--nix-version", "2.7.99"}, cli.ExitUsage, `--nix-version "2.7.99": Nix 2.7.99 is not supported: want 2.8 or later`},
		{[]string{"--url", "http://x", "--auth-file", filepath.Join(dir, "missing")}, cli.ExitUsage, "missing: no such file"},
		{[]string{"--url", "http://x", "--auth-file", bad}, cli.ExitUsage, "--auth-file " + bad + ": line 1"},
	}
	for _, tt := range tests {
		code, stdout, stderr := run(t, append([]string{"client-config"}, tt.args...)...)
		if code != tt.code || !strings.Contains(stderr, tt.stderr) {
			t.Errorf("client-config %q: exit %d, stderr %q; want %d and %q", tt.args, code, stderr, tt.code, tt.stderr)
		}
		if stdout != "" {
			t.Errorf("client-config %q printed a config despite the error:\n%s", tt.args, stdout)
		}
	}
}

// A pre-release's version, as nix --version prints it, is its release's.
func TestClientConfigPreRelease(t *testing.T) {
	args := []string{"client-config", "--url", "http://cache.airgap:8080", "--nix-version"}
	_, want, _ := run(t, append(args, "2.34")...)
	for _, v := range []string{"2.34pre20251010", "2.34.0pre20251010_0a1b2c3"} {
		code, got, stderr := run(t, append(args, v)...)
		if code != 0 {
			t.Fatalf("--nix-version %s: exit %d: %s", v, code, stderr)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("--nix-version %s differs from 2.34 (-2.34 +%s):\n%s", v, v, diff)
		}
	}
}

func writeTestFile(t *testing.T, name, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestClientConfigNix checks, with the Nix on PATH (every version of the
// matrix), that Nix knows every setting client-config writes, for any
// version and for its own, with not a warning, and reads back the values;
// that the settings of a newer version do make an older Nix warn; that
// what its notes say of substitute where Nix sees no network but loopback
// holds; and that the NixOS module parses.
func TestClientConfigNix(t *testing.T) {
	nixtest.Require(t)
	v, err := nixtest.Version()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	site, auth := filepath.Join(dir, "site.pub"), filepath.Join(dir, "auth")
	writeTestFile(t, site, siteKey)
	writeTestFile(t, auth, "basic alice:pw-1\n")
	own := fmt.Sprintf("%d.%d", v.Major, v.Minor)
	base := []string{"client-config", "--url", "http://cache.airgap:8080", "--public-key", site, "--auth-file", auth, "--flake-registry"}
	want := []string{
		"substituters = http://cache.airgap:8080\n",
		"trusted-public-keys = " + siteKey + "\n",
		"hashed-mirrors = http://cache.airgap:8080/\n",
		"flake-registry = http://cache.airgap:8080/flake-registry.json\n",
		"narinfo-cache-negative-ttl = 0\n",
		"narinfo-cache-positive-ttl = 3600\n",
		"substitute = true\n",
		"connect-timeout = 15\n",
		"netrc-file = /etc/nix/netrc\n",
	}
	ownWant := want
	if v.AtLeast(2, 34) {
		ownWant = append(slices.Clone(want), "narinfo-cache-meta-ttl = 3600\n")
	}
	for _, c := range []struct {
		name string
		args []string
		want []string
	}{
		{"for any version", base, want},
		{"for " + own, append(slices.Clone(base), "--nix-version", own), ownWant},
	} {
		code, conf, stderr := run(t, c.args...)
		if code != 0 {
			t.Fatalf("client-config: exit %d: %s", code, stderr)
		}
		out, warnings := nixConfig(t, conf, nil)
		if warnings != "" {
			t.Errorf("%s: Nix %s warns about the configuration:\n%s", c.name, own, warnings)
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: Nix's configuration lacks %q", c.name, w)
			}
		}
	}
	if !v.AtLeast(2, 34) {
		// What client-config leaves out for older Nix, it must.
		_, conf, _ := run(t, append(slices.Clone(base), "--nix-version", "2.34")...)
		if _, warnings := nixConfig(t, conf, nil); !strings.Contains(warnings, "narinfo-cache-meta-ttl") {
			t.Errorf("Nix %s took the 2.34 settings without a warning: %q", own, warnings)
		}
	}

	// Where the new CLI sees no network but loopback (a one-machine
	// airgap, a container), it turns substitution off unless the user
	// set substitute, as client-config's notes say: the system's nix.conf
	// does not count, a user's nix.conf and NIX_CONFIG do.
	ns := nixtest.NewNetNS(t)
	_, conf, _ := run(t, base...)
	userConf := filepath.Join(dir, "user-nix.conf")
	writeTestFile(t, userConf, conf)
	for _, c := range []struct {
		how, conf string
		env       []string
		want      string
	}{
		{"nothing set", "", nil, "false"},
		{"client-config's settings in the system's nix.conf", conf, nil, "false"},
		{"client-config's settings in the user's nix.conf", "", []string{"NIX_USER_CONF_FILES=" + userConf}, "true"},
		{"NIX_CONFIG", "", []string{"NIX_CONFIG=substitute = true"}, "true"},
	} {
		if out, _ := nixConfig(t, c.conf, ns, c.env...); nixSetting(out, "substitute") != c.want {
			t.Errorf("Nix %s, loopback only, %s: substitute = %q, want %s", own, c.how, nixSetting(out, "substitute"), c.want)
		}
	}

	n := nixtest.New(t, nixtest.Options{})
	_, module, _ := run(t, "client-config", "--nixos", "--url", "http://cache.airgap:8080", "--public-key", site, "--nix-version", "2.34", "--auth-file", auth)
	file := filepath.Join(dir, "module.nix")
	writeTestFile(t, file, module)
	got := n.Run(t, "nix-instantiate", "--eval", "--strict", "--json", "-E",
		"let m = import "+file+"; in [ m.nix.settings.substituters m.nix.settings.connect-timeout m.nix.settings.narinfo-cache-meta-ttl m.nix.settings.netrc-file m.systemd.services.nix-daemon.environment.NIX_HASHED_MIRRORS ]")
	if want := `[["http://cache.airgap:8080"],15,3600,"/etc/nix/netrc","http://cache.airgap:8080/"]`; got != want {
		t.Errorf("NixOS module evaluates to %s, want %s", got, want)
	}
}

// nixConfig runs a hermetic Nix with conf appended to its nix.conf, in ns
// unless it is nil, with env added to its environment, and returns its
// configuration as nix config show (show-config before 2.20) prints it,
// and the warnings it gave.
func nixConfig(t *testing.T, conf string, ns *nixtest.NetNS, env ...string) (out, warnings string) {
	t.Helper()
	n := nixtest.New(t, nixtest.Options{ExtraConf: conf})
	n.Env = append(n.Env, env...)
	if ns != nil {
		n = n.In(ns)
	}
	v, _ := nixtest.Version()
	args := []string{"show-config"}
	if v.AtLeast(2, 20) {
		args = []string{"config", "show"}
	}
	cmd := n.Command(t.Context(), "nix", args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("nix %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), strings.TrimSpace(stderr.String())
}

// nixSetting is the value of setting name in nix config show's output, or
// "" if it has none.
func nixSetting(out, name string) string {
	for line := range strings.Lines(out) {
		if v, ok := strings.CutPrefix(line, name+" = "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// TestClientConfigFlakeRegistry checks, with the Nix on PATH (every
// version of the matrix), that client-config leaves flake-registry out
// for a Nix with flakes off that would warn of it on every command, and
// that what it prints then draws no warning from nix-instantiate or
// nix-store; that with flakes on it prints it, and Nix resolves an
// indirect flake reference through the server's registry; and that
// --flake-registry forces it, which makes Nix after 2.8 warn.
func TestClientConfigFlakeRegistry(t *testing.T) {
	nixtest.Require(t)
	v, err := nixtest.Version()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeTestFile(t, filepath.Join(dir, "flake", "flake.nix"), `{ outputs = _: { greeting = "hello from the airgap"; }; }`)
	registry := `{"version":2,"flakes":[{"from":{"type":"indirect","id":"airgapped"},"to":{"type":"path","path":"` + filepath.Join(dir, "flake") + `"}}]}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/flake-registry.json" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, registry)
	}))
	t.Cleanup(srv.Close)
	line := "flake-registry = " + srv.URL + "/flake-registry.json\n"
	clientConfig := func(t *testing.T, n *nixtest.Nix, args ...string) string {
		t.Helper()
		n.Setenv(t) // the Nix on PATH client-config asks
		code, conf, stderr := run(t, append([]string{"client-config", "--url", srv.URL, "--public-key", siteKey}, args...)...)
		if code != 0 {
			t.Fatalf("client-config: exit %d: %s", code, stderr)
		}
		return conf
	}
	warnsOff := v.AtLeast(2, 9) // 2.8 takes flake-registry silently with flakes off

	t.Run("flakes off", func(t *testing.T) {
		n := flakeNix(t, false)
		conf := clientConfig(t, n)
		if got := strings.Contains(conf, line); got != !warnsOff {
			t.Errorf("Nix %s with flakes off: flake-registry printed %v, want %v:\n%s", v.Raw, got, !warnsOff, conf)
		}
		if warnsOff && !strings.Contains(conf, "# flake-registry is left out: the Nix on PATH ("+v.Raw+") has flakes off") {
			t.Errorf("no comment says why flake-registry is left out:\n%s", conf)
		}
		appendNixConf(t, n, conf)
		for _, args := range [][]string{{"nix-instantiate", "--eval", "--expr", "1"}, {"nix-store", "--dump-db"}} {
			if warnings := nixStderr(t, n, args...); warnings != "" {
				t.Errorf("Nix %s with flakes off warns of client-config's settings: %s: %s", v.Raw, strings.Join(args, " "), warnings)
			}
		}
		forced := flakeNix(t, false)
		conf = clientConfig(t, forced, "--flake-registry")
		if !strings.Contains(conf, line) {
			t.Fatalf("--flake-registry: no flake-registry:\n%s", conf)
		}
		appendNixConf(t, forced, conf)
		warnings := nixStderr(t, forced, "nix-instantiate", "--eval", "--expr", "1")
		if warnsOff != strings.Contains(warnings, "flake-registry") {
			t.Errorf("Nix %s with flakes off and flake-registry: warnings %q; want one of flake-registry: %v", v.Raw, warnings, warnsOff)
		}
	})
	t.Run("flakes on", func(t *testing.T) {
		n := flakeNix(t, true)
		conf := clientConfig(t, n)
		if !strings.Contains(conf, "\n"+line) || strings.Contains(conf, "# flake-registry") {
			t.Fatalf("Nix %s with flakes on: want flake-registry with no comment:\n%s", v.Raw, conf)
		}
		if off := clientConfig(t, n, "--flake-registry=false"); strings.Contains(off, line) {
			t.Errorf("--flake-registry=false: flake-registry printed:\n%s", off)
		}
		appendNixConf(t, n, conf)
		got, err := n.Output(t.Context(), "nix", "eval", "--raw", "airgapped#greeting")
		if err != nil || got != "hello from the airgap" {
			t.Errorf("nix eval airgapped#greeting through the server's registry: %q, %v", got, err)
		}
	})
	t.Run("no nix", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		code, conf, stderr := run(t, "client-config", "--url", srv.URL, "--public-key", siteKey, "--nix-version", "2.34")
		if code != 0 || !strings.Contains(conf, "# flake-registry: flake users need it offline.") || !strings.Contains(conf, line) {
			t.Errorf("no Nix to ask: exit %d, %s; want flake-registry with its comment:\n%s", code, stderr, conf)
		}
	})
}

// flakeNix is a hermetic Nix with flakes on or off, and no flake-registry.
func flakeNix(t *testing.T, flakes bool) *nixtest.Nix {
	t.Helper()
	n := nixtest.New(t, nixtest.Options{})
	file := filepath.Join(n.Root, "etc", "nix.conf")
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var conf strings.Builder
	for line := range strings.Lines(string(data)) {
		if !strings.HasPrefix(line, "experimental-features ") && !strings.HasPrefix(line, "flake-registry ") {
			conf.WriteString(line)
		}
	}
	if flakes {
		conf.WriteString("experimental-features = nix-command flakes\n")
	}
	writeTestFile(t, file, conf.String())
	return n
}

// appendNixConf appends conf to n's nix.conf.
func appendNixConf(t *testing.T, n *nixtest.Nix, conf string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(n.Root, "etc", "nix.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(conf); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// nixStderr runs a nix program that must succeed and returns its stderr.
func nixStderr(t *testing.T, n *nixtest.Nix, args ...string) string {
	t.Helper()
	cmd := n.Command(t.Context(), args[0], args[1:]...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(stderr.String())
}
