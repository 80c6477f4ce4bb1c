package check_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/check"
	"github.com/nix-airgap/nix-airgap/internal/cli"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/pack"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// mainEnv makes the test binary run the nix-airgap command line, so that
// a test can run it inside a network namespace.
const mainEnv = "NIX_AIRGAP_CHECK_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) == "1" {
		err := cli.Run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)
		os.Exit(cli.ExitCode(err))
	}
	os.Exit(m.Run())
}

type fixture struct {
	n        *nixtest.Nix
	inet     *nixtest.Internet
	w        *nixtest.World
	runner   *nixcli.Runner
	outs     map[string]string // attr → output path, default world
	deepOuts map[string]string // attr → output path, deep change
	deepArgs []string
	deepDrv  storepath.Path
	fods     []storepath.Path
	fodURLs  map[storepath.Path]string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newWorldFixture(t, nixtest.WorldOptions{})
}

func newWorldFixture(t *testing.T, opts nixtest.WorldOptions) *fixture {
	t.Helper()
	n := nixtest.New(t, nixtest.Options{})
	inet := nixtest.StartInternet(t)
	w := nixtest.NewWorld(t, n, inet, opts)
	f := &fixture{n: n, inet: inet, w: w, runner: &nixcli.Runner{Env: n.Env}, fodURLs: map[storepath.Path]string{}}
	w.Build(t)
	f.outs = w.OutPaths(t)
	f.deepArgs = w.Args("", "deep1")
	f.deepOuts = w.OutPaths(t, f.deepArgs...)
	f.deepDrv = f.path(t, w.Instantiate(t, f.deepArgs...))
	for _, fod := range w.FODs() {
		p, err := fod.Path(n.StoreDir)
		if err != nil {
			t.Fatal(err)
		}
		f.fods = append(f.fods, p)
		f.fodURLs[p] = w.URL(fod)
	}
	return f
}

func (f *fixture) path(t *testing.T, s string) storepath.Path {
	t.Helper()
	p, err := f.n.StoreDir.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (f *fixture) attrPaths(t *testing.T, outs map[string]string, attrs ...string) []storepath.Path {
	t.Helper()
	var ps []storepath.Path
	for _, a := range attrs {
		ps = append(ps, f.path(t, outs[a]))
	}
	return ps
}

// pack writes a bundle of the default world's toplevel in mode to out.
func (f *fixture) pack(t *testing.T, mode role.Mode, out string) string {
	t.Helper()
	f.packResult(t, pack.Options{Options: plan.Options{Mode: mode}, Out: out})
	return out
}

func (f *fixture) packResult(t *testing.T, opts pack.Options) *pack.Result {
	t.Helper()
	ts, err := plan.ParseTargets(f.n.StoreDir, plan.Args{File: f.w.File, Attrs: []string{"toplevel"}})
	if err != nil {
		t.Fatal(err)
	}
	p := &pack.Packer{Planner: &plan.Planner{Nix: f.runner, StoreDir: f.n.StoreDir, Jobs: 4}}
	res, err := p.Pack(t.Context(), ts, opts)
	if err != nil {
		t.Fatalf("pack %s: %v", opts.Mode, err)
	}
	return res
}

func (f *fixture) check(t *testing.T, targets []check.Target, client *http.Client, sources ...string) (*check.Result, error) {
	t.Helper()
	c := &check.Checker{StoreDir: f.n.StoreDir, Local: f.runner, Jobs: 8}
	for _, s := range sources {
		src, err := check.OpenSource(t.Context(), s, f.n.StoreDir, client)
		if err != nil {
			t.Fatal(err)
		}
		c.Sources = append(c.Sources, src)
	}
	res, err := c.Check(t.Context(), targets)
	if err != nil {
		t.Fatalf("Check against %v: %v", sources, err)
	}
	return res, res.Err()
}

// needed returns the needed paths of class c.
func needed(res *check.Result, c check.Class) []storepath.Path {
	var ps []storepath.Path
	for _, p := range res.Paths {
		if p.Needed && p.Class == c && p.Kind == check.KindOutput {
			ps = append(ps, p.Path)
		}
	}
	return ps
}

func wantPaths(t *testing.T, what string, got, want []storepath.Path) {
	t.Helper()
	s := func(ps []storepath.Path) []string {
		out := make([]string, len(ps))
		for i, p := range ps {
			out[i] = p.String()
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	if diff := cmp.Diff(s(want), s(got)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", what, diff)
	}
}

// checkDeepAgainstRuntime checks the deep change against a runtime
// bundle: blocked, with the FODs as root causes, each named by its URL.
func (f *fixture) checkDeepAgainstRuntime(t *testing.T, runtimeDir string) {
	t.Helper()
	deep := []check.Target{{Name: "deep", DrvPath: f.deepDrv}}
	deepRuntime := f.attrPaths(t, f.deepOuts, f.w.RuntimeAttrs()...)
	cc := f.path(t, f.outs["cc"])
	res, err := f.check(t, deep, nil, runtimeDir)
	if !errors.Is(err, check.ErrBlocked) {
		t.Fatalf("err = %v, want ErrBlocked", err)
	}
	wantPaths(t, "blocked", needed(res, check.Blocked), slices.Concat(deepRuntime, []storepath.Path{cc}, f.fods))
	var causes []storepath.Path
	for _, c := range res.RootCauses {
		causes = append(causes, c.Path)
		if c.FixedOutput == nil || !slices.Equal(c.FixedOutput.URLs, []string{f.fodURLs[c.Path]}) {
			t.Errorf("root cause %s: %+v, want URL %s", c.Path, c.FixedOutput, f.fodURLs[c.Path])
		}
		if !slices.Equal(c.Targets, []string{"deep"}) {
			t.Errorf("root cause %s: targets %q, want [deep]", c.Path, c.Targets)
		}
	}
	wantPaths(t, "root causes", causes, f.fods)
	wantPaths(t, "cc blocked by", res.Path(cc).BlockedBy, f.attrPaths(t, f.outs, "bootstrapTools", "busybox"))
	var text bytes.Buffer
	if err := res.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, u := range f.fodURLs {
		if !strings.Contains(text.String(), "url "+u+"\n") {
			t.Errorf("text report lacks %s:\n%s", u, text.String())
		}
	}
	t.Logf("report:\n%s", text.String())
}

// TestCheckStructuredAttrs checks a deep change of a world whose fetchers
// have structured attrs, as nixpkgs' since late 2025, against a runtime
// bundle: the root causes are named by the URLs in their __json.
func TestCheckStructuredAttrs(t *testing.T) {
	nixtest.Require(t)
	f := newWorldFixture(t, nixtest.WorldOptions{StructuredAttrs: true})
	f.checkDeepAgainstRuntime(t, f.pack(t, role.ModeRuntime, filepath.Join(t.TempDir(), "runtime")))
}

// TestCheckWorld checks the test world's toplevel, unchanged and with a
// deep change, against bundles of every mode and against caches.
func TestCheckWorld(t *testing.T) {
	nixtest.Require(t)
	f := newFixture(t)
	tmp := t.TempDir()
	runtimeDir := f.pack(t, role.ModeRuntime, filepath.Join(tmp, "runtime"))
	sourcesTar := f.pack(t, role.ModeSources, filepath.Join(tmp, "sources.tar"))
	buildDir := f.pack(t, role.ModeBuild, filepath.Join(tmp, "build"))
	deep := []check.Target{{Name: "deep", DrvPath: f.deepDrv}}
	deepRuntime := f.attrPaths(t, f.deepOuts, f.w.RuntimeAttrs()...)
	cc := f.path(t, f.outs["cc"])

	t.Run("pack check of a bundle and its bases", func(t *testing.T) {
		// Packed --since the runtime bundle, the new one is empty: complete
		// only together with its base.
		out := filepath.Join(tmp, "since")
		pr := f.packResult(t, pack.Options{Options: plan.Options{Mode: role.ModeRuntime}, Out: out, Since: []string{runtimeDir}})
		res, err := check.CheckBundle(t.Context(), pr.Plan, []string{out}, nil, f.runner, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := res.Err(); !errors.Is(err, check.ErrBlocked) {
			t.Errorf("alone: err = %v (summary %+v), want ErrBlocked", err, res.Summary)
		}
		bases, err := bundle.OpenBases(t.Context(), []string{filepath.Join(runtimeDir, "manifest.json")})
		if err != nil {
			t.Fatal(err)
		}
		res, err = check.CheckBundle(t.Context(), pr.Plan, []string{out}, bases, f.runner, nil)
		if err == nil {
			err = res.Err()
		}
		if err != nil || res.Summary.ToBuild != 0 || res.Summary.Available != len(f.w.RuntimeAttrs()) {
			t.Errorf("with its base: err = %v, summary %+v; want the runtime closure available", err, res.Summary)
		}
	})

	t.Run("unchanged against runtime bundle", func(t *testing.T) {
		drv := f.path(t, f.w.Instantiate(t))
		res, err := f.check(t, []check.Target{{Name: "top", DrvPath: drv}}, nil, runtimeDir)
		if err != nil {
			t.Fatal(err)
		}
		wantPaths(t, "available", needed(res, check.Available), f.attrPaths(t, f.outs, f.w.RuntimeAttrs()...))
		if s := res.Summary; s.ToBuild != 0 || s.Blocked != 0 || s.NotNeeded == 0 || s.DownloadBytes == 0 {
			t.Errorf("summary %+v: want nothing to build or blocked, unneeded cc and sources, bytes to download", s)
		}
		if pr := res.Path(cc); pr == nil || pr.Class != check.Blocked || pr.Needed {
			t.Errorf("cc: %+v, want blocked but not needed", pr)
		}
	})

	t.Run("deep change against runtime bundle", func(t *testing.T) {
		f.checkDeepAgainstRuntime(t, runtimeDir)
	})

	t.Run("deep change against sources bundle tar", func(t *testing.T) {
		res, err := f.check(t, deep, nil, sourcesTar)
		if err != nil {
			t.Fatal(err)
		}
		wantPaths(t, "to build", needed(res, check.Buildable), append(slices.Clone(deepRuntime), cc))
		for _, p := range f.fods {
			if pr := res.Path(p); pr.Class != check.Available || !pr.Needed || pr.Via != sourcesTar {
				t.Errorf("source %s: %+v, want needed, available from %s", p, pr, sourcesTar)
			}
		}
		if res.Summary.ToBuild != len(deepRuntime)+1 {
			t.Errorf("summary %+v: want %d to build", res.Summary, len(deepRuntime)+1)
		}
	})

	t.Run("deep change against build bundle", func(t *testing.T) {
		res, err := f.check(t, deep, nil, buildDir)
		if err != nil {
			t.Fatal(err)
		}
		wantPaths(t, "to build", needed(res, check.Buildable), deepRuntime)
		if pr := res.Path(cc); pr.Class != check.Available || !pr.Needed {
			t.Errorf("cc: %+v, want needed and available", pr)
		}
	})

	// A plain cache (nix copy) of every output but the patch.
	missing := f.path(t, f.outs["patch"])
	partial := filepath.Join(tmp, "partial")
	var all []string
	for a, p := range f.outs {
		if a != "patch" {
			all = append(all, p)
		}
	}
	f.n.Run(t, "nix", append([]string{"copy", "--to", "file://" + partial}, all...)...)

	t.Run("cache missing one source", func(t *testing.T) {
		res, err := f.check(t, deep, nil, "file://"+partial)
		if !errors.Is(err, check.ErrBlocked) {
			t.Fatalf("err = %v, want ErrBlocked", err)
		}
		if len(res.RootCauses) != 1 || res.RootCauses[0].Path != missing {
			t.Fatalf("root causes %+v, want only %s", res.RootCauses, missing)
		}
		// The patch blocks libgreet, and so hello and the toplevel.
		wantPaths(t, "blocked", needed(res, check.Blocked),
			append(f.attrPaths(t, f.deepOuts, "libgreet", "hello", "toplevel"), missing))
	})

	t.Run("HTTP source opens no other connection", func(t *testing.T) {
		srv := httptest.NewServer(http.FileServer(http.Dir(partial)))
		defer srv.Close()
		var (
			mu    sync.Mutex
			dials []string
		)
		dialer := &net.Dialer{}
		client := &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				mu.Lock()
				dials = append(dials, addr)
				mu.Unlock()
				return dialer.DialContext(ctx, network, addr)
			},
		}}
		run := func() []byte {
			before := len(f.inet.Requests())
			res, err := f.check(t, deep, client, srv.URL)
			if !errors.Is(err, check.ErrBlocked) {
				t.Fatalf("err = %v, want ErrBlocked", err)
			}
			if after := f.inet.Requests(); len(after) != before {
				t.Errorf("the check asked the internet: %v", after[before:])
			}
			js, err := json.Marshal(res)
			if err != nil {
				t.Fatal(err)
			}
			return js
		}
		online := run()
		f.inet.Stop()
		offline := run()
		if diff := cmp.Diff(string(online), string(offline)); diff != "" {
			t.Errorf("result with the internet (-) and without (+):\n%s", diff)
		}
		host := strings.TrimPrefix(srv.URL, "http://")
		mu.Lock()
		defer mu.Unlock()
		if len(dials) == 0 {
			t.Error("no connection to the HTTP source")
		}
		for _, d := range dials {
			if d != host {
				t.Errorf("dialled %s, want only the source %s", d, host)
			}
		}
	})

	t.Run("command line in the airgap", func(t *testing.T) {
		ns := nixtest.NewNetNS(t)
		l, err := ns.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.FileServer(http.Dir(partial))}
		go srv.Serve(l)
		defer srv.Close()
		args := append([]string{"check", "--json", "--file", f.w.File, "--attr", "toplevel"}, f.deepArgs...)
		cmdline := func(n *nixtest.Nix, against ...string) (map[string]any, int) {
			t.Helper()
			self, err := os.Executable()
			if err != nil {
				t.Fatal(err)
			}
			a := slices.Clone(args)
			for _, s := range against {
				a = append(a, "--against", s)
			}
			cmd := n.Command(t.Context(), self, a...)
			cmd.Env = append(cmd.Env, mainEnv+"=1")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err = cmd.Run()
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				t.Fatal(err)
			}
			var v map[string]any
			if err := json.Unmarshal(stdout.Bytes(), &v); err != nil {
				t.Fatalf("check %v: %v\nstdout:\n%s\nstderr:\n%s", a, err, stdout.String(), stderr.String())
			}
			return v, cmd.ProcessState.ExitCode()
		}
		// The same cache, as a directory on the host (the internet is
		// stopped by now, but the directory needs no network) and over
		// HTTP inside the airgap.
		host, hostCode := cmdline(f.n, partial)
		air, airCode := cmdline(f.n.In(ns), "http://"+l.Addr().String())
		want := cli.ExitCode(&check.BlockedError{Result: &check.Result{}})
		if hostCode != want || airCode != want {
			t.Errorf("exit codes %d on the host, %d in the airgap; want %d", hostCode, airCode, want)
		}
		for _, k := range []string{"ok", "summary", "rootCauses", "targets"} {
			if diff := cmp.Diff(host[k], air[k]); diff != "" {
				t.Errorf("%s differs between a directory on the host (-) and HTTP in the airgap (+):\n%s", k, diff)
			}
		}
		classes := func(v map[string]any) map[string]string {
			m := map[string]string{}
			for _, p := range v["paths"].([]any) {
				p := p.(map[string]any)
				m[p["path"].(string)] = p["class"].(string)
			}
			return m
		}
		if diff := cmp.Diff(classes(host), classes(air)); diff != "" {
			t.Errorf("classes differ (-host +airgap):\n%s", diff)
		}
		causes := air["rootCauses"].([]any)
		if len(causes) != 1 || causes[0].(map[string]any)["path"] != missing.String() {
			t.Errorf("root causes in the airgap: %v, want only %s", causes, missing)
		}
	})
}
