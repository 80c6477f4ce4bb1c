package cli_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/cli"
	"github.com/nix-airgap/nix-airgap/internal/signing"
)

// TestQuietByDefault: logs below warn only when asked for, in words for
// people or as JSON; keygen succeeds in silence, as Nix's does.
func TestQuietByDefault(t *testing.T) {
	dir := t.TempDir()
	keygen := func(name string, extra ...string) (int, string, string) {
		return run(t, append([]string{"keygen", "--name", name,
			"--secret-key", filepath.Join(dir, name+".sec"), "--public-key", filepath.Join(dir, name+".pub")}, extra...)...)
	}
	if code, stdout, stderr := keygen("a-1"); code != 0 || stdout != "" || stderr != "" {
		t.Errorf("keygen: exit %d, stdout %q, stderr %q; want silence", code, stdout, stderr)
	}
	if _, _, stderr := keygen("b-1", "--log-level", "info"); !strings.HasPrefix(stderr, "wrote a key pair") || strings.Contains(stderr, "time=") {
		t.Errorf("keygen --log-level info: stderr %q, want one line for people", stderr)
	}
	_, _, stderr := keygen("c-1", "--log-level", "info", "--log-format", "json")
	var rec struct{ Level, Msg string }
	if err := json.Unmarshal([]byte(stderr), &rec); err != nil || rec.Level != "INFO" || !strings.HasPrefix(rec.Msg, "wrote a key pair") {
		t.Errorf("keygen --log-format json: stderr %q (%v), want a JSON record", stderr, err)
	}
}

// TestProblemsOnce: a refused import names each problem once, and says
// once that it refused; a bundle signed by a key not trusted is summed up
// as such, not as unsigned.
func TestProblemsOnce(t *testing.T) {
	dir, pub := smallBundle(t)
	m, _ := filepath.Glob(filepath.Join(dir, "nar", "*"))
	data, _ := os.ReadFile(m[0])
	data[len(data)/2] ^= 1
	os.WriteFile(m[0], data, 0o644)
	name := "nar/" + filepath.Base(m[0])
	code, stdout, stderr := run(t, "import", dir, "--cache", filepath.Join(t.TempDir(), "cache"), "--public-key", pub, "--no-progress")
	out := stdout + stderr
	if code != cli.ExitCorrupt || strings.Count(out, name) != 1 || strings.Count(stderr, "nix-airgap:") != 1 || !strings.Contains(stderr, "refused, the cache is unchanged") {
		t.Errorf("import of a damaged bundle: exit %d; want %d, %s named once and one refusal:\n%s", code, cli.ExitCorrupt, name, out)
	}

	clean, _ := smallBundle(t)
	_, other, _ := signing.Generate("other-1")
	otherFile := filepath.Join(t.TempDir(), "other.pub")
	os.WriteFile(otherFile, []byte(other.String()), 0o644)
	code, stdout, _ = run(t, "verify", clean, "--public-key", otherFile, "--no-progress")
	if code != cli.ExitUntrusted || !strings.Contains(stdout, "not signed by a trusted key") || strings.Contains(stdout, "unsigned") {
		t.Errorf("verify with another key: exit %d, stdout:\n%s\nwant %d and the bundle summed up as not signed by a trusted key", code, stdout, cli.ExitUntrusted)
	}
}

// TestUnsignedHint: a bundle no key signed is told apart from one signed
// by a key not trusted: the hint says how to sign it or accept it, not
// to trust a signer there is none of.
func TestUnsignedHint(t *testing.T) {
	dir, pub := smallBundle(t)
	if err := os.Remove(filepath.Join(dir, "manifest.json.sig")); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"verify", dir, "--public-key", pub, "--no-progress"},
		{"import", dir, "--cache", filepath.Join(t.TempDir(), "cache"), "--public-key", pub, "--no-progress"},
	} {
		code, stdout, stderr := run(t, args...)
		if code != cli.ExitUntrusted || !strings.Contains(stderr, "No key signed it: pack it again with --secret-key, or give --allow-unsigned") || strings.Contains(stderr, "To trust the signer") {
			t.Errorf("%s of an unsigned bundle: exit %d, want %d and the hint for an unsigned bundle:\n%s%s", args[0], code, cli.ExitUntrusted, stdout, stderr)
		}
	}
}
