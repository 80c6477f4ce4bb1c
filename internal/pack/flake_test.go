package pack_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/pack"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/role"
)

// TestFlake packs a path: flake whose output uses a locked tarball input
// from the Internet, then, offline with a fresh Nix, builds the flake with
// stock nix build and the bundle as its only substituter: Nix substitutes
// the locked input by its narHash and the output from the bundle.
func TestFlake(t *testing.T) {
	f := newFixture(t)
	n := f.n
	system := n.Run(t, "nix", "eval", "--impure", "--raw", "--expr", "builtins.currentSystem")
	const greeting = "hello from foo\n"
	url := f.inet.Add("foo.tar.gz", tarGz(t, map[string]string{"foo/hello.txt": greeting}))
	// bar is an indirect input, found in a global registry online and in
	// the bundle's flake-registry.json offline. (Since Nix 2.29 a flake's
	// inputs resolve only through the global registry and flags, not
	// through the user's registry.)
	barURL := f.inet.Add("bar.tar.gz", tarGz(t, map[string]string{"bar/bar.txt": "bar\n"}))
	onlineRegistry := filepath.Join(t.TempDir(), "registry.json")
	if err := os.WriteFile(onlineRegistry, []byte(`{"version":2,"flakes":[{"from":{"type":"indirect","id":"barlib"},"to":{"type":"tarball","url":"`+barURL+`"}}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "flake")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	flake := `{
  inputs.foo = { url = "` + url + `"; flake = false; };
  inputs.bar = { url = "barlib"; flake = false; };
  outputs = { self, foo, bar }: {
    packages.` + system + `.default = derivation {
      name = "uses-foo";
      system = "` + system + `";
      builder = "/bin/busybox";
      args = [ "sh" "-e" "-c" "mkdir $out; cat ${foo}/hello.txt > $out/greeting" ];
    };
  };
}
`
	if err := os.WriteFile(filepath.Join(dir, "flake.nix"), []byte(flake), 0o644); err != nil {
		t.Fatal(err)
	}
	ref := "path:" + dir
	n.Run(t, "nix", "flake", "lock", ref, "--option", "flake-registry", onlineRegistry)
	targets, err := plan.ParseTargets(n.StoreDir, plan.Args{Installables: []string{ref + "#default"}})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "bundle")
	res := f.pack(t, targets, pack.Options{Options: plan.Options{Mode: role.ModeRuntime}, Out: out})
	inputs := 0
	for _, p := range res.Paths {
		if p.Roles.Has(role.FlakeInput) {
			inputs++
		}
	}
	if inputs != 3 || len(res.Built) != 1 {
		t.Errorf("packed %d flake inputs and built %v; want the flake's source, foo and bar, and the output built", inputs, res.Built)
	}
	rep := f.verify(t, out)
	if len(rep.Manifest.Targets) != 1 || rep.Manifest.Targets[0].Spec != ref+"#default" {
		t.Errorf("manifest targets = %+v", rep.Manifest.Targets)
	}

	f.inet.Stop()
	wipeStore(t, n.StoreDir)
	ns := nixtest.NewNetNS(t)
	client := nixtest.New(t, nixtest.Options{StoreDir: n.StoreDir}).In(ns)
	cmd := client.Command(t.Context(), "nix", "build", ref+"#default", "--no-link", "--json",
		"--option", "substituters", "file://"+out,
		"--option", "trusted-public-keys", f.key.Public().String(),
		"--option", "substitute", "true")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("offline nix build: %v\n%s", err, stderr.String())
	}
	if b := built(stderr.String()); len(b) > 0 {
		t.Errorf("offline nix build built %v, want everything substituted", b)
	}
	target := rep.Manifest.Targets[0].Outputs["out"].String()
	if !strings.Contains(stdout.String(), target) {
		t.Fatalf("nix build printed %s, want %s", stdout.String(), target)
	}
	if got, err := os.ReadFile(filepath.Join(target, "greeting")); err != nil || string(got) != greeting {
		t.Errorf("greeting = %q, %v; want %q", got, err, greeting)
	}
	// The bundle's registry resolves barlib offline to the packed source:
	// read directly, by Nix before 2.25 (later Nix needs the "__final"
	// that serve adds for it), and served, by every Nix.
	prefetch := func(t *testing.T, registry, substituter string) {
		t.Helper()
		wipeStore(t, n.StoreDir)
		client := nixtest.New(t, nixtest.Options{StoreDir: n.StoreDir}).In(ns)
		got, err := client.Output(t.Context(), "nix", "flake", "prefetch", "barlib", "--json",
			"--option", "flake-registry", registry,
			"--option", "substituters", substituter,
			"--option", "trusted-public-keys", f.key.Public().String(),
			"--option", "substitute", "true")
		if err != nil {
			t.Fatalf("offline nix flake prefetch barlib: %v", err)
		}
		var prefetched struct{ StorePath string }
		if err := json.Unmarshal([]byte(got), &prefetched); err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(filepath.Join(prefetched.StorePath, "bar.txt")); err != nil || string(got) != "bar\n" {
			t.Errorf("barlib resolved to %s: bar.txt = %q, %v", prefetched.StorePath, got, err)
		}
	}
	t.Run("registry file", func(t *testing.T) {
		if v, _ := nixtest.Version(); v.AtLeast(2, 25) {
			t.Skipf("%s reads a registry's store path from the file system unless the entry has __final", v)
		}
		prefetch(t, filepath.Join(out, bundle.RegistryName), "file://"+out)
	})
	t.Run("registry served", func(t *testing.T) {
		url := serveIn(t, ns, out)
		prefetch(t, url+"/"+bundle.RegistryName, url)
	})
}

func tarGz(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var b bytes.Buffer
	gz := gzip.NewWriter(&b)
	tw := tar.NewWriter(gz)
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(content))
	}
	tw.Close()
	gz.Close()
	return b.Bytes()
}
