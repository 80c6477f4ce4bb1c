package gc_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/cli"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/signing"
)

// run runs the command line in-process (with the test's Nix environment)
// and returns its stdout.
func run(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if err := cli.Run(t.Context(), args, &stdout, &stderr); err != nil {
		t.Fatalf("nix-airgap %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// planPaths lists, sorted, the paths plan says targets need.
func planPaths(t *testing.T, target ...string) []string {
	t.Helper()
	var pl struct {
		Paths []struct {
			Path string `json:"path"`
		} `json:"paths"`
	}
	if err := json.Unmarshal([]byte(run(t, append([]string{"plan", "--json"}, target...)...)), &pl); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range pl.Paths {
		out = append(out, p.Path)
	}
	slices.Sort(out)
	return out
}

func lines(s string) []string {
	out := strings.Fields(s)
	slices.Sort(out)
	return out
}

// TestKeepBundlesSources imports a sources-mode base (the test world's
// system) and a sources-mode delta (the system with libbase changed,
// rebuilding what depends on it), then collects all but the last bundle.
// gc must remove exactly the paths only the older system's plan needed,
// keep every source the newer one needs though its delta does not carry
// them, and leave a cache from which Nix, offline, builds yet another
// change from source. --roots then keeps just a runtime closure.
func TestKeepBundlesSources(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	n.Setenv(t)
	inet := nixtest.StartInternet(t)
	w := nixtest.NewWorld(t, n, inet, nixtest.WorldOptions{})
	w.Build(t)
	w.Build(t, w.Args("", "d2")...)
	sk, pk, err := signing.Generate("site-1")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	skFile, pkFile := filepath.Join(dir, "sk"), filepath.Join(dir, "pk")
	os.WriteFile(skFile, []byte(sk.String()), 0o600)
	os.WriteFile(pkFile, []byte(pk.String()), 0o644)

	target := func(deep string) []string {
		return []string{"--file", w.File, "--attr", "toplevel", "--argstr", "variant", "", "--argstr", "deep", deep, "--mode", "sources"}
	}
	b1, b2 := filepath.Join(dir, "b1"), filepath.Join(dir, "b2")
	run(t, append([]string{"pack", "--no-build", "--no-progress", "--secret-key", skFile, "--out", b1}, target("")...)...)
	run(t, append([]string{"pack", "--no-build", "--no-progress", "--secret-key", skFile, "--out", b2, "--since", b1}, target("d2")...)...)
	cacheDir := filepath.Join(dir, "cache")
	for _, b := range []string{b1, b2} {
		run(t, "import", b, "--cache", cacheDir, "--public-key", pkFile, "--no-progress")
	}
	plan1, plan2 := planPaths(t, target("")...), planPaths(t, target("d2")...)
	var onlyOld []string
	for _, p := range plan1 {
		if !slices.Contains(plan2, p) {
			onlyOld = append(onlyOld, p)
		}
	}
	if len(onlyOld) == 0 || len(onlyOld) == len(plan1) {
		t.Fatalf("the older system's plan shares %d of %d paths with the newer one's: want some, not all", len(plan1)-len(onlyOld), len(plan1))
	}

	var rep struct {
		Removed []string `json:"removedPaths"`
	}
	if err := json.Unmarshal([]byte(run(t, "gc", "--cache", cacheDir, "--keep-bundles", "1", "--json", "--grace", "0s")), &rep); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(onlyOld, rep.Removed); diff != "" {
		t.Errorf("gc removed other paths than those only the older system needed (-want +got):\n%s", diff)
	}
	run(t, "verify", cacheDir, "--public-key", pkFile)
	for _, f := range w.FODs() {
		p, err := f.Path(n.StoreDir)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(cacheDir, p.Hash+".narinfo")); err != nil {
			t.Errorf("source %s, which the newer system needs, is gone: %v", p, err)
		}
	}

	// Offline, Nix builds a third variant of libbase from the sources
	// left in the cache, substituting everything else.
	inet.Stop()
	ns := nixtest.NewNetNS(t)
	n.Run(t, "nix-collect-garbage")
	out, err := w.On(n.In(ns)).TryBuild(t.Context(), append(w.Args("", "d3"),
		"--option", "substituters", "file://"+cacheDir, "--option", "trusted-public-keys", pk.String())...)
	if err != nil {
		t.Fatalf("offline build from the collected cache: %v", err)
	}
	if got, err := ns.Command(t.Context(), filepath.Join(out, "bin/hello")).Output(); err != nil || string(got) != w.Greeting("", "d3") {
		t.Errorf("bin/hello = %q, %v; want %q", got, err, w.Greeting("", "d3"))
	}

	// --roots: the newer system's runtime closure, nothing else.
	top := w.OutPaths(t, w.Args("", "d2")...)["toplevel"]
	n.Run(t, "nix-store", "-r", top, "--option", "substituters", "file://"+cacheDir, "--option", "trusted-public-keys", pk.String())
	closure := lines(n.Run(t, "nix-store", "-qR", top))
	roots := filepath.Join(dir, "roots")
	os.WriteFile(roots, []byte(top+"\n"), 0o644)
	run(t, "gc", "--cache", cacheDir, "--roots", roots, "--grace", "0s")
	var left []string
	names, _ := filepath.Glob(filepath.Join(cacheDir, "*.narinfo"))
	for _, name := range names {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(string(data)) {
			if p, ok := strings.CutPrefix(line, "StorePath: "); ok {
				left = append(left, strings.TrimSpace(p))
			}
		}
	}
	slices.Sort(left)
	if diff := cmp.Diff(closure, left); diff != "" {
		t.Errorf("after gc --roots, the cache holds other paths than the root's closure (-want +got):\n%s", diff)
	}
	run(t, "verify", cacheDir, "--public-key", pkFile)
}
