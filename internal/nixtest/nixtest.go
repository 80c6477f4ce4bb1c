// Package nixtest is the one real-Nix test harness. Every test that runs
// Nix gets a hermetic Nix of its own from New (store, state, log, conf and
// cache dirs under the test's temp dir), and can add:
//
//   - an Internet (StartInternet): a file server on 127.0.0.1 that plays
//     the upstream download sites, logs every request and can be stopped;
//   - a World (NewWorld): a generated Nix expression shaped like nixpkgs'
//     bootstrap, with every kind of FOD, a build-only compiler and a
//     layered runtime graph, whose sources the Internet serves;
//   - a NetNS (NewNetNS): a loopback-only network namespace, the airgap.
//     Nix.In runs nix commands in it; NetNS.Listen puts an in-process
//     server in it.
//
// An Example, which has no testing.T, gets a Nix of its own from
// NewExample. TreeHash tells a test that what it ran left a directory as
// it was.
//
// A typical test builds online, then works offline:
//
//	n := nixtest.New(t, nixtest.Options{})
//	inet := nixtest.StartInternet(t)
//	w := nixtest.NewWorld(t, n, inet, nixtest.WorldOptions{})
//	out := w.Build(t)                       // fetches from inet
//	ns := nixtest.NewNetNS(t)
//	l, err := ns.Listen("tcp", "127.0.0.1:0") // serve the airgap's cache here
//	...
//	out2, err := w.On(n.In(ns)).TryBuild(ctx, w.Args("x", "")...) // offline
//
// The new nix CLI turns substituters off when it sees only loopback, as
// in a NetNS: pass --option substitute true to nix build there.
package nixtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Require skips t when Nix is not installed, or fails it when running in
// CI (CI is set), where a missing Nix means a broken install step. Every
// real-Nix test calls it (New does), so it is where a test is known to
// run Nix: a failing test names the Nix version it ran, and with
// NIXTEST_RECORD set the test's name is recorded for the Nix matrix
// (scripts/nix-matrix.sh), which runs exactly these tests under other Nix
// versions. With NIXTEST_SKIP set it skips t, recorded all the same: the
// run of the unit tests under the race detector leaves the real-Nix tests
// to a run of their own (scripts/test.sh).
func Require(t testing.TB) {
	t.Helper()
	record(t)
	if os.Getenv("NIXTEST_SKIP") != "" {
		t.Skip("skipping real-Nix test: NIXTEST_SKIP is set")
	}
	for _, prog := range []string{"nix", "nix-build", "nix-store", "nix-instantiate"} {
		if _, err := exec.LookPath(prog); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("real-Nix test needs %s on PATH (CI is set, so this is an install failure): %v", prog, err)
			}
			t.Skipf("skipping real-Nix test: %s not on PATH (install nix-bin, or run .ci/run)", prog)
		}
	}
	v, err := Version()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("this test ran %s", v)
		}
	})
}

var version = sync.OnceValues(func() (nixcli.Version, error) {
	var r nixcli.Runner
	v, err := r.Version(context.Background())
	if err != nil {
		return nixcli.Version{}, fmt.Errorf("nixtest: %w", err)
	}
	return v, nil
})

// Version returns the version of the nix on PATH, the one every Nix of
// the harness runs, asked once per test process.
func Version() (nixcli.Version, error) { return version() }

// record appends "PACKAGE TEST" to the file NIXTEST_RECORD names, if set:
// PACKAGE is the test's package directory relative to the module root
// (go test runs a test binary in its package's directory), TEST the
// top-level test. Each line is one append, which concurrent test processes
// cannot tear.
func record(t testing.TB) {
	file := os.Getenv("NIXTEST_RECORD")
	if file == "" {
		return
	}
	pkg, err := packageDir()
	if err != nil {
		t.Fatalf("nixtest: NIXTEST_RECORD: %v", err)
	}
	name, _, _ := strings.Cut(t.Name(), "/")
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err == nil {
		_, err = fmt.Fprintf(f, "%s %s\n", pkg, name)
		err = errors.Join(err, f.Close())
	}
	if err != nil {
		t.Fatalf("nixtest: NIXTEST_RECORD: %v", err)
	}
}

// packageDir is the working directory relative to the enclosing module's
// root, as a slash-separated path.
func packageDir() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			rel, err := filepath.Rel(dir, wd)
			return filepath.ToSlash(rel), err
		}
		if dir == filepath.Dir(dir) {
			return "", fmt.Errorf("no go.mod above %s", wd)
		}
	}
}

// Options configure New. The zero value gives a store dir under the
// test's temp dir.
type Options struct {
	// StoreDir is the store directory. Empty means ROOT/store, a custom
	// store dir unique to the test.
	StoreDir storepath.Dir
	// ExtraConf is appended to nix.conf.
	ExtraConf string
}

// Nix is a hermetic Nix: its own store, state, log, conf and cache dirs.
type Nix struct {
	Root     string
	StoreDir storepath.Dir
	// Env is the complete environment for nix programs; nothing of the
	// caller's Nix setup leaks in.
	Env []string

	ns *NetNS // where commands run; nil for the test's own namespace
}

// New makes a hermetic Nix under t.TempDir().
func New(t testing.TB, opts Options) *Nix {
	t.Helper()
	Require(t)
	root := t.TempDir()
	storeDir := opts.StoreDir
	if storeDir == "" {
		storeDir = storepath.Dir(filepath.Join(root, "store"))
	}
	env, err := nixcli.IsolatedEnv(root, storeDir, opts.ExtraConf)
	if err != nil {
		t.Fatal(err)
	}
	return &Nix{Root: root, StoreDir: storeDir, Env: env}
}

// Setenv puts n's environment into the test process for the rest of t,
// so that code run in-process (the command line, a nixcli.Runner with no
// Env) uses n.
func (n *Nix) Setenv(t testing.TB) {
	t.Helper()
	for _, kv := range n.Env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// Command returns a command for a nix program with n's environment,
// inside n's network namespace if it came from In.
func (n *Nix) Command(ctx context.Context, prog string, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if n.ns != nil {
		cmd = n.ns.Command(ctx, prog, args...)
	} else {
		cmd = exec.CommandContext(ctx, prog, args...)
	}
	cmd.Env = n.Env
	return cmd
}

// Run runs a nix program, failing t with Nix's own message on error, and
// returns its trimmed stdout.
func (n *Nix) Run(t testing.TB, prog string, args ...string) string {
	t.Helper()
	out, err := n.Output(t.Context(), prog, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Output runs a nix program and returns its trimmed stdout, or an error
// holding its stderr.
func (n *Nix) Output(ctx context.Context, prog string, args ...string) (string, error) {
	cmd := n.Command(ctx, prog, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w\n%s", prog, strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(stdout.String()), nil
}
