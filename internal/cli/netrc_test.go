package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/cli"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
)

// TestNetrc: check and plan against a real serve --auth-file on loopback
// read credentials from Nix's netrc-file or --netrc-file, as stock Nix
// reads the same file; a 401 says what to do and which file was read;
// credentials in a URL work but are printed and recorded nowhere.
func TestNetrc(t *testing.T) {
	tmp := t.TempDir()
	good, empty, wrong := filepath.Join(tmp, "netrc"), filepath.Join(tmp, "empty"), filepath.Join(tmp, "wrong")
	writeTestFile(t, good, "machine 127.0.0.1 login site password s3cret\n")
	writeTestFile(t, empty, "# no machines yet\n")
	writeTestFile(t, wrong, "machine 127.0.0.1 login site password wrongpw\n")
	n := nixtest.New(t, nixtest.Options{ExtraConf: "netrc-file = " + good + "\n"})
	w := nixtest.NewWorld(t, n, nixtest.StartInternet(t), nixtest.WorldOptions{})
	n.Setenv(t)
	top := w.Build(t)
	cacheDir := filepath.Join(tmp, "cache")
	n.Run(t, "nix", "copy", "--to", "file://"+cacheDir, top)
	auth := filepath.Join(tmp, "auth")
	writeTestFile(t, auth, "basic site:s3cret\n")
	addr, _, _ := startServe(t, "--auth-file", auth, cacheDir)
	url := "http://" + addr

	// Stock Nix takes the file: the path's narinfo through the server.
	// Its narinfo disk cache must not answer for the server.
	noDiskCache := []string{"--option", "narinfo-cache-positive-ttl", "0", "--option", "narinfo-cache-negative-ttl", "0"}
	if got := n.Run(t, "nix", append([]string{"path-info", "--store", url, "--option", "netrc-file", good, top}, noDiskCache...)...); strings.TrimSpace(got) != top {
		t.Errorf("nix path-info --store %s with the netrc = %q; want %s", url, got, top)
	}
	if out, err := n.Output(t.Context(), "nix", append([]string{"path-info", "--store", url, "--option", "netrc-file", empty, top}, noDiskCache...)...); err == nil {
		t.Errorf("nix path-info without credentials succeeded: %s", out)
	}

	for _, tt := range []struct {
		name   string
		args   []string
		code   int
		stderr []string
	}{
		{"Nix's netrc-file", []string{"--against", url}, cli.ExitOK, nil},
		{"--netrc-file", []string{"--against", url, "--netrc-file", good}, cli.ExitOK, nil},
		{"no entry", []string{"--against", url, "--netrc-file", empty}, cli.ExitFailure,
			[]string{"401 Unauthorized", "wants credentials", empty + " (--netrc-file) has none for 127.0.0.1", "machine 127.0.0.1 login NAME password PASSWORD", "--netrc-file"}},
		{"refused", []string{"--against", url, "--netrc-file", wrong}, cli.ExitFailure,
			[]string{"401 Unauthorized", "refused the credentials " + wrong + " (--netrc-file) has for 127.0.0.1"}},
		{"missing --netrc-file", []string{"--against", url, "--netrc-file", filepath.Join(tmp, "gone")}, cli.ExitUsage,
			[]string{"--netrc-file", filepath.Join(tmp, "gone")}},
		{"in the URL", []string{"--against", "http://site:s3cret@" + addr, "--netrc-file", empty}, cli.ExitOK, []string{}},
		{"in the URL, --json", []string{"--against", "http://site:s3cret@" + addr, "--netrc-file", empty, "--json"}, cli.ExitOK, []string{}},
		{"wrong in the URL", []string{"--against", "http://site:wrongpw@" + addr, "--netrc-file", good}, cli.ExitFailure,
			[]string{"401 Unauthorized", "refused the credentials in its URL"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := run(t, append([]string{"check", top}, tt.args...)...)
			if code != tt.code {
				t.Errorf("exit %d; want %d:\n%s%s", code, tt.code, stdout, stderr)
			}
			for _, s := range tt.stderr {
				if !strings.Contains(stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, stderr)
				}
			}
			if strings.Contains(stdout+stderr, "s3cret") || strings.Contains(stdout+stderr, "wrongpw") {
				t.Errorf("check printed a password:\n%s%s", stdout, stderr)
			}
		})
	}

	// plan and pack with the password in a substituter's URL: it is
	// in none of their output, nor anywhere in the bundle.
	sub := "http://site:s3cret@" + addr
	code, stdout, stderr := run(t, "plan", top, "--substituter", sub, "--netrc-file", empty, "--json", "--log-level", "debug")
	if code != cli.ExitOK || strings.Contains(stdout+stderr, "s3cret") || !strings.Contains(stdout, "site:xxxxx@"+addr) {
		t.Errorf("plan --substituter %s: exit %d; want 0, the URL redacted and no password:\n%s%s", sub, code, stdout, stderr)
	}
	out := filepath.Join(tmp, "bundle")
	code, stdout, stderr = run(t, "pack", top, "--substituter", sub, "--netrc-file", empty, "--out", out, "--json", "--log-level", "debug")
	if code != cli.ExitOK || strings.Contains(stdout+stderr, "s3cret") {
		t.Errorf("pack --substituter %s: exit %d; want 0 and no password:\n%s%s", sub, code, stdout, stderr)
	}
	err := filepath.WalkDir(out, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), "s3cret") {
			t.Errorf("bundle file %s holds the password", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
