package cli_test

import (
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/cli"
	"github.com/nix-airgap/nix-airgap/internal/signing"
)

// TestKeyMaterialNeverPrinted gives every command that takes a key every
// wrong kind of key, as a file and as text, and checks that the command
// fails as a usage error (exit 2, whichever the command) saying what is
// wrong without printing any of the key.
func TestKeyMaterialNeverPrinted(t *testing.T) {
	dir := t.TempDir()
	sk, pk, err := signing.Generate("site-1")
	if err != nil {
		t.Fatal(err)
	}
	garbage := make([]byte, 64)
	rand.Read(garbage)
	garbageText := "site-1:" + base64.StdEncoding.EncodeToString(garbage)[:70] + "!"
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	secFile, pubFile := file("site.sec", sk.String()), file("site.pub", pk.String())
	_, skData, _ := strings.Cut(sk.String(), ":")
	_, pkData, _ := strings.Cut(pk.String(), ":")
	_, garbageData, _ := strings.Cut(garbageText, ":")
	secrets := []string{skData, pkData, garbageData, base64.StdEncoding.EncodeToString(garbage)}

	type wrong struct {
		name, arg, want string
	}
	forPublic := []wrong{
		{"secret key file", secFile, "this is a secret key, not a public key: pass the public key (the .pub file)"},
		{"secret key text", sk.String(), "this is a secret key, not a public key"},
		{"secret key's base64 alone", skData, "not shown"},
		{"file with the secret inline", file("nix.conf", "secret-key = "+sk.String()+"\n"), "invalid key"},
		{"garbage file", file("garbage", string(garbage)), "invalid key"},
		{"garbage text", garbageText, "not shown"},
		{"missing file", filepath.Join(dir, "nowhere.pub"), "nowhere.pub: no such file or directory"},
		{"a word", "garbage", "garbage: no such file or directory"},
	}
	forSecret := []wrong{
		{"public key file", pubFile, "this is a public key, not a secret key"},
		{"public key text", pk.String(), "this is a public key, not a secret key"},
		{"file with the secret inline", file("nix2.conf", "secret-key-files = "+sk.String()+"\n"), "invalid key"},
		{"garbage file", file("garbage2", string(garbage)), "invalid key"},
		{"garbage text", garbageText, "not shown"},
		{"missing file", filepath.Join(dir, "nowhere.sec"), "nowhere.sec: no such file or directory"},
		{"signature file", file("manifest.json.sig", sk.Sign([]byte("manifest")).String()), "not a secret key"},
	}
	bundleDir, cacheDir := filepath.Join(dir, "bundle"), filepath.Join(dir, "cache")
	target := []string{"--file", filepath.Join(dir, "default.nix"), "--attr", "hello"}
	type command struct {
		args   []string // KEY stands for the key
		secret bool
	}
	commands := []command{
		{[]string{"verify", bundleDir, "--public-key", "KEY"}, false},
		{[]string{"verify", bundleDir, "--trusted-public-keys", "KEY"}, false},
		{[]string{"verify", bundleDir, "--trusted-public-key", "KEY"}, false},
		{[]string{"import", bundleDir, "--cache", cacheDir, "--public-key", "KEY"}, false},
		{[]string{"import", bundleDir, "--cache", cacheDir, "--trusted-public-key", "KEY"}, false},
		{[]string{"show", bundleDir, "--public-key", "KEY"}, false},
		{[]string{"client-config", "--url", "http://cache.example:8080", "--public-key", "KEY"}, false},
		{[]string{"client-config", "--url", "http://cache.example:8080", "--trusted-public-keys", "KEY"}, false},
		{append([]string{"plan", "--public-key", "KEY"}, target...), false},
		{append([]string{"plan", "--trusted-public-key", "KEY"}, target...), false},
		{append([]string{"pack", "--out", bundleDir, "--public-key", "KEY"}, target...), false},
		{append([]string{"pack", "--out", bundleDir, "--secret-key", "KEY"}, target...), true},
		{append([]string{"pack", "--out", bundleDir, "--key", "KEY"}, target...), true},
		{[]string{"serve", cacheDir, "--listen", "127.0.0.1:0", "--secret-key", "KEY"}, true},
		{[]string{"serve", cacheDir, "--listen", "127.0.0.1:0", "--key", "KEY"}, true},
	}
	for _, c := range commands {
		wrongs := forPublic
		if c.secret {
			wrongs = forSecret
		}
		for _, w := range wrongs {
			args := make([]string, len(c.args))
			for i, a := range c.args {
				if a == "KEY" {
					a = w.arg
				}
				args[i] = a
			}
			t.Run(strings.Join(c.args[:1], "")+" "+c.args[slicesIndex(c.args, "KEY")-1]+" "+w.name, func(t *testing.T) {
				code, stdout, stderr := run(t, args...)
				out := stdout + stderr
				if code != cli.ExitUsage {
					t.Errorf("exit %d, want %d (a usage error); output:\n%s", code, cli.ExitUsage, out)
				}
				if !strings.Contains(out, "Try 'nix-airgap "+c.args[0]+" --help'") {
					t.Errorf("output does not say where to read the command's usage:\n%s", out)
				}
				if !strings.Contains(out, w.want) {
					t.Errorf("output lacks %q:\n%s", w.want, out)
				}
				// The flag the user typed, not another spelling of it.
				if flag := c.args[slicesIndex(c.args, "KEY")-1]; !strings.Contains(out, ": "+flag+" ") {
					t.Errorf("output does not name %s:\n%s", flag, out)
				}
				for _, s := range secrets {
					if sub := longSubstring(out, s, 12); sub != "" {
						t.Errorf("output holds %q, part of a key:\n%s", sub, out)
					}
				}
			})
		}
	}
}

func slicesIndex(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// longSubstring returns a substring of secret at least n long that out
// contains, or "".
func longSubstring(out, secret string, n int) string {
	for i := 0; i+n <= len(secret); i++ {
		if strings.Contains(out, secret[i:i+n]) {
			return secret[i : i+n]
		}
	}
	return ""
}

// TestKeygenMistakes: keygen given one file for both keys refuses
// before the public key overwrites the secret one; a file it cannot
// create is named once, as given, not by the temp file written first.
func TestKeygenMistakes(t *testing.T) {
	dir := t.TempDir()
	same := filepath.Join(dir, "site")
	code, _, stderr := run(t, "keygen", "--name", "site-1", "--secret-key", same, "--public-key", filepath.Join(dir, ".", "site"))
	if _, err := os.Stat(same); code != cli.ExitUsage || !strings.Contains(stderr, "the public key would overwrite the secret key") || err == nil {
		t.Errorf("keygen with one file for both keys: exit %d, stderr %q, file written: %v; want %d, refused, nothing written", code, stderr, err == nil, cli.ExitUsage)
	}
	missing := filepath.Join(dir, "no-such-dir", "site.sec")
	code, _, stderr = run(t, "keygen", "--name", "site-1", "--secret-key", missing, "--public-key", filepath.Join(dir, "site.pub"))
	if want := "nix-airgap: keygen: create " + missing + ": directory " + filepath.Dir(missing) + ": no such file or directory\n"; code != cli.ExitMissing || stderr != want {
		t.Errorf("keygen into a missing directory: exit %d, stderr %q; want %d and %q", code, stderr, cli.ExitMissing, want)
	}
}
