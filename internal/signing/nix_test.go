package signing_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/signing"
)

// TestNix checks key files both ways: Nix signs with keys we generate and
// re-serialise, and nix store verify accepts exactly the matching public
// keys, so a wrong key is caught.
func TestNix(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	// An input-addressed path: content-addressed ones need no signature.
	expr := file("default.nix", `derivation {
  name = "signed"; system = builtins.currentSystem; builder = "/bin/busybox";
  args = [ "sh" "-c" "echo signed > $out" ];
}`)
	out := n.Run(t, "nix-build", "--no-out-link", expr)

	ourSec, ourPub, err := signing.Generate("ours-1")
	if err != nil {
		t.Fatal(err)
	}
	ourSecFile := file("ours.sec", ourSec.String())

	nixSecFile, nixPubFile := filepath.Join(dir, "nix.sec"), filepath.Join(dir, "nix.pub")
	n.Run(t, "nix-store", "--generate-binary-cache-key", "nix-1", nixSecFile, nixPubFile)
	nixSec, err := signing.LoadSecretKey(nixSecFile)
	if err != nil {
		t.Fatal(err)
	}
	nixPub, err := signing.LoadPublicKey(nixPubFile)
	if err != nil {
		t.Fatal(err)
	}
	for file, got := range map[string]string{nixSecFile: nixSec.String(), nixPubFile: nixPub.String()} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if got != string(b) {
			t.Errorf("String() = %q, want %s as Nix wrote it: %q", got, file, b)
		}
	}
	if diff := cmp.Diff(nixPub, nixSec.Public()); diff != "" {
		t.Errorf("Public() of Nix's secret key differs from Nix's public key (-nix +ours):\n%s", diff)
	}
	nixSecAgain := file("nix-again.sec", nixSec.String())

	cache := "file://" + filepath.Join(dir, "cache")
	n.Run(t, "nix", "copy", "--to", cache+"?compression=none&secret-key="+ourSecFile, out)
	n.Run(t, "nix", "store", "sign", "--store", cache, "--key-file", nixSecAgain, out)

	_, wrongPub, err := signing.Generate("ours-1")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		trusted []signing.PublicKey
		needed  string
		wantOK  bool
	}{
		{"our key", []signing.PublicKey{ourPub}, "1", true},
		{"Nix's key", []signing.PublicKey{nixPub}, "1", true},
		{"both keys", []signing.PublicKey{ourPub, nixPub}, "2", true},
		{"wrong key with our name", []signing.PublicKey{wrongPub}, "1", false},
		{"one trusted key, two needed", []signing.PublicKey{nixPub}, "2", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys := make([]string, len(tt.trusted))
			for i, k := range tt.trusted {
				keys[i] = k.String()
			}
			_, err := n.Output(t.Context(), "nix", "store", "verify", "--store", cache,
				"--trusted-public-keys", strings.Join(keys, " "), "--sigs-needed", tt.needed, out)
			if ok := err == nil; ok != tt.wantOK {
				t.Fatalf("nix store verify ok = %v, want %v: %v", ok, tt.wantOK, err)
			}
			// Exit status 2 is "untrusted", as opposed to a failure to run.
			if exit := (*exec.ExitError)(nil); err != nil && (!errors.As(err, &exit) || exit.ExitCode() != 2) {
				t.Errorf("nix store verify: want exit status 2 (untrusted), got %v", err)
			}
		})
	}
}
