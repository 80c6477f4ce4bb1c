package cli_test

import (
	"os"
	"path/filepath"
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
	dir := t.TempDir()
	site, bun := filepath.Join(dir, "site.pub"), filepath.Join(dir, "bundle.pub")
	writeTestFile(t, site, siteKey)
	writeTestFile(t, bun, bundleKey+"\n")
	tests := []struct {
		golden string
		args   []string
	}{
		{"nixconf", []string{"--url", "http://cache.airgap:8080", "--public-key", site}},
		{"nixconf-two-keys", []string{"--url", "https://cache.airgap/nix/", "--public-key", site, "--public-key", bun}},
		{"nixconf-no-key", []string{"--url", "http://10.0.0.1:8080"}},
		{"nixos", []string{"--url", "http://cache.airgap:8080", "--public-key", site, "--nixos"}},
		{"nixos-two-keys", []string{"--nixos", "--url", "https://cache.airgap/nix/", "--public-key", site, "--public-key", bun}},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			code, stdout, stderr := run(t, append([]string{"client-config"}, tt.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
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
		{[]string{"--url", "http://x", "--public-key", filepath.Join(dir, "missing.pub")}, cli.ExitMissing, "missing.pub"},
		{[]string{"--url", "http://x", "--public-key", bad}, cli.ExitFailure, "bad.pub"},
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

func writeTestFile(t *testing.T, name, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestClientConfigNix checks that Nix knows every setting client-config
// writes and reads back the values, and that the NixOS module parses.
func TestClientConfigNix(t *testing.T) {
	dir := t.TempDir()
	site := filepath.Join(dir, "site.pub")
	writeTestFile(t, site, siteKey)
	code, conf, stderr := run(t, "client-config", "--url", "http://cache.airgap:8080", "--public-key", site)
	if code != 0 {
		t.Fatalf("client-config: exit %d: %s", code, stderr)
	}
	n := nixtest.New(t, nixtest.Options{ExtraConf: conf})
	cmd := n.Command(t.Context(), "nix", "show-config")
	var out, errs strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errs
	if err := cmd.Run(); err != nil {
		t.Fatalf("nix show-config: %v\n%s", err, errs.String())
	}
	if strings.Contains(errs.String(), "unknown setting") {
		t.Errorf("Nix does not know a setting:\n%s", errs.String())
	}
	for _, want := range []string{
		"substituters = http://cache.airgap:8080\n",
		"trusted-public-keys = " + siteKey + "\n",
		"hashed-mirrors = http://cache.airgap:8080/\n",
		"flake-registry = http://cache.airgap:8080/flake-registry.json\n",
		"narinfo-cache-negative-ttl = 0\n",
		"substitute = true\n",
		"connect-timeout = 5\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("nix show-config lacks %q", want)
		}
	}

	_, module, _ := run(t, "client-config", "--nixos", "--url", "http://cache.airgap:8080", "--public-key", site)
	file := filepath.Join(dir, "module.nix")
	writeTestFile(t, file, module)
	got := n.Run(t, "nix-instantiate", "--eval", "--strict", "--json", "-E",
		"let m = import "+file+"; in [ m.nix.settings.substituters m.nix.settings.connect-timeout m.systemd.services.nix-daemon.environment.NIX_HASHED_MIRRORS ]")
	if want := `[["http://cache.airgap:8080"],5,"http://cache.airgap:8080/"]`; got != want {
		t.Errorf("NixOS module evaluates to %s, want %s", got, want)
	}
}
