package cli_test

import (
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/channel"
	"github.com/nix-airgap/nix-airgap/internal/cli"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
)

// TestPlanNixBuildTargetFlags: targets as nix-build users give them:
// --expr E (-E) with --attr and bare names as attributes of its value,
// -I/--include as Nix's search path, and --show-trace passed to Nix.
func TestPlanNixBuildTargetFlags(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	inet := nixtest.StartInternet(t)
	w := nixtest.NewWorld(t, n, inet, nixtest.WorldOptions{})
	n.Setenv(t)
	t.Setenv("NIX_PATH", "")
	drv := w.Instantiate(t, w.Args("x", "")...)
	dir := filepath.Dir(w.File)
	imported := fmt.Sprintf("import %s { variant = \"x\"; }", w.File)
	for _, tt := range []struct {
		args []string
		spec string // the target's text in plan --json
	}{
		{[]string{"--expr", imported, "--attr", "toplevel"}, "--expr " + strconv.Quote(imported) + " --attr toplevel"},
		{[]string{"-E", "{ variant }: import " + w.File + " { inherit variant; }", "--argstr", "variant", "x", "toplevel"}, ""},
		{[]string{"-I", "w=" + dir, "-E", `import <w> { variant = "x"; }`, "-A", "toplevel"}, `--expr "import <w> { variant = \"x\"; }" --attr toplevel -I w=` + dir},
		{[]string{"--include", "w=" + dir, "--file", "<w>", "-A", "toplevel", "--argstr", "variant", "x"}, "--file <w> --attr toplevel --argstr variant x -I w=" + dir},
	} {
		code, stdout, stderr := run(t, append([]string{"plan", "--json", "--mode", "runtime", "--substituters", ""}, tt.args...)...)
		var got struct {
			Targets []struct {
				Spec    string `json:"spec"`
				DrvPath string `json:"drvPath"`
			} `json:"targets"`
		}
		if code != cli.ExitOK || json.Unmarshal([]byte(stdout), &got) != nil || len(got.Targets) != 1 || got.Targets[0].DrvPath != drv ||
			tt.spec != "" && got.Targets[0].Spec != tt.spec {
			t.Errorf("plan %q: exit %d, targets %+v, stderr %s; want %s (%s)", tt.args, code, got.Targets, stderr, drv, tt.spec)
		}
	}

	// check takes the same target flags: nothing is built, so the
	// target is blocked (its sources are on no source given).
	code, stdout, stderr := run(t, "check", "-I", "w="+dir, "-E", `import <w> { variant = "x"; }`, "-A", "toplevel", "--against-local-store", "--json")
	var checked struct {
		Targets []struct {
			Name  string   `json:"name"`
			Paths []string `json:"paths"`
		} `json:"targets"`
	}
	top := w.OutPaths(t, w.Args("x", "")...)["toplevel"]
	if code != cli.ExitBlocked || json.Unmarshal([]byte(stdout), &checked) != nil || len(checked.Targets) != 1 ||
		checked.Targets[0].Name != `--expr "import <w> { variant = \"x\"; }" --attr toplevel -I w=`+dir || len(checked.Targets[0].Paths) != 1 || checked.Targets[0].Paths[0] != top {
		t.Errorf("check -I -E -A: exit %d, targets %+v, stderr %s; want %d, the target's %s", code, checked.Targets, stderr, cli.ExitBlocked, top)
	}
	// Without -I, <w> is not found; with --show-trace, Nix says how it
	// came to an error.
	if code, _, stderr := run(t, "plan", "-E", "import <w> { }", "-A", "toplevel"); code != cli.ExitNixFailed || !strings.Contains(stderr, "file 'w' was not found in the Nix search path") {
		t.Errorf("plan of <w> without -I: exit %d, stderr %q; want %d, not found", code, stderr, cli.ExitNixFailed)
	}
	bad := []string{"plan", "-E", "let f = x: x.nope; in { a = f { }; }", "-A", "a"}
	for _, trace := range []bool{false, true} {
		args := bad
		if trace {
			args = append(args, "--show-trace")
		}
		code, _, stderr := run(t, args...)
		if code != cli.ExitNixFailed || !strings.Contains(stderr, "attribute 'nope' missing") || strings.Contains(stderr, "from call site") != trace {
			t.Errorf("plan %q: exit %d, stderr %q; want %d, with Nix's trace %v", args, code, stderr, cli.ExitNixFailed, trace)
		}
	}
	if code, _, stderr := run(t, "plan", "--file", w.File, "--expr", "{ }", "-A", "x"); code != cli.ExitUsage || !strings.Contains(stderr, "give --file or --expr, not both") {
		t.Errorf("plan --file --expr: exit %d, stderr %q; want %d", code, stderr, cli.ExitUsage)
	}
}

// TestPackExprChannelInclude: pack records an --expr target by its quoted
// text, finds the same targets at --out again, refuses another
// expression's, and resolves --channel NAME=<w> with -I.
func TestPackExprChannelInclude(t *testing.T) {
	_, tmp, sk := newPlanTest(t)
	t.Setenv("NIX_PATH", "")
	chanDir := filepath.Join(tmp, "chan")
	os.MkdirAll(chanDir, 0o755)
	os.WriteFile(filepath.Join(chanDir, "default.nix"), []byte("{ ... }: { }\n"), 0o644)
	mk := func(name string) string {
		return `derivation { name = "` + name + `"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo ` + name + ` > $out" ]; }`
	}
	out := filepath.Join(tmp, "bundle")
	pack := func(expr string, more ...string) (int, string) {
		t.Helper()
		code, _, stderr := run(t, append([]string{"pack", "--expr", expr, "--mode", "runtime", "--substituters", "", "--secret-key", sk, "--out", out, "--no-progress"}, more...)...)
		return code, stderr
	}
	if code, stderr := pack(mk("exprtarget"), "--channel", "w=<w>"); code == cli.ExitOK || !strings.Contains(stderr, "channel w") {
		t.Errorf("pack --channel w=<w> without -I: exit %d, stderr %q; want a failure naming the channel", code, stderr)
	}
	if code, stderr := pack(mk("exprtarget"), "--channel", "w=<w>", "-I", "w="+chanDir); code != cli.ExitOK {
		t.Fatalf("pack --expr --channel w=<w> -I: exit %d\n%s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(out, channel.File("w"))); err != nil {
		t.Errorf("pack --channel w=<w> -I w=%s: %v", chanDir, err)
	}
	var m struct {
		Targets []struct {
			Spec string `json:"spec"`
		} `json:"targets"`
	}
	data, _ := os.ReadFile(filepath.Join(out, "manifest.json"))
	if err := json.Unmarshal(data, &m); err != nil || len(m.Targets) != 1 || m.Targets[0].Spec != "--expr "+strconv.Quote(mk("exprtarget"))+" -I w="+chanDir {
		t.Errorf("manifest.json targets %+v (%v); want the --expr, quoted, and -I", m.Targets, err)
	}
	if code, stderr := pack(mk("exprtarget"), "--channel", "w=<w>", "-I", "w="+chanDir); code != cli.ExitOK {
		t.Errorf("the same pack again: exit %d\n%s", code, stderr)
	}
	if code, stderr := pack(mk("other")); code != cli.ExitUsage || !strings.Contains(stderr, ": a finished bundle of other targets (--expr ") {
		t.Errorf("pack of another --expr into the bundle: exit %d, stderr %q; want %d, refused", code, stderr, cli.ExitUsage)
	}
}

// TestPlanExtraSubstituters: Nix's --extra-substituters and
// --extra-trusted-public-keys add to the lists in force, Nix's own or
// those --substituters and --public-key give, as Nix's extra- settings
// do: a path built here, packed into a bundle signed with key B and then
// deleted, comes from that bundle when B is an extra key, and is built
// when it is not.
func TestPlanExtraSubstituters(t *testing.T) {
	n, dir, skB := newPlanTest(t)
	pubB := filepath.Join(dir, "key.pub")
	file := busyboxDrv(t, dir, "extra", "echo extra > $out")
	drv := strings.TrimSpace(n.Run(t, "nix-instantiate", file))
	out := strings.TrimSpace(n.Run(t, "nix-store", "--realise", drv))
	bundleDir := filepath.Join(dir, "bundle")
	if code, _, stderr := run(t, "pack", out, "--mode", "runtime", "--substituters", "", "--secret-key", skB, "--out", bundleDir, "--no-progress"); code != cli.ExitOK {
		t.Fatalf("pack: exit %d\n%s", code, stderr)
	}
	n.Run(t, "nix-store", "--delete", out)
	nixCache, err := cache.CreateDir(filepath.Join(dir, "nixs"), n.StoreDir, 40)
	if err != nil {
		t.Fatal(err)
	}
	nixCache.Close()
	other := filepath.Join(dir, "other")
	if code, _, stderr := run(t, "keygen", "--name", "other", "--secret-key", other+".sec", "--public-key", other+".pub"); code != cli.ExitOK {
		t.Fatal(stderr)
	}
	// Nix's own: a cache without the path, and a key that signed nothing.
	otherKey, _ := os.ReadFile(other + ".pub")
	t.Setenv("NIX_CONFIG", "substituters = file://"+nixCache.String()+"\ntrusted-public-keys = "+string(otherKey)+"\n")
	keyB, _ := os.ReadFile(pubB)
	bundleURL, nixURL := "file://"+bundleDir, "file://"+nixCache.String()
	for _, tt := range []struct {
		args      []string
		upstreams []string
		source    string // of out
	}{
		{[]string{"--extra-substituters", bundleURL, "--extra-trusted-public-keys", string(keyB)}, []string{nixURL, bundleURL}, bundleURL},
		{[]string{"--extra-substituters", bundleURL}, []string{nixURL, bundleURL}, "build"},
		{[]string{"--substituters", "", "--extra-substituters", bundleURL, "--public-key", other + ".pub", "--extra-trusted-public-keys", pubB}, []string{bundleURL}, bundleURL},
		{[]string{"--substituters", bundleURL + " " + nixURL, "--extra-substituters", nixURL, "--extra-trusted-public-keys", pubB}, []string{bundleURL, nixURL}, bundleURL},
	} {
		code, stdout, stderr := run(t, append([]string{"plan", "--json", "--mode", "runtime", drv}, tt.args...)...)
		var pl struct {
			Upstreams []string
			Paths     []struct{ Path, Source, Upstream string }
		}
		if code != cli.ExitOK || json.Unmarshal([]byte(stdout), &pl) != nil {
			t.Errorf("plan %q: exit %d\n%s", tt.args, code, stderr)
			continue
		}
		if !slices.Equal(pl.Upstreams, tt.upstreams) {
			t.Errorf("plan %q: upstreams %q, want %q", tt.args, pl.Upstreams, tt.upstreams)
		}
		for _, p := range pl.Paths {
			if p.Path == out && cmp.Or(p.Upstream, p.Source) != tt.source {
				t.Errorf("plan %q: %s from %+v, want %s", tt.args, out, p.Source, tt.source)
			}
		}
	}
	// A bad extra key is named by its flag.
	code, _, stderr := run(t, "plan", out, "--extra-trusted-public-keys", skB)
	if code != cli.ExitUsage || !strings.HasPrefix(stderr, "nix-airgap: plan: --extra-trusted-public-keys "+skB+": this is a secret key") {
		t.Errorf("plan --extra-trusted-public-keys SECRET: exit %d, stderr %q; want %d naming the flag", code, stderr, cli.ExitUsage)
	}
}

// TestPlanImpure: --impure lets Nix evaluate a flake that reads the
// environment, as nix build --impure does; without it the flake sees
// none, as Nix evaluates flakes purely.
func TestPlanImpure(t *testing.T) {
	_, dir, _ := newPlanTest(t)
	flake := filepath.Join(dir, "flake")
	os.MkdirAll(flake, 0o755)
	os.WriteFile(filepath.Join(flake, "flake.nix"), []byte(`{ outputs = { self }: {
  greet = derivation {
    name = "greet-${builtins.getEnv "NIX_AIRGAP_TEST_GREETING"}"; system = "x86_64-linux"; builder = "/bin/busybox"; args = [ "sh" "-c" "echo > $out" ]; };
}; }`), 0o644)
	t.Setenv("NIX_AIRGAP_TEST_GREETING", "hi")
	for _, tt := range []struct {
		args []string
		want string // the end of the target's .drv
	}{
		{[]string{"path:" + flake + "#greet"}, "-greet-.drv"},
		{[]string{"path:" + flake + "#greet", "--impure"}, "-greet-hi.drv"},
		{[]string{"--impure", "--expr", `{ x = derivation { name = "e-${builtins.getEnv "NIX_AIRGAP_TEST_GREETING"}"; system = "x86_64-linux"; builder = "/bin/busybox"; }; }`, "x"}, "-e-hi.drv"},
	} {
		code, stdout, stderr := run(t, append([]string{"plan", "--json", "--mode", "runtime", "--substituters", ""}, tt.args...)...)
		var got struct {
			Targets []struct {
				DrvPath string `json:"drvPath"`
			} `json:"targets"`
		}
		if code != cli.ExitOK || json.Unmarshal([]byte(stdout), &got) != nil || len(got.Targets) != 1 || !strings.HasSuffix(got.Targets[0].DrvPath, tt.want) {
			t.Errorf("plan %q: exit %d, targets %+v, stderr %s; want a .drv ending %s", tt.args, code, got.Targets, stderr, tt.want)
		}
	}
}
