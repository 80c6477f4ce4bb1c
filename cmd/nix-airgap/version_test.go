package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
)

// goBuild builds nix-airgap in dir into bin as scripts/demo.sh does, with
// extra go build flags, and returns bin.
func goBuild(t *testing.T, dir, bin string, flags ...string) string {
	t.Helper()
	args := append(append([]string{"build", "-trimpath", "-buildvcs=true"}, flags...), "-o", bin, "./cmd/nix-airgap")
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return bin
}

func output(t *testing.T, dir, prog string, args ...string) string {
	t.Helper()
	cmd := exec.Command(prog, args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v", prog, strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out))
}

// TestVersionStamp builds nix-airgap the ways it gets built and checks
// that --version and a bundle's manifest say which commit it is: in a
// git clone (Go's VCS stamp, which needs a .git directory), as
// scripts/demo.sh builds it (the commit named with -ldflags -X, which
// works in a worktree too), with a release version, and from an export
// without git, which must say that it records no commit.
func TestVersionStamp(t *testing.T) {
	for _, prog := range []string{"go", "git"} {
		if _, err := exec.LookPath(prog); err != nil {
			t.Skipf("needs %s: %v", prog, err)
		}
	}
	root, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("not in a git checkout: %v", err)
	}
	top := strings.TrimSpace(string(root))
	head := output(t, top, "git", "rev-parse", "HEAD")

	clone := filepath.Join(t.TempDir(), "clone")
	output(t, top, "git", "clone", "--quiet", "--no-hardlinks", top, clone)
	export := filepath.Join(t.TempDir(), "export")
	os.MkdirAll(export, 0o755)
	archive := exec.Command("sh", "-c", `git archive HEAD | tar -x -C "$1"`, "sh", export)
	archive.Dir = top
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("git archive: %v\n%s", err, out)
	}
	const pkg = "github.com/nix-airgap/nix-airgap/internal/cli"
	tests := []struct {
		name, dir string
		flags     []string
		want      string
	}{
		{"git clone", clone, nil, "(commit " + head + ")"},
		{"demo.sh", export, []string{"-ldflags", "-X " + pkg + ".releaseCommit=" + head}, "devel (commit " + head + ")"},
		{"demo.sh, uncommitted changes", export, []string{"-ldflags", "-X " + pkg + ".releaseCommit=" + head + "-dirty"}, "(commit " + head + ", with uncommitted changes)"},
		{"release", export, []string{"-ldflags", "-X " + pkg + ".releaseVersion=v1.2.3 -X " + pkg + ".releaseCommit=" + head}, "v1.2.3 (commit " + head + ")"},
		{"no git", export, nil, "devel (no commit recorded)"},
	}
	var stamped string
	bins := t.TempDir()
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bin := goBuild(t, tt.dir, filepath.Join(bins, fmt.Sprint(i)), tt.flags...)
			got := output(t, tt.dir, bin, "--version")
			if !strings.HasPrefix(got, "nix-airgap version ") || !strings.HasSuffix(got, tt.want) {
				t.Errorf("--version = %q, want it to end in %q", got, tt.want)
			}
			if tt.name == "release" {
				stamped = bin
			}
		})
	}
	if stamped == "" {
		return
	}

	// The manifest's tool names the version too.
	n := nixtest.New(t, nixtest.Options{})
	src := filepath.Join(t.TempDir(), "hello")
	os.WriteFile(src, []byte("hello\n"), 0o644)
	path := n.Run(t, "nix-store", "--add", src)
	out := filepath.Join(t.TempDir(), "bundle")
	cmd := n.Command(t.Context(), stamped, "pack", path, "--out", out, "--no-progress")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pack: %v\n%s", err, msg)
	}
	data, err := os.ReadFile(filepath.Join(out, bundle.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	var m struct{ Tool string }
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	if want := "nix-airgap v1.2.3 (commit " + head + ")"; m.Tool != want {
		t.Errorf("manifest tool = %q, want %q", m.Tool, want)
	}
}
