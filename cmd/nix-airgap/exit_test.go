package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/cli"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
)

// exitExpr has a derivation that fails, one that sleeps, one that builds,
// a big one, and one that needs a download from nowhere.
const exitExpr = `
let sh = name: script: derivation { inherit name; builder = "/bin/busybox"; args = [ "sh" "-c" script ]; system = builtins.currentSystem; };
in {
  fails = sh "fails-1.0" "echo about to fail; exit 3";
  sleeps = sh "sleeps-1.0" "sleep 60; echo > $out";
  builds = sh "builds-1.0" "echo built > $out";
  big = sh "big-1.0" "head -c 134217728 /dev/urandom > $out";
  needsFetch = sh "needs-fetch-1.0" "cat ${builtins.derivation {
    name = "source.tar"; system = "builtin"; builder = "builtin:fetchurl";
    url = "http://127.0.0.1:9/source.tar"; outputHashMode = "flat"; outputHashAlgo = "sha256";
    outputHash = "0000000000000000000000000000000000000000000000000000";
  }} > $out";
}
`

// TestExitCodes gives the real nix-airgap command (this test binary as
// main) a case for every exit code the README documents, and checks the
// code the process exits with.
func TestExitCodes(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	dir := t.TempDir()
	file := filepath.Join(dir, "default.nix")
	os.WriteFile(file, []byte(exitExpr), 0o644)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	env := append(slices.Clone(n.Env), asMain+"=1")
	nixAirgap := func(args ...string) *exec.Cmd {
		cmd := exec.CommandContext(t.Context(), exe, args...)
		cmd.Env, cmd.Dir = env, dir
		return cmd
	}
	exitCode := func(t *testing.T, cmd *exec.Cmd) (int, string) {
		t.Helper()
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return 0, out.String()
		case errors.As(err, &ee):
			return ee.ExitCode(), out.String()
		}
		t.Fatalf("%s: %v", cmd.Args, err)
		return 0, ""
	}
	mustRun := func(args ...string) {
		t.Helper()
		if code, out := exitCode(t, nixAirgap(args...)); code != 0 {
			t.Fatalf("nix-airgap %s: exit %d\n%s", strings.Join(args, " "), code, out)
		}
	}

	// A small signed bundle, another key, and a damaged copy.
	mustRun("keygen", "--name", "site-1", "--secret-key", "site.sec", "--public-key", "site.pub")
	mustRun("keygen", "--name", "other-1", "--secret-key", "other.sec", "--public-key", "other.pub")
	os.WriteFile(filepath.Join(dir, "hello"), []byte("hello\n"), 0o644)
	hello := n.Run(t, "nix-store", "--add", filepath.Join(dir, "hello"))
	mustRun("pack", hello, "--secret-key", "site.sec", "--out", "bundle", "--no-progress")
	damaged := filepath.Join(dir, "damaged")
	os.MkdirAll(filepath.Join(damaged, "nar"), 0o755)
	entries, _ := filepath.Glob(filepath.Join(dir, "bundle", "*"))
	nars, _ := filepath.Glob(filepath.Join(dir, "bundle", "nar", "*"))
	for _, f := range append(entries, nars...) {
		if st, err := os.Stat(f); err == nil && st.Mode().IsRegular() {
			data, _ := os.ReadFile(f)
			rel, _ := filepath.Rel(filepath.Join(dir, "bundle"), f)
			if strings.HasPrefix(rel, "nar/") {
				data[len(data)/2] ^= 1
			}
			os.WriteFile(filepath.Join(damaged, rel), data, 0o644)
		}
	}
	mustRun("import", "bundle", "--cache", "cache", "--public-key", "site.pub")
	// A directory of other things: not a bundle at all, as a file is.
	os.MkdirAll(filepath.Join(dir, "notes"), 0o755)
	os.WriteFile(filepath.Join(dir, "notes", "a.txt"), []byte("hello\n"), 0o644)

	tests := []struct {
		name string
		args []string
		code int
	}{
		{"success", []string{"verify", "bundle", "--public-key", "site.pub"}, cli.ExitOK},
		{"keygen over a file", []string{"keygen", "--name", "x", "--secret-key", "site.sec", "--public-key", "x.pub"}, cli.ExitFailure},
		{"unknown flag", []string{"verify", "bundle", "--frobnicate"}, cli.ExitUsage},
		{"missing argument", []string{"verify"}, cli.ExitUsage},
		{"untrusted", []string{"verify", "bundle", "--public-key", "other.pub"}, cli.ExitUntrusted},
		{"import untrusted", []string{"import", "bundle", "--cache", "cache2", "--public-key", "other.pub"}, cli.ExitUntrusted},
		{"corrupt", []string{"verify", "damaged", "--public-key", "site.pub"}, cli.ExitCorrupt},
		{"not a bundle", []string{"verify", "default.nix", "--public-key", "site.pub"}, cli.ExitCorrupt},
		{"directory that is not a bundle", []string{"verify", "notes", "--public-key", "site.pub"}, cli.ExitCorrupt},
		{"import of a directory that is not a bundle", []string{"import", "notes", "--cache", "cache3", "--public-key", "site.pub"}, cli.ExitCorrupt},
		{"show of a directory that is not a bundle", []string{"show", "notes"}, cli.ExitCorrupt},
		{"diff of a directory that is not a bundle", []string{"diff", "notes", "bundle"}, cli.ExitCorrupt},
		{"missing --since base", []string{"pack", hello, "--since", "nowhere", "--out", "b2"}, cli.ExitMissing},
		{"plan --since not a bundle", []string{"plan", hello, "--since", "default.nix"}, cli.ExitCorrupt},
		{"missing --paths-from file", []string{"pack", "--paths-from", "nowhere.txt", "--out", "b3"}, cli.ExitMissing},
		{"missing key file", []string{"verify", "bundle", "--public-key", "nowhere.pub"}, cli.ExitUsage},
		{"missing bundle", []string{"verify", "nowhere", "--public-key", "site.pub"}, cli.ExitMissing},
		{"mistyped store path", []string{"pack", string(n.StoreDir) + "/00000000000000000000000000000000-hello", "--out", "b4"}, cli.ExitMissing},
		{"missing --against source", []string{"check", "--file", file, "--attr", "needsFetch", "--against", "nowhere"}, cli.ExitMissing},
		{"blocked", []string{"check", "--file", file, "--attr", "needsFetch", "--against", "cache"}, cli.ExitBlocked},
		{"build fails", []string{"pack", "--file", file, "--attr", "fails", "--out", "b5"}, cli.ExitNixFailed},
		{"evaluation fails", []string{"plan", "--file", file, "--attr", "nosuchattr"}, cli.ExitNixFailed},
		{"--no-build", []string{"pack", "--file", file, "--attr", "builds", "--no-build", "--out", "b6"}, cli.ExitNotBuilt},
		{"store that does not answer", []string{"verify", "s3://cache?endpoint=127.0.0.1:1&scheme=http", "--allow-unsigned"}, cli.ExitUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := exitCode(t, nixAirgap(tt.args...))
			if code != tt.code {
				t.Errorf("nix-airgap %s: exit %d, want %d\n%s", strings.Join(tt.args, " "), code, tt.code, out)
			}
			// An error says first which command failed: "op subject: problem".
			for _, line := range strings.Split(out, "\n") {
				if strings.HasPrefix(line, "nix-airgap: ") && !strings.HasPrefix(line, "nix-airgap: "+tt.args[0]) {
					t.Errorf("nix-airgap %s: the error does not start with the command: %s", strings.Join(tt.args, " "), line)
				}
			}
			// What is missing is named once, as given.
			for _, a := range tt.args {
				if strings.HasPrefix(a, "nowhere") && strings.Count(out, a) != 1 {
					t.Errorf("nix-airgap %s names %s %d times, want once:\n%s", strings.Join(tt.args, " "), a, strings.Count(out, a), out)
				}
			}
		})
	}
	// interrupt runs pack until its output says when, then interrupts it.
	interrupt := func(t *testing.T, when string, cmd *exec.Cmd) {
		t.Helper()
		var out nixtest.SyncBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(60 * time.Second)
		for !strings.Contains(out.String(), when) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		cmd.Process.Signal(syscall.SIGINT)
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != cli.ExitInterrupted {
			t.Errorf("pack interrupted after %q: %v, want exit %d\n%s", when, err, cli.ExitInterrupted, out.String())
		}
		if want := "\nnix-airgap: pack: interrupted; run the same pack again to go on from what it wrote\n"; !strings.HasSuffix(out.String(), want) {
			t.Errorf("pack interrupted after %q: output ends otherwise than %q:\n%s", when, want, out.String())
		}
	}
	t.Run("interrupted", func(t *testing.T) {
		// While Nix builds.
		interrupt(t, "sleeps-1.0", nixAirgap("pack", "--file", file, "--attr", "sleeps", "--out", "b7"))
	})
	t.Run("interrupted tar pack leaves only its tar to resume", func(t *testing.T) {
		// While it copies into a tar, spooling NAR files in TMPDIR.
		n.Run(t, "nix-build", "--no-out-link", file, "-A", "big")
		tmp := t.TempDir()
		pack := func() *exec.Cmd {
			cmd := nixAirgap("pack", "--file", file, "--attr", "big", "--out", "big.tar")
			cmd.Env = append(cmd.Env, "TMPDIR="+tmp)
			return cmd
		}
		// The JSON phase event says the copy began; the text lines
		// give the phase only with its first path, once copied.
		cmd := pack()
		cmd.Args = append(cmd.Args, "--json")
		interrupt(t, `"phase":"copy"`, cmd)
		if left, _ := filepath.Glob(filepath.Join(tmp, "*")); len(left) > 0 {
			t.Errorf("an interrupted pack left %v in TMPDIR", left)
		}
		if left, _ := filepath.Glob(filepath.Join(dir, "*big.tar*")); len(left) != 1 || !strings.HasPrefix(filepath.Base(left[0]), ".big.tar.tmp-") {
			t.Errorf("an interrupted pack left %v, want its unfinished tar, hidden", left)
		}
		// The next pack goes on from it, and leaves the tar alone.
		if out, err := pack().CombinedOutput(); err != nil {
			t.Fatalf("pack after an interrupted one: %v\n%s", err, out)
		}
		if left, _ := filepath.Glob(filepath.Join(dir, "*big.tar*")); len(left) != 1 || filepath.Base(left[0]) != "big.tar" {
			t.Errorf("after the next pack: %v, want big.tar alone", left)
		}
	})

	// Every documented code has a case.
	tested := map[int]bool{cli.ExitInterrupted: true}
	for _, tt := range tests {
		tested[tt.code] = true
	}
	for _, c := range cli.ExitCodes() {
		if !tested[c.Code] {
			t.Errorf("exit code %d (%s) has no case", c.Code, c.Meaning)
		}
	}
}
