package plan_test

import (
	"bytes"
	"errors"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// worldFixture is a test world with the sets of paths plans must find.
type worldFixture struct {
	n        *nixtest.Nix
	w        *nixtest.World
	planner  *plan.Planner
	outs     map[string]string // attr → output path
	drv      string            // toplevel .drv
	drvs     []string          // nix-store -qR of drv
	runtime  []string          // the runtime attrs' outputs
	fods     []string          // the FODs' outputs
	allOuts  []string          // every attr's output
	fileSpec []plan.TargetSpec // --file default.nix --attr toplevel
}

func newWorld(t *testing.T) *worldFixture {
	t.Helper()
	n := nixtest.New(t, nixtest.Options{})
	inet := nixtest.StartInternet(t)
	w := nixtest.NewWorld(t, n, inet, nixtest.WorldOptions{})
	f := &worldFixture{n: n, w: w, outs: w.OutPaths(t)}
	f.planner = &plan.Planner{Nix: &nixcli.Runner{Env: n.Env}, StoreDir: n.StoreDir, Jobs: 4}
	f.drv = w.Instantiate(t)
	f.drvs = strings.Fields(n.Run(t, "nix-store", "-qR", f.drv))
	for _, a := range w.RuntimeAttrs() {
		f.runtime = append(f.runtime, f.outs[a])
	}
	for _, fod := range w.FODs() {
		p, err := fod.Path(n.StoreDir)
		if err != nil {
			t.Fatal(err)
		}
		if p.String() != f.outs[fod.Attr] {
			t.Fatalf("FOD %s: path %s, nix says %s", fod.Attr, p, f.outs[fod.Attr])
		}
		f.fods = append(f.fods, p.String())
	}
	f.allOuts = slices.Collect(maps.Values(f.outs))
	var err error
	f.fileSpec, err = plan.ParseTargets(n.StoreDir, plan.Args{File: w.File, Attrs: []string{"toplevel"}})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func union(sets ...[]string) []string {
	var out []string
	for _, s := range sets {
		out = append(out, s...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// paths lists the plan's items (with a role in roles, if not 0) and
// their sources as "store", "build" or the upstream URL.
func paths(pl *plan.Plan, roles role.Set) ([]string, map[string]string) {
	var out []string
	src := map[string]string{}
	for _, it := range pl.Items {
		if roles != 0 && it.Roles&roles == 0 {
			continue
		}
		out = append(out, it.Path.String())
		s := it.Source.Kind.String()
		if it.Source.Kind == plan.FromUpstream {
			s = it.Source.URL
		}
		src[it.Path.String()] = s
	}
	return out, src
}

func (f *worldFixture) plan(t *testing.T, targets []plan.TargetSpec, opts plan.Options) *plan.Plan {
	t.Helper()
	pl, err := f.planner.Plan(t.Context(), targets, opts)
	if err != nil {
		t.Fatalf("Plan(%v, %+v): %v", targets, opts, err)
	}
	return pl
}

func wantSet(t *testing.T, what string, got, want []string) {
	t.Helper()
	if diff := cmp.Diff(union(want), union(got)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", what, diff)
	}
}

func wantSources(t *testing.T, src map[string]string, paths []string, want string) {
	t.Helper()
	for _, p := range paths {
		if src[p] != want {
			t.Errorf("source of %s = %q, want %q", p, src[p], want)
		}
	}
}

// checkModes plans targets in every mode after the world is built and
// checks the exact sets, roles and sources.
func (f *worldFixture) checkModes(t *testing.T, targets []plan.TargetSpec) {
	t.Helper()
	pl := f.plan(t, targets, plan.Options{Mode: role.ModeRuntime})
	got, src := paths(pl, 0)
	wantSet(t, "runtime mode", got, f.runtime)
	wantSources(t, src, f.runtime, "store")

	pl = f.plan(t, targets, plan.Options{Mode: role.ModeSources})
	got, src = paths(pl, 0)
	wantSet(t, "sources mode", got, union(f.runtime, f.fods))
	wantSources(t, src, got, "store")
	gotSrc, _ := paths(pl, role.Source)
	wantSet(t, "sources mode, role source", gotSrc, f.fods)
	gotRun, _ := paths(pl, role.Runtime)
	wantSet(t, "sources mode, role runtime", gotRun, f.runtime)

	pl = f.plan(t, targets, plan.Options{Mode: role.ModeBuild})
	got, src = paths(pl, 0)
	wantSet(t, "build mode", got, f.allOuts)
	wantSources(t, src, got, "store")
	cc := f.outs["cc"]
	if it := pl.Item(mustParse(t, f.n.StoreDir, cc)); it == nil || it.Roles != role.Build {
		t.Errorf("build mode: cc %s = %+v, want role build only", cc, it)
	}

	sum := pl.Summary()
	if len(sum.Targets) != 1 {
		t.Fatalf("build mode: summary targets = %+v, want one", sum.Targets)
	}
	ts := sum.Targets[0]
	if ts.Runtime.Paths != len(f.runtime) || ts.Source.Paths != len(f.fods) || ts.BuildOnly.Paths != 1 || ts.Total.Paths != len(f.allOuts) || ts.Total.NarSize == 0 {
		t.Errorf("build mode: summary = %+v, want %d runtime, %d source, 1 build-only", ts, len(f.runtime), len(f.fods))
	}
	if sum.Sources[0].Paths != len(f.allOuts) || sum.FileSize == 0 || sum.ToBuild != 0 {
		t.Errorf("build mode: summary sources %+v, bundle size %d, to build %d", sum.Sources, sum.FileSize, sum.ToBuild)
	}

	pl = f.plan(t, targets, plan.Options{Mode: role.ModeBuild, Derivations: true})
	got, _ = paths(pl, 0)
	wantSet(t, "build mode with derivations", got, union(f.allOuts, f.drvs))
	gotDrv, _ := paths(pl, role.Derivation)
	wantSet(t, "build mode with derivations, role derivation", gotDrv, f.drvs)

	pl = f.plan(t, targets, plan.Options{Mode: role.ModeRuntime, Derivations: true})
	got, _ = paths(pl, 0)
	wantSet(t, "runtime mode with derivations", got, union(f.runtime, f.drvs))
}

func mustParse(t *testing.T, dir storepath.Dir, s string) storepath.Path {
	t.Helper()
	p, err := dir.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPlanWorld plans the test world before and after fetching and
// building it, with every kind of target, and with an upstream cache.
func TestPlanWorld(t *testing.T) {
	f := newWorld(t)
	n, w := f.n, f.w
	dir := n.StoreDir
	top := f.outs["toplevel"]

	t.Run("unbuilt", func(t *testing.T) {
		pl := f.plan(t, f.fileSpec, plan.Options{Mode: role.ModeSources})
		got, src := paths(pl, 0)
		wantSet(t, "sources mode", got, union([]string{top}, f.fods))
		wantSources(t, src, got, "build")
		it := pl.Item(mustParse(t, dir, top))
		if it == nil || it.ReferencesKnown() || it.DrvPath.String() != f.drv {
			t.Errorf("unbuilt toplevel = %+v, want to build from %s with unknown references", it, f.drv)
		}
		if len(pl.Targets) != 1 || pl.Targets[0].DrvPath.String() != f.drv || pl.Targets[0].Outputs["out"].String() != top {
			t.Errorf("targets = %+v, want %s with out %s", pl.Targets, f.drv, top)
		}

		pl = f.plan(t, f.fileSpec, plan.Options{Mode: role.ModeBuild})
		got, src = paths(pl, 0)
		wantSet(t, "build mode", got, f.allOuts)
		wantSources(t, src, got, "build")

		_, err := f.planner.Plan(t.Context(), f.fileSpec, plan.Options{Mode: role.ModeBuild, NoBuild: true})
		var missing *plan.MissingError
		if !errors.As(err, &missing) || !errors.Is(err, plan.ErrMissing) {
			t.Fatalf("--no-build error = %v, want a *MissingError", err)
		}
		var missed []string
		for _, it := range missing.Items {
			missed = append(missed, it.Path.String())
		}
		wantSet(t, "--no-build missing", missed, f.allOuts)
	})

	t.Run("sources fetched", func(t *testing.T) {
		args := []string{"--no-out-link", w.File}
		for _, fod := range w.FODs() {
			args = append(args, "-A", fod.Attr)
		}
		n.Run(t, "nix-build", args...)
		pl := f.plan(t, f.fileSpec, plan.Options{Mode: role.ModeSources})
		_, src := paths(pl, 0)
		wantSources(t, src, f.fods, "store")
		wantSources(t, src, []string{top}, "build")
	})

	w.Build(t)
	drvTarget, err := plan.ParseTarget(dir, f.drv)
	if err != nil {
		t.Fatal(err)
	}
	outTarget, err := plan.ParseTarget(dir, top)
	if err != nil {
		t.Fatal(err)
	}
	list := filepath.Join(t.TempDir(), "store-paths")
	if err := os.WriteFile(list, []byte("# the system\n"+top+"\n\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("xz", "-k", list).CombinedOutput(); err != nil {
		t.Fatalf("xz: %v: %s", err, out)
	}
	for _, tt := range []struct {
		name string
		args plan.Args
	}{
		{"file", plan.Args{File: w.File, Attrs: []string{"toplevel"}}},
		{"drv", plan.Args{Installables: []string{drvTarget.Text}}},
		{"drv with output", plan.Args{Installables: []string{f.drv + "!out"}}},
		{"output path", plan.Args{Installables: []string{outTarget.Text}}},
		{"paths-from", plan.Args{PathsFrom: []string{list}}},
		{"paths-from xz", plan.Args{PathsFrom: []string{list + ".xz"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			targets, err := plan.ParseTargets(dir, tt.args)
			if err != nil {
				t.Fatal(err)
			}
			f.checkModes(t, targets)
		})
	}

	t.Run("closure in the store", func(t *testing.T) {
		// Targets all in the store cost one closure query, and no
		// validity check; one that is not makes the planner check each.
		var log bytes.Buffer
		p := *f.planner
		p.Nix = &nixcli.Runner{Env: n.Env, Log: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))}
		pl, err := p.Plan(t.Context(), []plan.TargetSpec{outTarget}, plan.Options{Mode: role.ModeRuntime})
		if err != nil {
			t.Fatal(err)
		}
		got, src := paths(pl, 0)
		wantSet(t, "runtime mode", got, f.runtime)
		wantSources(t, src, got, "store")
		if strings.Contains(log.String(), "--check-validity") || strings.Count(log.String(), `run nix" cmd="nix-store --query --requisites`) != 1 {
			t.Errorf("plan of a path in the store ran, want one closure query and no validity check:\n%s", log.String())
		}

		log.Reset()
		gone := string(dir) + "/00000000000000000000000000000000-gone"
		goneTarget, err := plan.ParseTarget(dir, gone)
		if err != nil {
			t.Fatal(err)
		}
		pl, err = p.Plan(t.Context(), []plan.TargetSpec{outTarget, goneTarget}, plan.Options{Mode: role.ModeRuntime})
		if err != nil {
			t.Fatal(err)
		}
		got, src = paths(pl, 0)
		wantSet(t, "runtime mode, one target missing", got, append([]string{gone}, f.runtime...))
		wantSources(t, src, f.runtime, "store")
		wantSources(t, src, []string{gone}, "build")
		if !strings.Contains(log.String(), "--check-validity") {
			t.Errorf("plan of a missing path checked no validity:\n%s", log.String())
		}
	})

	t.Run("upstream", func(t *testing.T) {
		sk, pk, err := signing.Generate("upstream-1")
		if err != nil {
			t.Fatal(err)
		}
		keyFile := filepath.Join(t.TempDir(), "key.sec")
		if err := os.WriteFile(keyFile, []byte(sk.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		cacheDir := filepath.Join(t.TempDir(), "cache")
		n.Run(t, "nix", "store", "sign", "-k", keyFile, "-r", top)
		n.Run(t, "nix", "copy", "--to", "file://"+cacheDir, top)
		// The store loses the toplevel and hello; libgreet and libbase
		// stay, so they must come from the store, the others from the
		// cache.
		n.Run(t, "nix-store", "--delete", top, f.outs["hello"])
		up, err := plan.OpenUpstream(t.Context(), "file://"+cacheDir, f.n.StoreDir, nil)
		if err != nil {
			t.Fatal(err)
		}

		trusting := *f.planner
		trusting.Upstreams = []plan.Upstream{up}
		trusting.TrustedKeys = signing.NewKeyring(pk)
		pl, err := trusting.Plan(t.Context(), f.fileSpec, plan.Options{Mode: role.ModeRuntime})
		if err != nil {
			t.Fatal(err)
		}
		got, srcs := paths(pl, 0)
		wantSet(t, "runtime mode with upstream", got, f.runtime)
		wantSources(t, srcs, []string{top, f.outs["hello"]}, "file://"+cacheDir)
		wantSources(t, srcs, []string{f.outs["libgreet"], f.outs["libbase"]}, "store")
		if it := pl.Item(mustParse(t, dir, top)); it == nil || it.NarInfo == nil || it.FileSize == 0 || len(it.References) != 2 {
			t.Errorf("upstream toplevel item = %+v, want its narinfo, size and two references", it)
		}
		sum := pl.Summary()
		if sum.Sources[1].Source != "file://"+cacheDir || sum.Sources[1].Paths != 2 || sum.Sources[0].Paths != 2 {
			t.Errorf("summary sources = %+v, want 2 from the store and 2 from the cache", sum.Sources)
		}

		// Unsigned narinfos are not trusted: the paths must be built.
		untrusting := trusting
		untrusting.TrustedKeys = nil
		pl, err = untrusting.Plan(t.Context(), f.fileSpec, plan.Options{Mode: role.ModeRuntime})
		if err != nil {
			t.Fatal(err)
		}
		got, srcs = paths(pl, 0)
		wantSet(t, "runtime mode with an untrusted upstream", got, []string{top})
		wantSources(t, srcs, got, "build")

		_, err = untrusting.Plan(t.Context(), f.fileSpec, plan.Options{Mode: role.ModeBuild, NoBuild: true})
		var missing *plan.MissingError
		if !errors.As(err, &missing) {
			t.Fatalf("--no-build error = %v, want a *MissingError", err)
		}
		var missed []string
		for _, it := range missing.Items {
			missed = append(missed, it.Path.String())
		}
		wantSet(t, "--no-build missing", missed, []string{top, f.outs["hello"]})
		if !strings.Contains(err.Error(), top) {
			t.Errorf("--no-build error %q does not name %s", err, top)
		}
		w.Build(t)
	})

	t.Run("flake", func(t *testing.T) {
		f.checkFlake(t)
	})

	t.Run("evaluation error", func(t *testing.T) {
		targets, err := plan.ParseTargets(dir, plan.Args{File: w.File, Attrs: []string{"nosuchattr"}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.planner.Plan(t.Context(), targets, plan.Options{})
		var exit *nixcli.ExitError
		if !errors.As(err, &exit) || !strings.Contains(err.Error(), "nosuchattr") {
			t.Errorf("Plan of a missing attribute: %v, want Nix's error", err)
		}
	})
}

const depFlake = `{ outputs = { self }: { value = "from-dep"; }; }`

// worldFlake wraps the world; it uses dep through the registry (an
// indirect input), and has a NixOS-like configuration.
const worldFlake = `{
  inputs.dep.url = "dep";
  outputs = { self, dep }: let w = import ./default.nix { }; in {
    packages.SYSTEM = { inherit (w) toplevel; default = w.toplevel; };
    nixosConfigurations.test.config.system.build.toplevel = w.toplevel;
  };
}`

func (f *worldFixture) checkFlake(t *testing.T) {
	n, w := f.n, f.w
	root := t.TempDir()
	system := strings.Trim(n.Run(t, "nix-instantiate", "--eval", "--expr", "builtins.currentSystem"), `"`)
	src, err := os.ReadFile(w.File)
	if err != nil {
		t.Fatal(err)
	}
	// Pure evaluation has no builtins.currentSystem.
	expr := strings.ReplaceAll(string(src), "builtins.currentSystem", `"`+system+`"`)
	// indirect is the world again, named through the registry as
	// flake:world.
	depDir, flakeDir, indirectDir := filepath.Join(root, "dep"), filepath.Join(root, "world"), filepath.Join(root, "indirect")
	reg := func(id, dir string) string {
		return `{"from": {"type": "indirect", "id": "` + id + `"}, "to": {"type": "path", "path": "` + dir + `"}}`
	}
	for name, content := range map[string]string{
		filepath.Join(depDir, "flake.nix"):               depFlake,
		filepath.Join(flakeDir, "default.nix"):           expr,
		filepath.Join(flakeDir, "flake.nix"):             strings.ReplaceAll(worldFlake, "SYSTEM", system),
		filepath.Join(indirectDir, "default.nix"):        expr,
		filepath.Join(indirectDir, "flake.nix"):          strings.ReplaceAll(worldFlake, "SYSTEM", system),
		filepath.Join(n.Root, "etc/empty-registry.json"): `{"version": 2, "flakes": [` + reg("dep", depDir) + `, ` + reg("world", indirectDir) + `]}`,
	} {
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// registry takes flake:world's entry from its metadata. That is the
	// packed source only if no lock file was written on the way (Nix
	// 2.34 names the source from before the lock file it writes): every
	// Nix refuses to write one for an indirect reference. Plan says so,
	// what to lock where, and Nix's own words.
	targets, err := plan.ParseTargets(n.StoreDir, plan.Args{Installables: []string{"flake:world#toplevel"}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.planner.Plan(t.Context(), targets, plan.Options{Mode: role.ModeBuild})
	var exit *nixcli.ExitError
	if !errors.Is(err, nixcli.ErrLockNotWritten) || !errors.As(err, &exit) ||
		!strings.Contains(err.Error(), "plan flake flake:world: the flake has no lock file, or one that lacks inputs, ") ||
		!strings.Contains(err.Error(), "run `nix flake lock path:"+indirectDir+"` first") ||
		!strings.Contains(err.Error(), "cannot write modified lock file of flake 'flake:world'") {
		t.Fatalf("Plan of flake:world, unlocked: %v, want Nix's refusal to write its lock file, and nix flake lock path:%s to run", err, indirectDir)
	}
	if _, err := os.Stat(filepath.Join(indirectDir, "flake.lock")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Plan of flake:world wrote %s/flake.lock: %v", indirectDir, err)
	}
	n.Run(t, "nix", "flake", "lock", "path:"+indirectDir)
	ref := "path:" + flakeDir
	for _, tc := range []struct {
		inst, dir string
		ids       []string // the registry's ids
	}{
		{ref + "#toplevel", flakeDir, []string{"dep"}},
		{ref + "#nixosConfigurations.test", flakeDir, []string{"dep"}},
		{"flake:world#toplevel", indirectDir, []string{"dep", "world"}},
	} {
		inst := tc.inst
		targets, err := plan.ParseTargets(n.StoreDir, plan.Args{Installables: []string{inst}})
		if err != nil {
			t.Fatal(err)
		}
		pl := f.plan(t, targets, plan.Options{Mode: role.ModeBuild})
		if len(pl.Targets) != 1 || pl.Targets[0].DrvPath.String() != f.drv {
			t.Fatalf("%s: targets = %+v, want the world's %s", inst, pl.Targets, f.drv)
		}
		inputs, src := paths(pl, role.FlakeInput)
		wantSources(t, src, inputs, "store")
		if len(inputs) != 2 {
			t.Errorf("%s: flake inputs = %v, want the flake's and dep's sources", inst, inputs)
		}
		// Each says, for show, which flake it is, locked, and its hash.
		var urls []string
		for _, it := range pl.Items {
			if !it.Roles.Has(role.FlakeInput) {
				continue
			}
			if it.Fetch == nil || it.Fetch.Method != storepath.Recursive || len(it.Fetch.URLs) != 1 || it.Fetch.Hash.String() != it.NarHash.String() {
				t.Errorf("%s: flake input %s: fetch %+v, want its locked reference and NAR hash %s", inst, it.Path, it.Fetch, it.NarHash)
				continue
			}
			urls = append(urls, it.Fetch.URLs[0])
		}
		slices.Sort(urls)
		if len(urls) != 2 || !strings.HasPrefix(urls[0], "path:"+depDir) || !strings.HasPrefix(urls[1], "path:"+tc.dir) {
			t.Errorf("%s: flake input URLs %q, want path:%s and path:%s", inst, urls, depDir, tc.dir)
		}
		got, _ := paths(pl, 0)
		wantSet(t, inst+": build mode", got, union(f.allOuts, inputs))
		var ids []string
		for _, e := range pl.FlakeRegistry {
			ids = append(ids, e.From.Attrs["id"].(string))
			// The entry names the source pack packs, the one with the
			// lock file Nix just wrote: its path and NAR hash.
			it := pl.Item(e.Source)
			if e.To.Attrs["type"] != "path" || e.To.Attrs["path"] != e.Source.String() || !slices.Contains(inputs, e.Source.String()) ||
				it == nil || e.To.Attrs["narHash"] != it.NarHash.SRI() {
				t.Errorf("%s: registry entry = %+v, want %s → its packed source %v", inst, e, e.From.Attrs["id"], inputs)
			}
		}
		if !slices.Equal(ids, tc.ids) {
			t.Errorf("%s: registry ids = %q, want %q", inst, ids, tc.ids)
		}
	}
}
