package plan_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/role"
)

// benchExpr is N trivial derivations, every tenth fixed-output, each
// depending on two earlier ones (a graph of depth O(log N), as deep as
// real package sets), and a top that depends on all of them.
const benchExpr = `{ n }:
let
  mk = i: derivation ({
    name = "d${toString i}";
    system = builtins.currentSystem;
    builder = "/bin/busybox";
    args = [ "sh" "-c" "echo ${toString i} > $out" ];
    deps = if i == 0 then [ ] else [ (builtins.elemAt ds (i / 2)) (builtins.elemAt ds (i * 7 / 11)) ];
  } // (if builtins.div i 10 * 10 == i then {
    outputHashMode = "flat"; outputHashAlgo = "sha256";
    outputHash = builtins.hashString "sha256" "${toString i}\n";
  } else { }));
  ds = builtins.genList mk n;
in derivation {
  name = "top";
  system = builtins.currentSystem;
  builder = "/bin/busybox";
  args = [ "sh" "-c" "echo > $out" ];
  deps = ds;
}
`

// BenchmarkPlan plans a generated closure of 10,000 instantiated (not
// built) derivations in build mode with their .drv closure: about 20,000
// paths, read from the .drv files and checked against the store.
func BenchmarkPlan(b *testing.B) {
	const n = 10000
	nx := nixtest.New(b, nixtest.Options{})
	file := filepath.Join(b.TempDir(), "bench.nix")
	if err := os.WriteFile(file, []byte(benchExpr), 0o644); err != nil {
		b.Fatal(err)
	}
	nx.Run(b, "nix-instantiate", file, "--arg", "n", fmt.Sprint(n))
	targets, err := plan.ParseTargets(nx.StoreDir, plan.Args{File: file, NixArgs: []string{"--arg", "n", fmt.Sprint(n)}})
	if err != nil {
		b.Fatal(err)
	}
	for _, opts := range []plan.Options{
		{Mode: role.ModeBuild},
		{Mode: role.ModeBuild, Derivations: true},
	} {
		b.Run(fmt.Sprintf("%s-derivations=%v", opts.Mode, opts.Derivations), func(b *testing.B) {
			p := &plan.Planner{Nix: &nixcli.Runner{Env: nx.Env}, StoreDir: nx.StoreDir}
			var items int
			for b.Loop() {
				pl, err := p.Plan(b.Context(), targets, opts)
				if err != nil {
					b.Fatal(err)
				}
				items = len(pl.Items)
			}
			if min := n + 1; items < min {
				b.Fatalf("plan has %d paths, want at least %d", items, min)
			}
			b.ReportMetric(float64(items), "paths")
		})
	}
}
