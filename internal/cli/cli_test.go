package cli_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/cli"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/signing"
)

// run runs the command line and returns its exit code and stderr.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := cli.Run(t.Context(), args, &stdout, &stderr)
	return cli.ExitCode(err), stdout.String(), stderr.String()
}

func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "existing")
	if err := os.WriteFile(existing, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		code    int
		stderrs string // substring the error must contain
	}{
		{"unknown command", []string{"frobnicate"}, cli.ExitUsage, `unknown command "frobnicate"`},
		{"unknown flag", []string{"keygen", "--frobnicate"}, cli.ExitUsage, "unknown flag: --frobnicate"},
		{"missing flag", []string{"keygen", "--name", "a"}, cli.ExitUsage, "--secret-key is required"},
		{"extra argument", []string{"keygen", "x", "--name", "a", "--secret-key", "s", "--public-key", "p"}, cli.ExitUsage, "accepts 0 arg"},
		{"bad log level", []string{"--log-level", "loud", "keygen"}, cli.ExitUsage, "--log-level"},
		{"bad log level after plan", []string{"plan", "--file", "f", "--arg", "a", "1", "--log-level", "loud"}, cli.ExitUsage, "--log-level"},
		{"--arg missing a word", []string{"check", "--file", "f", "--arg", "a"}, cli.ExitUsage, "needs two words"},
		{"unknown pack flag", []string{"pack", "--arg", "a", "1", "--frobnicate"}, cli.ExitUsage, "unknown flag: --frobnicate"},
		{"invalid key name", []string{"keygen", "--name", "a:b", "--secret-key", filepath.Join(dir, "s"), "--public-key", filepath.Join(dir, "p")}, cli.ExitFailure, "a:b"},
		{"refuses to overwrite", []string{"keygen", "--name", "a", "--secret-key", existing, "--public-key", filepath.Join(dir, "p2")}, cli.ExitFailure, existing + ": file exists"},
		{"help", []string{"--help"}, cli.ExitOK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := run(t, tt.args...)
			if code != tt.code {
				t.Errorf("exit code = %d, want %d; stderr:\n%s", code, tt.code, stderr)
			}
			if !strings.Contains(stderr, tt.stderrs) {
				t.Errorf("stderr = %q, want it to contain %q", stderr, tt.stderrs)
			}
		})
	}
	if b, _ := os.ReadFile(existing); string(b) != "x" {
		t.Errorf("keygen overwrote %s without --force", existing)
	}
}

// TestTwoWordFlagsHelp checks that cobra, not the commands, parses plan,
// pack and check: their help and completion list --arg with its two
// words.
func TestTwoWordFlagsHelp(t *testing.T) {
	for _, cmd := range []string{"plan", "pack", "check"} {
		code, stdout, stderr := run(t, cmd, "--help")
		if code != cli.ExitOK || !strings.Contains(stdout, "--arg NAME EXPR") || !strings.Contains(stdout, "--log-level") {
			t.Errorf("%s --help: exit %d, stderr %q, stdout:\n%s\nwant --arg NAME EXPR and the global flags", cmd, code, stderr, stdout)
		}
		_, stdout, _ = run(t, "__complete", cmd, "--file", "f", "--arg", "a", "1", "--args")
		if !strings.Contains(stdout, "--argstr") {
			t.Errorf("completing %s --args after a two-word --arg: %q, want --argstr", cmd, stdout)
		}
	}
}

func TestKeygen(t *testing.T) {
	dir := t.TempDir()
	sec, pub := filepath.Join(dir, "cache.sec"), filepath.Join(dir, "cache.pub")
	if code, _, stderr := run(t, "keygen", "--name", "cache.example.org-1", "--secret-key", sec, "--public-key", pub); code != 0 {
		t.Fatalf("keygen exit %d: %s", code, stderr)
	}
	sk, err := signing.LoadSecretKey(sec)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := signing.LoadPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if sk.Name != "cache.example.org-1" || sk.Public().String() != pk.String() {
		t.Errorf("secret key %s does not match public key %s", sk.Public(), pk)
	}
	if fi, _ := os.Stat(sec); fi.Mode().Perm() != 0o600 {
		t.Errorf("secret key mode = %v, want 0600", fi.Mode().Perm())
	}
	raw, _ := os.ReadFile(pub)
	if strings.HasSuffix(string(raw), "\n") {
		t.Errorf("public key file ends in a newline; nix-store --generate-binary-cache-key writes none")
	}
	msg := []byte("1;/nix/store/x;sha256:y;1;")
	if !pk.Verify(msg, sk.Sign(msg)) {
		t.Error("signature by the new secret key does not verify with its public key")
	}
}

// TestKeygenWithNix proves keygen's files work with stock Nix: Nix signs
// with the secret key and verifies with the public key, and keys Nix
// generates load as ours.
func TestKeygenWithNix(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	dir := t.TempDir()
	sec, pub := filepath.Join(dir, "site.sec"), filepath.Join(dir, "site.pub")
	if code, _, stderr := run(t, "keygen", "--name", "site-1", "--secret-key", sec, "--public-key", pub); code != 0 {
		t.Fatalf("keygen exit %d: %s", code, stderr)
	}
	// Input-addressed: Nix trusts a content-addressed path without any
	// signature, which would prove nothing here.
	path := n.Run(t, "nix-build", "--no-out-link", "-E",
		`derivation { name = "hello"; system = builtins.currentSystem; builder = "/bin/busybox"; args = [ "sh" "-c" "echo hello > $out" ]; }`)
	cache := "file://" + filepath.Join(dir, "cache")
	n.Run(t, "nix", "copy", "--to", cache+"?secret-key="+sec, path)
	pubKey, err := os.ReadFile(pub)
	if err != nil {
		t.Fatal(err)
	}
	n.Run(t, "nix", "store", "verify", "--store", cache, "--trusted-public-keys", string(pubKey), "--sigs-needed", "1", path)
	_, other, err := signing.Generate("site-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Output(t.Context(), "nix", "store", "verify", "--store", cache, "--trusted-public-keys", other.String(), "--sigs-needed", "1", path); err == nil {
		t.Error("nix store verify trusted a signature by another key with the same name")
	}

	nixSec, nixPub := filepath.Join(dir, "nix.sec"), filepath.Join(dir, "nix.pub")
	n.Run(t, "nix-store", "--generate-binary-cache-key", "nix-1", nixSec, nixPub)
	sk, err := signing.LoadSecretKey(nixSec)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := signing.LoadPublicKey(nixPub)
	if err != nil {
		t.Fatal(err)
	}
	if sk.Public().String() != pk.String() {
		t.Errorf("Nix's secret key loads with public half %s, Nix's public key is %s", sk.Public(), pk)
	}
}
