package pack_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/pack"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/server"
)

// TestStructuredAttrs packs, in sources mode, a world whose fetchers have
// structured attrs as nixpkgs' do since late 2025, then offline, with a
// fresh Nix and the bundle served by nix-airgap's server as its only
// substituter, substitutes the toplevel and rebuilds a deep change from
// the bundled sources; and, with no substituter at all, fetches the flat
// sources through the server's hashed mirror, as nixpkgs' fetchurl does
// with NIX_HASHED_MIRRORS.
func TestStructuredAttrs(t *testing.T) {
	f := newWorldFixture(t, nixtest.WorldOptions{StructuredAttrs: true})
	out := filepath.Join(t.TempDir(), "bundle")
	res := f.pack(t, f.targets(t), pack.Options{Options: plan.Options{Mode: role.ModeSources}, Out: out})
	rep := f.verify(t, out)
	want := f.attrsOuts(f.w.RuntimeAttrs()...)
	for _, fod := range f.w.FODs() {
		want = append(want, f.outs[fod.Attr])
	}
	if diff := cmp.Diff(sorted(want), sorted(resultPaths(res))); diff != "" {
		t.Errorf("packed paths (-want +got):\n%s", diff)
	}
	// The URLs and hashes of the structured fetchers are recorded.
	checkProvenance(t, f, rep.Manifest, role.ModeSources)
	for _, attr := range []string{"src", "patch"} {
		if e := entry(t, rep.Manifest, f.outs[attr]); e.Flat == nil {
			t.Errorf("flat source %s has no flat hashes for the hashed mirror", e.Path)
		}
	}

	f.inet.Stop()
	ns := nixtest.NewNetNS(t)
	url := serveIn(t, ns, out)
	t.Run("substitute and rebuild", func(t *testing.T) {
		wipeStore(t, f.n.StoreDir)
		client := nixtest.New(t, nixtest.Options{StoreDir: f.n.StoreDir}).In(ns)
		w := f.w.On(client)
		got, stderr, err := offlineBuild(t.Context(), client, w, url, f.key.Public())
		if err != nil {
			t.Fatalf("unchanged toplevel: %v\n%s", err, stderr)
		}
		if got != f.top || len(built(stderr)) > 0 {
			t.Errorf("unchanged toplevel: got %s, built %v; want %s substituted, nothing built", got, built(stderr), f.top)
		}
		got, stderr, err = offlineBuild(t.Context(), client, w, url, f.key.Public(), w.Args("", "d2")...)
		if err != nil {
			t.Fatalf("deep change: %v\n%s", err, stderr)
		}
		if diff := cmp.Diff([]string{"cc-1.0", "demo-system", "hello-1.0", "libbase-1.0", "libgreet-1.0"}, built(stderr)); diff != "" {
			t.Errorf("deep change: built (-want +got):\n%s", diff)
		}
		if hello, err := ns.Command(t.Context(), filepath.Join(got, "bin/hello")).Output(); err != nil || string(hello) != w.Greeting("", "d2") {
			t.Errorf("deep bin/hello = %q, %v; want %q", hello, err, w.Greeting("", "d2"))
		}
	})
	t.Run("hashed mirror", func(t *testing.T) {
		wipeStore(t, f.n.StoreDir)
		client := nixtest.New(t, nixtest.Options{StoreDir: f.n.StoreDir}).In(ns)
		for _, attr := range []string{"src", "patch"} {
			cmd := client.Command(t.Context(), "nix-build", f.w.File, "-A", attr, "--no-out-link", "--option", "substituters", "")
			cmd.Env = append(cmd.Env, "NIX_HASHED_MIRRORS="+url+"/")
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("%s through the hashed mirror: %v\n%s", attr, err, stderr.String())
			}
			if got := strings.TrimSpace(stdout.String()); got != f.outs[attr] {
				t.Errorf("%s: built %s, want %s", attr, got, f.outs[attr])
			}
			if b := built(stderr.String()); len(b) != 1 {
				t.Errorf("%s: built %v, want its fetcher alone", attr, b)
			}
			if data, err := os.ReadFile(f.outs[attr]); err != nil || string(data) != string(f.w.Files[f.w.FOD(t, attr).File]) {
				t.Errorf("%s: fetched %d bytes, %v; want the source", attr, len(data), err)
			}
		}
	})
}

// serveIn serves dirs with nix-airgap's server inside ns until the test
// ends, and returns its URL.
func serveIn(t *testing.T, ns *nixtest.NetNS, dirs ...string) string {
	t.Helper()
	s, err := server.New(server.Config{Dirs: dirs, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := ns.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-done
		s.Close()
	})
	return "http://" + ln.Addr().String()
}
