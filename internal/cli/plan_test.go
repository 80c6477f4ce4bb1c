package cli_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/cli"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/storage/s3test"
)

// TestPlanCommand runs plan on the test world through the command line,
// with the two-word --argstr, and checks the table, the JSON and
// --no-build.
func TestPlanCommand(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	inet := nixtest.StartInternet(t)
	w := nixtest.NewWorld(t, n, inet, nixtest.WorldOptions{})
	n.Setenv(t)
	drv := w.Instantiate(t, w.Args("x", "")...)
	outs := w.OutPaths(t, w.Args("x", "")...)

	args := []string{"plan", "--file", w.File, "--attr", "toplevel", "--argstr", "variant", "x", "--mode", "sources"}
	code, stdout, stderr := run(t, append(args, "--json")...)
	if code != 0 {
		t.Fatalf("plan --json: exit %d: %s", code, stderr)
	}
	checkJSONScheme(t, "plan", stdout)
	var got struct {
		Mode    string `json:"mode"`
		Targets []struct {
			Spec    string            `json:"spec"`
			DrvPath string            `json:"drvPath"`
			Outputs map[string]string `json:"outputs"`
		} `json:"targets"`
		Paths []struct {
			Path            string   `json:"path"`
			Roles           []string `json:"roles"`
			Source          string   `json:"source"`
			ReferencesKnown bool     `json:"referencesKnown"`
		} `json:"paths"`
		Summary struct {
			ToBuild int `json:"toBuild"`
		} `json:"summary"`
	}
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("plan --json: %v\n%s", err, stdout)
	}
	if got.Mode != "sources" || len(got.Targets) != 1 || got.Targets[0].DrvPath != drv || got.Targets[0].Outputs["out"] != outs["toplevel"] {
		t.Errorf("plan --json: mode %q, targets %+v; want sources and %s", got.Mode, got.Targets, drv)
	}
	// Nothing is built: the toplevel and the five FODs, all to build.
	if len(got.Paths) != 1+len(w.FODs()) || got.Summary.ToBuild != len(got.Paths) {
		t.Errorf("plan --json: paths %+v, summary to build %d; want the toplevel and %d FODs", got.Paths, got.Summary.ToBuild, len(w.FODs()))
	}
	for _, p := range got.Paths {
		if p.Source != "build" || p.ReferencesKnown {
			t.Errorf("plan --json: %+v, want source build with unknown references", p)
		}
	}

	code, stdout, stderr = run(t, args...)
	if code != 0 {
		t.Fatalf("plan: exit %d: %s", code, stderr)
	}
	t.Logf("plan table:\n%s", stdout)
	for _, want := range []string{"mode sources", drv, "RUNTIME", "SOURCE", "BUILD-ONLY", "paths to build"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("plan table lacks %q:\n%s", want, stdout)
		}
	}

	// --file F ATTR, as nix build takes it, is --file F --attr ATTR, not a
	// flake named ATTR.
	code, stdout2, stderr := run(t, "plan", "--file", w.File, "toplevel", "--argstr", "variant", "x", "--mode", "sources")
	if code != 0 || stdout2 != stdout {
		t.Errorf("plan --file F toplevel: exit %d, stderr %s, stdout\n%s\nwant the plan of --attr toplevel", code, stderr, stdout2)
	}

	// --paths lists every path, as nix-store -qR does, with its roles,
	// source and size.
	_, listed, _ := run(t, append(args, "--paths")...)
	for _, p := range got.Paths {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(p.Path) + ` +` + strings.Join(p.Roles, ",") + ` +build +-$`).MatchString(listed) {
			t.Errorf("plan --paths does not list %s with its roles and source:\n%s", p.Path, listed)
		}
	}

	// Nix's names: --store (a store read in place), --substituters and
	// --trusted-public-keys, as nix.conf spells them.
	code, stdout2, stderr = run(t, append(args, "--store", "auto", "--substituters", "", "--trusted-public-keys", "")...)
	if code != 0 || stdout2 != stdout {
		t.Errorf("plan --store auto: exit %d, stderr %s; want the same plan", code, stderr)
	}
	for _, store := range []string{t.TempDir(), "local?root=/tmp/x", "ssh://host", "file:///srv/cache"} {
		if code, _, stderr := run(t, append(args, "--store", store)...); code != cli.ExitUsage || !strings.Contains(stderr, "reads store paths where they are") {
			t.Errorf("plan --store %s: exit %d, stderr %q; want it refused", store, code, stderr)
		}
	}

	code, _, stderr = run(t, append(args, "--no-build")...)
	if code == 0 || !strings.Contains(stderr, "--no-build") || !strings.Contains(stderr, outs["toplevel"]) {
		t.Errorf("plan --no-build: exit %d, stderr %s; want a failure naming %s", code, stderr, outs["toplevel"])
	}

	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"plan", "--mode", "everything", w.File}, cli.ExitUsage, "everything"},
		{[]string{"plan", "--attr", "toplevel"}, cli.ExitUsage, "--attr needs --file"},
		{[]string{"plan", "--file", w.File, "--attr", "toplevel", "--arg", "variant"}, cli.ExitUsage, "needs two words"},
		{[]string{"plan", "--file", w.File, "--attr", "nosuchattr"}, cli.ExitFailure, "nosuchattr"},
		{[]string{"plan", "--help"}, cli.ExitOK, ""},
	} {
		code, _, stderr := run(t, tt.args...)
		// Nix failures may get a code of their own; any but 0 and usage do.
		ok := code == tt.code || (tt.code == cli.ExitFailure && code != cli.ExitOK && code != cli.ExitUsage)
		if !ok || !strings.Contains(stderr, tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d mentioning %q", tt.args, code, stderr, tt.code, tt.want)
		}
	}
}

// TestPlanPathWithoutDeriver: a store path nix-store --add made has no
// deriver; plan says so, rather than naming a deriver "/-", and of many
// such paths says so once, with their count and the first few.
func TestPlanPathWithoutDeriver(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	n.Setenv(t)
	var paths []string
	for i := range 5 {
		file := filepath.Join(t.TempDir(), fmt.Sprintf("notes-%d.txt", i))
		os.WriteFile(file, fmt.Appendf(nil, "notes %d\n", i), 0o644)
		paths = append(paths, strings.TrimSpace(n.Run(t, "nix-store", "--add", file)))
	}
	code, _, stderr := run(t, "plan", paths[0])
	if code != cli.ExitOK || !strings.Contains(stderr, "warning: target path has no deriver recorded") || strings.Contains(stderr, "/-") {
		t.Errorf("plan of a path nix-store --add made: exit %d, stderr %q; want 0 and a warning that it has no deriver", code, stderr)
	}
	code, _, stderr = run(t, append([]string{"plan"}, paths...)...)
	if code != cli.ExitOK || strings.Count(stderr, "no deriver recorded") != 1 || !strings.Contains(stderr, "warning: 5 target paths have no deriver recorded") ||
		!strings.Contains(stderr, "and 2 more") || strings.Count(stderr, "-notes-") != 3 {
		t.Errorf("plan of 5 paths nix-store --add made: exit %d, stderr %q; want 0 and one warning naming 3 of them and the count", code, stderr)
	}
}

// TestPlanResultLink: as nix build and nix path-info do, plan takes
// ./result, a link nix-build left, and a file in a store path for the
// store path, in a directory with no flake.nix above it, and brings no
// flake source along.
func TestPlanResultLink(t *testing.T) {
	n, dir, _ := newPlanTest(t)
	file := busyboxDrv(t, dir, "one", "mkdir -p $out/bin; echo one > $out/bin/one")
	link := filepath.Join(dir, "result")
	out := n.Run(t, "nix-build", file, "--out-link", link)
	t.Chdir(dir)
	for _, target := range []string{"./result", link, out + "/bin/one"} {
		code, stdout, stderr := run(t, "plan", "--json", target)
		var pl struct {
			Targets []struct{ Spec string }
			Paths   []struct {
				Path  string
				Roles []string
			}
		}
		if code != cli.ExitOK {
			t.Errorf("plan %s: exit %d, stderr:\n%s", target, code, stderr)
			continue
		}
		if err := json.Unmarshal([]byte(stdout), &pl); err != nil {
			t.Fatal(err)
		}
		if len(pl.Targets) != 1 || pl.Targets[0].Spec != out {
			t.Errorf("plan %s: targets %+v, want %s", target, pl.Targets, out)
		}
		for _, p := range pl.Paths {
			if slices.Contains(p.Roles, "flake-input") {
				t.Errorf("plan %s: a flake input %s in the plan", target, p.Path)
			}
		}
	}
}

// TestPlanAbsentTargetPath: an output path named as a target that is
// not in the store is warned of, once, when an upstream cache has it
// (its build closure is not included); when nothing has it, the error
// alone says so, without that warning before it.
func TestPlanAbsentTargetPath(t *testing.T) {
	n, dir, sk := newPlanTest(t)
	file := busyboxDrv(t, dir, "gone", "echo gone > $out")
	out := n.Run(t, "nix-build", "--no-out-link", file)
	bundleDir := filepath.Join(dir, "bundle")
	if code, _, stderr := run(t, "pack", out, "--mode", "runtime", "--substituters", "", "--secret-key", sk, "--out", bundleDir, "--no-progress"); code != cli.ExitOK {
		t.Fatalf("pack: exit %d\n%s", code, stderr)
	}
	n.Run(t, "nix-store", "--delete", out)
	const warning = "warning: target path not in the store: its build closure is not included"
	code, _, stderr := run(t, "plan", out, "--substituters", "file://"+bundleDir, "--public-key", filepath.Join(dir, "key.pub"))
	if code != cli.ExitOK || strings.Count(stderr, warning) != 1 {
		t.Errorf("plan of a path an upstream cache has: exit %d, stderr %q; want 0 and the warning once", code, stderr)
	}
	code, _, stderr = run(t, "plan", out, "--substituters", "")
	if code != cli.ExitMissing || stderr != "nix-airgap: plan target "+out+": store path is not valid, no upstream cache has it, and no known derivation makes it (mistyped?)\n" {
		t.Errorf("plan of a path nothing has: exit %d, stderr %q; want %d and the error alone", code, stderr, cli.ExitMissing)
	}
}

// busyboxDrv writes DIR/NAME.nix, the derivation NAME-1.0 whose builder
// runs script in busybox's sh, and returns its name.
func busyboxDrv(t *testing.T, dir, name, script string) string {
	t.Helper()
	file := filepath.Join(dir, name+".nix")
	expr := fmt.Sprintf(`derivation { name = "%s-1.0"; system = builtins.currentSystem; builder = "/bin/busybox"; args = [ "sh" "-c" %q ]; }`, name, script)
	if err := os.WriteFile(file, []byte(expr), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// newPlanTest is a test Nix on the environment, a temp dir, and the
// secret key of a pair keygen wrote there, for pack.
func newPlanTest(t *testing.T) (n *nixtest.Nix, dir, sk string) {
	t.Helper()
	n = nixtest.New(t, nixtest.Options{})
	n.Setenv(t)
	dir = t.TempDir()
	sk = filepath.Join(dir, "key.sec")
	if code, _, stderr := run(t, "keygen", "--name", "t", "--secret-key", sk, "--public-key", filepath.Join(dir, "key.pub")); code != cli.ExitOK {
		t.Fatal(stderr)
	}
	return n, dir, sk
}

// TestPlanErrorsSayPlan runs plan on wrong inputs: each error starts
// "plan:" or "plan SUBJECT:", as every command's errors start with the
// command, and names what it is about once; pack says the planner's
// errors in the same words, after "pack:".
func TestPlanErrorsSayPlan(t *testing.T) {
	n, dir, sk := newPlanTest(t)
	file := filepath.Join(dir, "t.nix")
	os.WriteFile(file, []byte("{ three = 3; }\n"), 0o644)
	nope := string(n.StoreDir) + "/00000000000000000000000000000000-nope"
	start := regexp.MustCompile(`^nix-airgap: plan( [^:]+)?: `)
	for _, tt := range []struct {
		args []string
		want string // the start of the line after "nix-airgap: "
	}{
		{[]string{"--file", filepath.Join(dir, "missing.nix"), "--attr", "a"}, "plan: target --file " + filepath.Join(dir, "missing.nix") + ": no such file or directory"},
		{[]string{"--file", file, "--attr", "three"}, "plan target --file "},
		{[]string{"--file", file, "--attr", "nope"}, "plan target --file "},
		{[]string{nope}, "plan target " + nope + ": store path is not valid"},
		{[]string{nope + ".drv"}, "plan: read derivation closure: read derivation " + nope + ".drv: no such file or directory"},
		{[]string{"--paths-from", filepath.Join(dir, "missing")}, "plan: read paths " + filepath.Join(dir, "missing") + ": no such file or directory"},
		{[]string{nope, "--since", filepath.Join(dir, "missing")}, "plan: --since: base "},
		{[]string{nope, "--substituters", "http://127.0.0.1:1"}, "plan: open http://127.0.0.1:1/nix-cache-info: "},
	} {
		code, _, stderr := run(t, append([]string{"plan", "--substituters", ""}, tt.args...)...)
		var line string // the error, after any warnings
		for l := range strings.Lines(stderr) {
			if strings.HasPrefix(l, "nix-airgap: ") && line == "" {
				line = strings.TrimSuffix(l, "\n")
			}
		}
		if code == cli.ExitOK || !start.MatchString(line) || !strings.HasPrefix(line, "nix-airgap: "+tt.want) {
			t.Errorf("plan %q: exit %d, want a failure starting %q:\n%s", tt.args, code, tt.want, stderr)
		}
		if r := repeated(line); r != "" || strings.Count(line, nope) > 1 {
			t.Errorf("plan %q: says a word or the path twice (%q): %s", tt.args, r, line)
		}
		if strings.HasPrefix(tt.want, "plan target "+nope) {
			args := append([]string{"pack", "--substituters", "", "--secret-key", sk, "--out", filepath.Join(dir, "out"), "--no-progress"}, tt.args...)
			if _, _, stderr := run(t, args...); !strings.Contains("\n"+stderr, "\nnix-airgap: pack: "+tt.want) {
				t.Errorf("%q: want the planner's words after pack's, %q:\n%s", args, "pack: "+tt.want, stderr)
			}
		}
	}
}

// TestSubstituterDown: a binary cache that does not answer, given to
// plan or pack as a substituter or to check as a source, fails the
// command at once, not after tries, with exit 75 (try again later), an
// error naming its URL and a hint for a binary cache; a name that does
// not resolve the same. Of several substituters, one down is skipped
// with a warning, as Nix skips it, and the plan goes on with the others.
func TestSubstituterDown(t *testing.T) {
	n, dir, sk := newPlanTest(t)
	file := filepath.Join(dir, "hello.txt")
	os.WriteFile(file, []byte("hello\n"), 0o644)
	target := strings.TrimSpace(n.Run(t, "nix-store", "--add", file))
	up, err := cache.CreateDir(filepath.Join(dir, "up"), n.StoreDir, 40)
	if err != nil {
		t.Fatal(err)
	}
	up.Close()
	addr := s3test.RefusedAddr(t)
	down := "http://" + addr
	const hint = "\nThe binary cache did not answer: check that its server runs and that the URL's host and port are right, then run the same command again\n"
	refused := "open " + down + "/nix-cache-info: dial tcp " + addr + ": connect: connection refused"
	for _, tt := range []struct {
		args []string
		want string // stderr
	}{
		{[]string{"plan", target, "--substituters", down}, "nix-airgap: plan: " + refused + hint},
		{[]string{"plan", target, "--substituter", down, "--substituter", down + "/other"},
			"nix-airgap: plan: " + refused + "\nopen " + down + "/other/nix-cache-info: dial tcp " + addr + ": connect: connection refused" + hint},
		{[]string{"pack", target, "--substituters", down, "--secret-key", sk, "--out", filepath.Join(dir, "out"), "--no-progress"}, "nix-airgap: pack: " + refused + hint},
		{[]string{"check", target, "--against", down}, "nix-airgap: check: " + refused + hint},
	} {
		start := time.Now()
		code, stdout, stderr := run(t, tt.args...)
		took := time.Since(start)
		if code != cli.ExitUnavailable || stderr != tt.want {
			t.Errorf("%q: exit %d, want %d and %q:\n%s%s", tt.args, code, cli.ExitUnavailable, tt.want, stdout, stderr)
		}
		// Nix tries a refused substituter for more than four seconds.
		if took > 3*time.Second {
			t.Errorf("%q: took %s, want it to fail at once", tt.args, took)
		}
	}

	// A name that does not resolve (.invalid never does, RFC 6761) is
	// a cache that does not answer too.
	code, _, stderr := run(t, "plan", target, "--substituters", "http://nix-airgap-test.invalid")
	if code != cli.ExitUnavailable || !strings.HasPrefix(stderr, "nix-airgap: plan: open http://nix-airgap-test.invalid/nix-cache-info: dial tcp: lookup nix-airgap-test.invalid") || !strings.HasSuffix(stderr, hint) {
		t.Errorf("plan with a name that does not resolve: exit %d, want %d:\n%s", code, cli.ExitUnavailable, stderr)
	}

	// One of two down: a warning naming it, and a plan from the other.
	code, stdout, stderr := run(t, "plan", target, "--substituters", down+" file://"+up.String(), "--json")
	var got struct {
		Upstreams []string `json:"upstreams"`
	}
	if code != cli.ExitOK || json.Unmarshal([]byte(stdout), &got) != nil || !slices.Equal(got.Upstreams, []string{"file://" + up.String()}) {
		t.Errorf("plan with one substituter of two down: exit %d, upstreams %q; want 0 and the other\n%s%s", code, got.Upstreams, stdout, stderr)
	}
	if !strings.Contains(stderr, "skipping a substituter that did not answer") || !strings.Contains(stderr, refused) {
		t.Errorf("plan with one substituter of two down: stderr %q, want a warning naming %s", stderr, down)
	}
	// Nix's own substituters all down: warned of, and planned from the
	// store, as Nix goes on without them.
	t.Setenv("NIX_CONFIG", os.Getenv("NIX_CONFIG")+"\nsubstituters = "+down+"\n")
	code, stdout, stderr = run(t, "plan", target, "--json")
	got.Upstreams = nil
	if code != cli.ExitOK || json.Unmarshal([]byte(stdout), &got) != nil || len(got.Upstreams) != 0 || !strings.Contains(stderr, refused) {
		t.Errorf("plan with Nix's only substituter down: exit %d, upstreams %q; want 0, none, and a warning naming it\n%s%s", code, got.Upstreams, stdout, stderr)
	}
	// One that answers but is no cache is a mistake to fix, not skipped.
	none := "file://" + filepath.Join(dir, "none")
	code, _, stderr = run(t, "plan", target, "--substituters", none+" file://"+up.String())
	if code != cli.ExitMissing || !strings.HasPrefix(stderr, "nix-airgap: plan: substituter "+none+": ") {
		t.Errorf("plan with a substituter that is no cache: exit %d, want %d naming it:\n%s", code, cli.ExitMissing, stderr)
	}
}
