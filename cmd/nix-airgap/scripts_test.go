package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/nixtest"
)

// repoRoot is the checkout this test runs in.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "scripts", "setup.sh")); err != nil {
		t.Skipf("no scripts here: %v", err)
	}
	return root
}

// TestSetupGoProxy: setup.sh fetches Go from the module proxy the machine
// is configured with, GOPROXY or the one a Go toolchain names, and says
// what to do when there is none; it names no proxy of its own.
func TestSetupGoProxy(t *testing.T) {
	setup, err := os.ReadFile(filepath.Join(repoRoot(t), "scripts", "setup.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(setup), "proxy.golang.org") {
		t.Error("setup.sh names a Go module proxy of its own")
	}
	fakeGo := func(proxy string) string {
		p := filepath.Join(t.TempDir(), "go")
		os.WriteFile(p, []byte("#!/bin/sh\n[ \"$1 $2\" = \"env GOPROXY\" ] && echo '"+proxy+"'\n"), 0o755)
		return p
	}
	tests := []struct {
		name, env string
		gos       []string
		want      string // "" for a failure
	}{
		{"GOPROXY", "https://goproxy.example/,direct", []string{fakeGo("https://other.example")}, "https://goproxy.example"},
		{"GOPROXY with a fallback list", "off|https://second.example", nil, "https://second.example"},
		{"the toolchain's", "", []string{"/nonexistent/go", fakeGo("http://mirror.example:3000,direct")}, "http://mirror.example:3000"},
		{"a file proxy", "file:///srv/goproxy", nil, "file:///srv/goproxy"},
		{"none", "", []string{fakeGo("direct")}, ""},
		{"off", "off", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			script := "want=1.99\n" + extractFunc(t, string(setup), "go_proxy") + "\ngo_proxy \"$@\"\n"
			cmd := exec.Command("bash", append([]string{"-c", script, "bash"}, tt.gos...)...)
			cmd.Env = append(os.Environ(), "GOPROXY="+tt.env)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			got := strings.TrimSpace(stdout.String())
			switch {
			case tt.want == "" && (err == nil || !strings.Contains(stderr.String(), "set GOPROXY")):
				t.Errorf("go_proxy = %q, %v, stderr %q; want a failure saying to set GOPROXY", got, err, stderr.String())
			case tt.want != "" && (err != nil || got != tt.want):
				t.Errorf("go_proxy = %q, %v (stderr %q), want %q", got, err, stderr.String(), tt.want)
			}
		})
	}
}

// extractFunc returns the shell function name from script.
func extractFunc(t *testing.T, script, name string) string {
	t.Helper()
	start := strings.Index(script, "\n"+name+"() {\n")
	if start < 0 {
		t.Fatalf("no function %s", name)
	}
	end := strings.Index(script[start:], "\n}\n")
	return script[start : start+end+3]
}

// nixConfState is /etc/nix/nix.conf's content and mode, or its absence.
func nixConfState(t *testing.T) string {
	t.Helper()
	const conf = "/etc/nix/nix.conf"
	st, err := os.Lstat(conf)
	if err != nil {
		return fmt.Sprintf("absent (%v)", err)
	}
	data, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%v %d bytes sha256:%x", st.Mode(), len(data), sha256.Sum256(data))
}

// TestDemoScriptLeavesNixConf runs the README's first command,
// scripts/demo.sh (which runs setup.sh), on a copy of this checkout, and
// checks that the system's Nix configuration is byte for byte what it
// was: the demo runs Nix with a configuration of its own.
func TestDemoScriptLeavesNixConf(t *testing.T) {
	nixtest.Require(t)
	for _, prog := range []string{"go", "git", "bash"} {
		if _, err := exec.LookPath(prog); err != nil {
			t.Skipf("needs %s: %v", prog, err)
		}
	}
	root := repoRoot(t)
	copyDir := filepath.Join(t.TempDir(), "checkout")
	cp := exec.Command("sh", "-c", `git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$1"`, "sh", copyDir)
	cp.Dir = root
	os.MkdirAll(copyDir, 0o755)
	if out, err := cp.CombinedOutput(); err != nil {
		t.Skipf("cannot copy the checkout: %v\n%s", err, out)
	}
	before := nixConfState(t)
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "scripts/demo.sh")
	cmd.Dir = copyDir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/demo.sh: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "rebuilt offline from the bundle alone") {
		t.Errorf("scripts/demo.sh did not finish the story:\n%s", out)
	}
	if after := nixConfState(t); after != before {
		t.Errorf("/etc/nix/nix.conf was %s before setup.sh and the demo, and %s after", before, after)
	}
}
