package check_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/check"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
)

// benchExpr is a closure of layers × width trivial derivations, each
// needing three of the layer below, over width fixed-output ones at the
// bottom, and one top derivation needing the last layer.
const benchExpr = `
{ layers, width }:
let
  mk = name: deps: derivation {
    inherit name deps;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo > $out" ];
  };
  fod = i: derivation {
    name = "src-${toString i}";
    system = builtins.currentSystem;
    builder = "builtin:fetchurl";
    url = "http://example.invalid/src-${toString i}.tar";
    outputHashMode = "flat";
    outputHashAlgo = "sha256";
    outputHash = builtins.hashString "sha256" "src-${toString i}";
  };
  layer = l: builtins.genList (i:
    if l == 0 then fod i
    else let below = layerAt (l - 1); in
      mk "p-${toString l}-${toString i}" [
        (builtins.elemAt below i)
        (let x = i * 7 + 1; in builtins.elemAt below (x - width * (builtins.div x width)))
        (builtins.elemAt below (width - 1 - i))
      ]) width;
  layers' = builtins.genList layer layers;
  layerAt = builtins.elemAt layers';
in mk "top" (layerAt (layers - 1))
`

// BenchmarkCheck10k checks a closure of 10,001 derivations against an
// empty cache: every path is read, looked up and classified, and the
// width fixed-output ones at the bottom block everything.
func BenchmarkCheck10k(b *testing.B) {
	nixtest.Require(b)
	n := nixtest.New(b, nixtest.Options{})
	dir := b.TempDir()
	file := filepath.Join(dir, "bench.nix")
	if err := os.WriteFile(file, []byte(benchExpr), 0o644); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	drv := n.Run(b, "nix-instantiate", file, "--arg", "layers", "100", "--arg", "width", "100")
	b.Logf("nix-instantiate of 10,001 derivations: %s", time.Since(start).Round(time.Millisecond))
	empty := filepath.Join(dir, "empty")
	c, err := cache.CreateDir(empty, n.StoreDir, 40)
	if err != nil {
		b.Fatal(err)
	}
	c.Close()
	top, err := n.StoreDir.Parse(drv)
	if err != nil {
		b.Fatal(err)
	}
	src, err := check.OpenSource(b.Context(), "file://"+empty, n.StoreDir, nil)
	if err != nil {
		b.Fatal(err)
	}
	ch := &check.Checker{StoreDir: n.StoreDir, Sources: []check.Source{src}, Local: &nixcli.Runner{Env: n.Env}}
	if os.Getenv("CHECK_BENCH_LOG") != "" {
		ch.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	var res *check.Result
	for b.Loop() {
		if res, err = ch.Check(b.Context(), []check.Target{{Name: "top", DrvPath: top}}); err != nil {
			b.Fatal(err)
		}
	}
	if got := len(res.Paths); got < 10_001 {
		b.Fatalf("%d paths, want at least 10,001", got)
	}
	if s := res.Summary; s.Blocked != 10_001 || len(res.RootCauses) != 100 {
		b.Fatalf("summary %+v with %d root causes, want 10,001 blocked by 100", s, len(res.RootCauses))
	}
	b.ReportMetric(float64(len(res.Paths)), "paths")
}
