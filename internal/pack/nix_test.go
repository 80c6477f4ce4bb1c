package pack_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/pack"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// fixture is a test world built online, with a packer for its Nix.
type fixture struct {
	n      *nixtest.Nix
	inet   *nixtest.Internet
	w      *nixtest.World
	key    signing.SecretKey
	packer *pack.Packer
	outs   map[string]string // attr → output path
	top    string
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
	key, _, err := signing.Generate("bundle-test-1")
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{n: n, inet: inet, w: w, key: key, outs: w.OutPaths(t)}
	f.top = w.Build(t)
	runner := &nixcli.Runner{Env: n.Env}
	f.packer = &pack.Packer{
		Planner: &plan.Planner{Nix: runner, StoreDir: n.StoreDir, Jobs: 4},
		Log:     testLogger(t),
	}
	return f
}

// offline stops the internet and returns a client with an empty store
// in a new network namespace, and the URL of serve there on dirs.
func (f *fixture) offline(t *testing.T, dirs ...string) (*nixtest.Nix, string) {
	t.Helper()
	f.inet.Stop()
	ns := nixtest.NewNetNS(t)
	wipeStore(t, f.n.StoreDir)
	return nixtest.New(t, nixtest.Options{StoreDir: f.n.StoreDir}).In(ns), serveIn(t, ns, dirs...)
}

// targets are --file default.nix --attr toplevel with extra nix-build
// arguments (w.Args).
func (f *fixture) targets(t *testing.T, nixArgs ...string) []plan.TargetSpec {
	t.Helper()
	ts, err := plan.ParseTargets(f.n.StoreDir, plan.Args{File: f.w.File, Attrs: []string{"toplevel"}, NixArgs: nixArgs})
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

func (f *fixture) pack(t *testing.T, targets []plan.TargetSpec, opts pack.Options) *pack.Result {
	t.Helper()
	if opts.Key == nil {
		opts.Key = &f.key
	}
	res, err := f.packer.Pack(t.Context(), targets, opts)
	if err != nil {
		t.Fatalf("Pack(%s): %v", opts.Out, err)
	}
	return res
}

// verify checks the bundle at src with bundle.Verify, trusting f.key.
func (f *fixture) verify(t *testing.T, src string, against ...string) *bundle.Report {
	t.Helper()
	opts := bundle.VerifyOptions{Keys: signing.NewKeyring(f.key.Public())}
	for _, a := range against {
		opts.Against = append(opts.Against, openDir(t, a))
	}
	rep, err := bundle.Verify(t.Context(), src, opts)
	if err != nil {
		t.Fatalf("verify %s: %v", src, err)
	}
	return rep
}

func resultPaths(res *pack.Result) []string {
	var out []string
	for _, p := range res.Paths {
		out = append(out, p.Path.String())
	}
	return out
}

func resultSources(res *pack.Result) map[string]string {
	out := map[string]string{}
	for _, p := range res.Paths {
		out[p.Path.String()] = p.Source
	}
	return out
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}

func (f *fixture) attrsOuts(attrs ...string) []string {
	var out []string
	for _, a := range attrs {
		out = append(out, f.outs[a])
	}
	return sorted(out)
}

// wipeStore empties the store dir, so that a fresh Nix can use the same
// store dir as an airgapped client that has nothing.
func wipeStore(t *testing.T, dir storepath.Dir) {
	t.Helper()
	ents, err := os.ReadDir(string(dir))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		p := filepath.Join(string(dir), e.Name())
		makeWritable(p)
		if err := os.RemoveAll(p); err != nil {
			t.Fatal(err)
		}
	}
}

func makeWritable(root string) {
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o755)
		}
		return nil
	})
}

var buildingRE = regexp.MustCompile(`(?m)^building '([^']+)'`)

// built lists the derivations a nix-build's stderr says it built, by
// name without the hash.
func built(stderr string) []string {
	var out []string
	for _, m := range buildingRE.FindAllStringSubmatch(stderr, -1) {
		base := filepath.Base(m[1])
		if i := strings.IndexByte(base, '-'); i > 0 {
			base = base[i+1:]
		}
		out = append(out, strings.TrimSuffix(base, ".drv"))
	}
	slices.Sort(out)
	return out
}

// importedBase packs the world's toplevel into tmp/base and imports it
// into a new cache, tmp/site: the site a delta is packed for.
func (f *fixture) importedBase(t *testing.T, tmp string, opts plan.Options) (base, site string) {
	t.Helper()
	base, site = filepath.Join(tmp, "base"), filepath.Join(tmp, "site")
	f.pack(t, f.targets(t), pack.Options{Options: opts, Out: base})
	if _, err := bundle.Import(t.Context(), base, site, bundle.ImportOptions{Keys: signing.NewKeyring(f.key.Public())}); err != nil {
		t.Fatal(err)
	}
	return base, site
}

// substitutes has stock nix-build in client make the toplevel of nixArgs
// from serve at url, offline, with nothing to build (--max-jobs 0), and
// checks that it is want and that its bin/hello prints greeting. what
// names the system in failures.
func (f *fixture) substitutes(t *testing.T, client *nixtest.Nix, url, what, want, greeting string, nixArgs ...string) {
	t.Helper()
	ctx := t.Context()
	out, stderr, err := offlineBuild(ctx, client, f.w.On(client), url, f.key.Public(), slices.Concat(nixArgs, []string{"--max-jobs", "0"})...)
	if err != nil {
		t.Fatalf("%s from serve: %v\n%s", what, err, stderr)
	}
	if out != want || len(built(stderr)) > 0 {
		t.Errorf("%s: got %s, built %v; want %s substituted, nothing built", what, out, built(stderr), want)
	}
	if got, err := client.Command(ctx, filepath.Join(out, "bin/hello")).Output(); err != nil || string(got) != greeting {
		t.Errorf("%s: bin/hello = %q, %v; want %q", what, got, err, greeting)
	}
}

// offlineBuild runs stock nix-build on the world's toplevel in client,
// with bundle as its only substituter, and returns the output path and
// stderr.
func offlineBuild(ctx context.Context, client *nixtest.Nix, w *nixtest.World, bundleURL string, pub signing.PublicKey, args ...string) (string, string, error) {
	all := append([]string{w.File, "-A", "toplevel", "--no-out-link",
		"--option", "substituters", bundleURL,
		"--option", "trusted-public-keys", pub.String(),
		"--option", "narinfo-cache-negative-ttl", "0"}, args...)
	cmd := client.Command(ctx, "nix-build", all...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return strings.TrimSpace(stdout.String()), stderr.String(), err
}

// TestModes packs the world's toplevel in each mode online, then, offline
// with a fresh Nix that has nothing and the bundle as its only
// substituter, checks what stock nix-build can do: substitute the
// unchanged toplevel, build a changed toplevel, and rebuild after a deep
// change exactly what the mode allows.
func TestModes(t *testing.T) {
	f := newFixture(t)
	dirs := map[role.Mode]string{}
	root := t.TempDir()
	for _, mode := range []role.Mode{role.ModeRuntime, role.ModeSources, role.ModeBuild} {
		dir := filepath.Join(root, mode.String())
		res := f.pack(t, f.targets(t), pack.Options{Options: plan.Options{Mode: mode}, Out: dir})
		dirs[mode] = dir
		rep := f.verify(t, dir)
		if !rep.OK() || rep.Manifest.Mode != mode {
			t.Fatalf("%s: verify: %+v", mode, rep.Problems)
		}
		for p, src := range resultSources(res) {
			if src != pack.SourceStore {
				t.Errorf("%s: %s came from %q, want the store", mode, p, src)
			}
		}
		var want []string
		want = append(want, f.attrsOuts(f.w.RuntimeAttrs()...)...)
		if mode != role.ModeRuntime {
			for _, fod := range f.w.FODs() {
				want = append(want, f.outs[fod.Attr])
			}
		}
		if mode == role.ModeBuild {
			want = append(want, f.attrsOuts(f.w.BuildOnlyAttrs()...)...)
		}
		if diff := cmp.Diff(sorted(want), sorted(resultPaths(res))); diff != "" {
			t.Errorf("%s: packed paths (-want +got):\n%s", mode, diff)
		}
		if res.NarBytes == 0 || res.BundleBytes == 0 || res.ID.IsZero() {
			t.Errorf("%s: result counts nothing: %+v", mode, res.Summary())
		}
		if mode != role.ModeRuntime {
			src := entry(t, rep.Manifest, f.outs["src"])
			if src.Flat == nil || !src.Roles.Has(role.Source) {
				t.Errorf("%s: the flat source %s has no flat hashes or role source: %+v", mode, src.Path, src)
			}
		}
		checkProvenance(t, f, rep.Manifest, mode)
	}

	// Offline from here on.
	f.inet.Stop()
	ns := nixtest.NewNetNS(t)
	tests := []struct {
		mode      role.Mode
		deepBuilt []string // nil: the deep change must fail
	}{
		{role.ModeBuild, []string{"demo-system", "hello-1.0", "libbase-1.0", "libgreet-1.0"}},
		{role.ModeSources, []string{"cc-1.0", "demo-system", "hello-1.0", "libbase-1.0", "libgreet-1.0"}},
		{role.ModeRuntime, nil},
	}
	for _, tt := range tests {
		t.Run(tt.mode.String(), func(t *testing.T) {
			wipeStore(t, f.n.StoreDir)
			client := nixtest.New(t, nixtest.Options{StoreDir: f.n.StoreDir}).In(ns)
			w := f.w.On(client)
			url := "file://" + dirs[tt.mode]
			pub := f.key.Public()
			ctx := t.Context()

			out, stderr, err := offlineBuild(ctx, client, w, url, pub)
			if err != nil {
				t.Fatalf("unchanged toplevel: %v\n%s", err, stderr)
			}
			if out != f.top || len(built(stderr)) > 0 {
				t.Errorf("unchanged toplevel: got %s, built %v; want %s substituted, nothing built\n%s", out, built(stderr), f.top, stderr)
			}
			hello, err := ns.Command(ctx, filepath.Join(out, "bin/hello")).Output()
			if err != nil || string(hello) != w.Greeting("", "") {
				t.Errorf("bin/hello = %q, %v; want %q", hello, err, w.Greeting("", ""))
			}

			_, stderr, err = offlineBuild(ctx, client, w, url, pub, w.Args("v2", "")...)
			if err != nil {
				t.Fatalf("variant: %v\n%s", err, stderr)
			}
			if diff := cmp.Diff([]string{"demo-system"}, built(stderr)); diff != "" {
				t.Errorf("variant: built (-want +got):\n%s", diff)
			}

			out, stderr, err = offlineBuild(ctx, client, w, url, pub, w.Args("", "d2")...)
			if tt.deepBuilt == nil {
				if err == nil {
					t.Fatalf("deep change built %s offline from a runtime bundle, want a failure to fetch sources", out)
				}
				// The sources are FODs fetched from the (unreachable)
				// Internet.
				if !strings.Contains(stderr, "unable to download") {
					t.Errorf("deep change failed, but not fetching sources:\n%s", stderr)
				}
				return
			}
			if err != nil {
				t.Fatalf("deep change: %v\n%s", err, stderr)
			}
			if diff := cmp.Diff(tt.deepBuilt, built(stderr)); diff != "" {
				t.Errorf("deep change: built (-want +got):\n%s", diff)
			}
			hello, err = ns.Command(ctx, filepath.Join(out, "bin/hello")).Output()
			if err != nil || string(hello) != w.Greeting("", "d2") {
				t.Errorf("deep bin/hello = %q, %v; want %q", hello, err, w.Greeting("", "d2"))
			}
		})
	}
	// The same bundle served by nix-airgap's server inside the airgap.
	t.Run("build over http", func(t *testing.T) {
		wipeStore(t, f.n.StoreDir)
		client := nixtest.New(t, nixtest.Options{StoreDir: f.n.StoreDir}).In(ns)
		url := serveIn(t, ns, dirs[role.ModeBuild])
		w := f.w.On(client)
		out, stderr, err := offlineBuild(t.Context(), client, w, url, f.key.Public(), w.Args("", "d2")...)
		if err != nil {
			t.Fatalf("deep change over http: %v\n%s", err, stderr)
		}
		if diff := cmp.Diff([]string{"demo-system", "hello-1.0", "libbase-1.0", "libgreet-1.0"}, built(stderr)); diff != "" {
			t.Errorf("deep change over http: built (-want +got):\n%s", diff)
		}
		if hello, err := ns.Command(t.Context(), filepath.Join(out, "bin/hello")).Output(); err != nil || string(hello) != w.Greeting("", "d2") {
			t.Errorf("bin/hello = %q, %v", hello, err)
		}
	})
}

// checkProvenance checks that every path of a bundle packed from f's
// store says it came from the store, and that every FOD output packed in
// a mode that reads the build closure names its URL and hash.
func checkProvenance(t *testing.T, f *fixture, m *bundle.Manifest, mode role.Mode) {
	t.Helper()
	fods := map[string]nixtest.FOD{}
	for _, fod := range f.w.FODs() {
		fods[f.outs[fod.Attr]] = fod
	}
	for _, e := range m.Paths {
		if e.Origin == nil || e.Origin.From != bundle.FromStore {
			t.Errorf("%s: %s: origin %+v, want the store", mode, e.Path, e.Origin)
		}
		fod, isFOD := fods[e.Path.String()]
		if !isFOD || mode == role.ModeRuntime {
			if e.Fetch != nil {
				t.Errorf("%s: %s: fetch %+v, want none", mode, e.Path, e.Fetch)
			}
			continue
		}
		want := &bundle.Fetch{URLs: []string{f.w.URL(fod)}, Method: fod.Method, Hash: fod.Hash}
		if diff := cmp.Diff(want, e.Fetch, cmp.Comparer(func(a, b storepath.Hash) bool { return a.Equal(b) })); diff != "" {
			t.Errorf("%s: %s: fetch (-want +got):\n%s", mode, e.Path, diff)
		}
	}
}

func entry(t *testing.T, m *bundle.Manifest, path string) bundle.PathEntry {
	t.Helper()
	for _, e := range m.Paths {
		if e.Path.String() == path {
			return e
		}
	}
	t.Fatalf("manifest has no %s", path)
	return bundle.PathEntry{}
}
