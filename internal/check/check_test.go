package check_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/check"
	"github.com/nix-airgap/nix-airgap/internal/derivation"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

var update = flag.Bool("update", false, "rewrite golden files")

// synth writes derivations into a directory used as a store dir, without
// Nix, and fills a cache directory for them.
type synth struct {
	t     testing.TB
	dir   storepath.Dir
	cache *cache.Cache
	drvs  map[string]storepath.Path            // name → .drv
	outs  map[string]map[string]storepath.Path // name → output → path
}

func newSynth(t testing.TB) *synth {
	t.Helper()
	root := t.TempDir()
	dir, err := storepath.ParseDir(filepath.Join(root, "store"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(string(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	c, err := cache.CreateDir(filepath.Join(root, "cache"), dir, 40)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &synth{t: t, dir: dir, cache: c, drvs: map[string]storepath.Path{}, outs: map[string]map[string]storepath.Path{}}
}

func sha(s string) storepath.Hash {
	sum := sha256.Sum256([]byte(s))
	h, _ := storepath.NewHash(storepath.SHA256, sum[:])
	return h
}

// path makes a store path named name whose hash part depends only on
// name, not on the (temporary) store dir, so golden files are stable.
func (s *synth) path(name string) storepath.Path {
	s.t.Helper()
	sum := sha256.Sum256([]byte(name))
	h, err := storepath.NewHash(storepath.SHA1, sum[:20])
	if err != nil {
		s.t.Fatal(err)
	}
	return storepath.Path{Dir: s.dir, Hash: h.Nix32(), Name: name}
}

type input struct {
	name    string
	outputs []string
}

// drv writes a derivation. fixed is "" or the hash mode and algo of a
// fixed-output one ("sha256" flat, "r:sha256" recursive), whose hash is
// sha(name).
func (s *synth) drv(name, fixed string, inputs []input, srcs []storepath.Path, outputs ...string) storepath.Path {
	s.t.Helper()
	srcs = slices.SortedFunc(slices.Values(srcs), storepath.Compare)
	d := &derivation.Derivation{
		StoreDir: s.dir, Outputs: map[string]derivation.Output{}, InputDrvs: map[storepath.Path][]string{},
		InputSrcs: srcs, Platform: "x86_64-linux", Builder: "/bin/sh",
		Env: map[string]string{"name": name},
	}
	outs := map[string]storepath.Path{}
	if fixed != "" {
		d.Builder = "builtin:fetchurl"
		d.Env["url"] = "http://example.org/" + name
		// Not the predicted path, which depends on the store dir.
		p := s.path(name)
		d.Outputs["out"] = derivation.Output{Path: p, HashAlgo: fixed, Hash: sha(name).Hex()}
		outs["out"] = p
	} else {
		if len(outputs) == 0 {
			outputs = []string{"out"}
		}
		for _, o := range outputs {
			suffix := ""
			if o != "out" {
				suffix = "-" + o
			}
			outs[o] = s.path(name + suffix)
			d.Outputs[o] = derivation.Output{Path: outs[o]}
		}
	}
	for _, in := range inputs {
		d.InputDrvs[s.drvs[in.name]] = in.outputs
	}
	drvPath := s.path(name + ".drv")
	if err := os.WriteFile(drvPath.String(), d.MarshalATerm(), 0o644); err != nil {
		s.t.Fatal(err)
	}
	s.drvs[name], s.outs[name] = drvPath, outs
	return drvPath
}

// put adds a narinfo for p with references refs to the cache.
func (s *synth) put(p storepath.Path, refs ...storepath.Path) {
	s.t.Helper()
	f, err := s.cache.AddFile(context.Background(), strings.NewReader("nar of "+p.Base()), "")
	if err != nil {
		s.t.Fatal(err)
	}
	ni := &narinfo.NarInfo{
		StorePath: p, URL: f.URL, Compression: "none", FileHash: f.Hash, FileSize: uint64(f.Size),
		NarHash: f.Hash, NarSize: uint64(f.Size), References: refs,
	}
	if err := s.cache.PutNarInfo(context.Background(), ni); err != nil {
		s.t.Fatal(err)
	}
}

// validSet is a local store holding exactly its paths.
type validSet map[storepath.Path]bool

func (v validSet) InvalidPaths(_ context.Context, ps ...storepath.Path) ([]storepath.Path, error) {
	var out []storepath.Path
	for _, p := range ps {
		if !v[p] {
			out = append(out, p)
		}
	}
	return out, nil
}

// world builds a graph with every case:
//
//	fetchA  flat builtin:fetchurl FOD, only behind the hashed mirror
//	fetchB  recursive FOD in no --against source, fetched with curl: a root cause
//	curl    buildable, but needed only to fetch fetchB
//	fetchC  flat FOD in the cache
//	lib     out (in the cache, but referencing a path no source has) and dev
//	tool    needs fetchB: blocked
//	app     needs lib.out, fetchA: buildable
//	app2    needs tool and lib: blocked by tool
//	app3    needs an input source no store holds: blocked
//	old     needs fetchB, but only pre uses it
//	pre     needs old; its output is in the cache
func (s *synth) world() ([]check.Target, validSet) {
	s.drv("fetchA", "sha256", nil, nil)
	s.drv("curl", "", nil, nil)
	s.drv("fetchB", "r:sha256", []input{{"curl", []string{"out"}}}, nil)
	s.drv("fetchC", "sha256", nil, nil)
	s.put(s.outs["fetchC"]["out"])
	s.drv("lib", "", []input{{"fetchC", []string{"out"}}}, nil, "out", "dev")
	ghost := s.path("ghost")
	s.put(s.outs["lib"]["out"], ghost, s.outs["lib"]["out"])
	s.drv("tool", "", []input{{"fetchB", []string{"out"}}}, nil)
	s.drv("app", "", []input{{"lib", []string{"out"}}, {"fetchA", []string{"out"}}}, nil)
	s.drv("app2", "", []input{{"tool", []string{"out"}}, {"lib", []string{"out"}}}, nil)
	script, lost := s.path("builder.sh"), s.path("lost.sh")
	s.drv("app3", "", []input{{"fetchC", []string{"out"}}}, []storepath.Path{script, lost})
	s.drv("old", "", []input{{"fetchB", []string{"out"}}}, nil)
	s.drv("pre", "", []input{{"old", []string{"out"}}}, nil)
	s.put(s.outs["pre"]["out"], s.outs["fetchC"]["out"])

	// fetchA's file, under another name, listed as flat in the manifest.
	renamed := s.path("fetchA-renamed")
	digest := sha("fetchA").Digest
	m := &bundle.Manifest{StoreDir: s.dir, Mode: role.ModeSources, Paths: []bundle.PathEntry{{
		Path: renamed, NarHash: sha("x"), NarSize: 1, URL: "nar/x.nar", FileHash: sha("x"), FileSize: 1,
		Compression: "none", Roles: role.Source,
		Flat: &bundle.FlatHashes{MD5: digest[:16], SHA1: digest[:20], SHA256: digest, SHA512: append(digest, digest...)},
	}}}
	data, err := m.Marshal()
	if err != nil {
		s.t.Fatal(err)
	}
	if err := s.cache.WriteFile(context.Background(), bundle.ManifestName, data); err != nil {
		s.t.Fatal(err)
	}

	var ts []check.Target
	for _, name := range []string{"app", "app2", "app3", "pre"} {
		ts = append(ts, check.Target{Name: name, DrvPath: s.drvs[name]})
	}
	return ts, validSet{script: true}
}

func (s *synth) checker(t testing.TB, local check.LocalStore) *check.Checker {
	t.Helper()
	src, err := check.OpenSource(t.Context(), "file://"+s.cache.String(), s.dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return &check.Checker{StoreDir: s.dir, Sources: []check.Source{src}, Local: local}
}

// TestSourceClose: closing a cache directory's source releases what
// opening it took, so that pack --check, which opens every volume it
// wrote, holds no file open after.
func TestSourceClose(t *testing.T) {
	s := newSynth(t)
	fds := func() int {
		t.Helper()
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	const n = 50
	before := fds()
	for range n {
		src, err := check.OpenSource(t.Context(), "file://"+s.cache.String(), s.dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := src.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if grew := fds() - before; grew >= n/2 {
		t.Errorf("%d sources opened and closed left %d more files open", n, grew)
	}
}

// golden compares got with testdata/name, after replacing the temp dirs.
func golden(t *testing.T, name string, got []byte, s *synth) {
	t.Helper()
	got = bytes.ReplaceAll(got, []byte(s.cache.String()), []byte("CACHE"))
	got = bytes.ReplaceAll(got, []byte(s.dir), []byte("/store"))
	file := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", file, diff)
	}
}

func TestCheckSynthetic(t *testing.T) {
	s := newSynth(t)
	targets, local := s.world()
	res, err := s.checker(t, local).Check(t.Context(), targets)
	if err != nil {
		t.Fatal(err)
	}
	var be *check.BlockedError
	if err := res.Err(); !errors.As(err, &be) || !errors.Is(err, check.ErrBlocked) {
		t.Fatalf("Err() = %v, want a *BlockedError", err)
	}
	o := func(name, out string) storepath.Path { return s.outs[name][out] }
	type want struct {
		class  check.Class
		needed bool
		via    string
	}
	src := "file://" + s.cache.String()
	for p, w := range map[storepath.Path]want{
		o("fetchA", "out"): {check.Available, true, "mirror " + src},
		o("fetchB", "out"): {check.Blocked, true, ""},
		o("curl", "out"):   {check.Buildable, false, ""},
		o("fetchC", "out"): {check.Available, true, src},
		o("lib", "out"):    {check.Buildable, true, ""},
		o("lib", "dev"):    {check.Buildable, false, ""},
		o("tool", "out"):   {check.Blocked, true, ""},
		o("app", "out"):    {check.Buildable, true, ""},
		o("app2", "out"):   {check.Blocked, true, ""},
		o("app3", "out"):   {check.Blocked, true, ""},
		o("old", "out"):    {check.Blocked, false, ""},
		o("pre", "out"):    {check.Available, true, src},
		s.path("lost.sh"):  {check.Blocked, true, ""},
	} {
		pr := res.Path(p)
		if pr == nil {
			t.Errorf("%s: no result", p.Base())
			continue
		}
		if got := (want{pr.Class, pr.Needed, pr.Via}); got != w {
			t.Errorf("%s: %+v, want %+v", p.Base(), got, w)
		}
	}
	if got := res.Path(o("lib", "out")).Reason; !strings.Contains(got, s.path("ghost").String()) {
		t.Errorf("lib: reason %q, want it to name the missing reference", got)
	}
	var text bytes.Buffer
	if err := res.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	golden(t, "synthetic.txt", text.Bytes(), s)
	js, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "synthetic.json", append(js, '\n'), s)
}

// TestCheckUseLocal counts locally valid paths as available, and only
// with UseLocal.
func TestCheckUseLocal(t *testing.T) {
	s := newSynth(t)
	targets, local := s.world()
	tool := s.outs["tool"]["out"]
	local[tool] = true
	for _, useLocal := range []bool{false, true} {
		c := s.checker(t, local)
		c.UseLocal = useLocal
		res, err := c.Check(t.Context(), targets[1:2]) // app2
		if err != nil {
			t.Fatal(err)
		}
		want := map[bool]check.Class{false: check.Blocked, true: check.Buildable}[useLocal]
		if pr := res.Path(s.outs["app2"]["out"]); pr.Class != want {
			t.Errorf("UseLocal %v: app2 %v, want %v", useLocal, pr.Class, want)
		}
		if pr := res.Path(tool); useLocal && (pr.Class != check.Available || pr.Via != "local") {
			t.Errorf("UseLocal: tool %+v, want available locally", pr)
		}
	}
}

// TestCheckLocalFlakeSource: the source of a flake in a local directory,
// such as the checked flake's own, is made by evaluating it, so it is
// available where it is valid locally, as an input source is, and is no
// root cause when no source has it; another flake input still needs a
// source.
func TestCheckLocalFlakeSource(t *testing.T) {
	s := newSynth(t)
	own, input := s.path("own-source"), s.path("input-source")
	for _, tt := range []struct {
		name  string
		local bool
		valid validSet
		want  check.Class
	}{
		{"own source, valid locally", true, validSet{own: true}, check.Available},
		{"own source, not in the store", true, validSet{}, check.Blocked},
		{"locked input, valid locally", false, validSet{input: true}, check.Blocked},
	} {
		p := own
		if !tt.local {
			p = input
		}
		res, err := s.checker(t, tt.valid).Check(t.Context(), []check.Target{{Name: "flake input " + p.Base(), Path: p, FlakeInput: true, Local: tt.local}})
		if err != nil {
			t.Fatal(err)
		}
		if pr := res.Path(p); pr == nil || pr.Class != tt.want {
			t.Errorf("%s: %+v, want %v", tt.name, pr, tt.want)
		}
	}
}

// TestTargetsFromPlanLocalFlakes: a flake input is Local when its locked
// reference is a local directory's.
func TestTargetsFromPlanLocalFlakes(t *testing.T) {
	s := newSynth(t)
	pl := &plan.Plan{StoreDir: s.dir}
	want := map[string]bool{}
	for u, local := range map[string]bool{
		"git+file:///home/site?rev=0123":       true,
		"path:/home/site/lib?narHash=sha256-x": true,
		"github:NixOS/nixpkgs/0123":            false,
		"https://example.org/x.tar.gz":         false,
	} {
		p := s.path(u)
		pl.Items = append(pl.Items, plan.Item{Path: p, Roles: role.FlakeInput, Fetch: &derivation.Fetch{URLs: []string{u}}})
		want["flake input "+p.Base()] = local
	}
	got := map[string]bool{}
	for _, tg := range check.TargetsFromPlan(pl) {
		got[tg.Name] = tg.Local
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Local by flake input (-want +got):\n%s", diff)
	}
}

func TestCheckErrors(t *testing.T) {
	s := newSynth(t)
	targets, _ := s.world()
	c := &check.Checker{StoreDir: s.dir}
	missing := check.Target{Name: "gone", DrvPath: s.path("gone.drv")}
	for _, tc := range []struct {
		name    string
		targets []check.Target
		want    string
	}{
		{"no targets", nil, "no targets"},
		{"missing drv", []check.Target{missing}, "gone.drv"},
		{"bad output", []check.Target{{Name: "x", DrvPath: targets[0].DrvPath, Outputs: []string{"man"}}}, `has no output "man"`},
		{"not an output", []check.Target{{Name: "x", DrvPath: targets[0].DrvPath, Path: s.path("other")}}, "is not an output of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Check(t.Context(), tc.targets)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestOpenSourceErrors(t *testing.T) {
	s := newSynth(t)
	other, err := cache.CreateDir(filepath.Join(t.TempDir(), "other"), "/other/store", 40)
	if err != nil {
		t.Fatal(err)
	}
	other.Close()
	for _, tc := range []struct {
		loc  string
		want error
	}{
		{other.String(), check.ErrStoreDir},
		{filepath.Join(t.TempDir(), "nothing"), os.ErrNotExist},
	} {
		if _, err := check.OpenSource(t.Context(), tc.loc, s.dir, nil); !errors.Is(err, tc.want) {
			t.Errorf("OpenSource(%s) = %v, want %v", tc.loc, err, tc.want)
		}
	}
	if _, err := check.OpenSource(t.Context(), "ftp://x", s.dir, nil); err == nil {
		t.Error("OpenSource(ftp://x) succeeded")
	}
	// A cache that is not there is named once, by the open that failed,
	// and did not answer (exit 75).
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	want := "check: open " + srv.URL + "/nix-cache-info: dial tcp "
	if _, err := check.OpenSource(t.Context(), srv.URL, s.dir, nil); err == nil || !strings.HasPrefix(err.Error(), want) || !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("OpenSource(%s) = %v, want %s… matching storage.ErrUnavailable", srv.URL, err, want)
	}
}

// downSource serves s's cache over HTTP, answering 503 to the requests
// down picks, and opens it as a check source; the server stops with t.
func (s *synth) downSource(t *testing.T, down func(*http.Request) bool) (check.Source, *httptest.Server) {
	t.Helper()
	files := http.FileServer(http.Dir(s.cache.String()))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down(r) {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		files.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	src, err := check.OpenSource(t.Context(), srv.URL, s.dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	return src, srv
}

// TestCheckSourceDown: an HTTP source that stops answering after check
// opened it fails the check, naming the request, with an error that
// matches storage.ErrUnavailable (exit 75), whether its narinfos or its
// hashed mirror fail; a refused connection fails at once.
func TestCheckSourceDown(t *testing.T) {
	t.Parallel()
	s := newSynth(t)
	targets, local := s.world()
	for _, tt := range []struct {
		name  string
		down  func(*http.Request) bool // answered 503
		close bool                     // the server, once check opened it
		want  string
	}{
		{"narinfo 503", func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, ".narinfo") }, false, ".narinfo: 503 Service Unavailable"},
		{"mirror 503", func(r *http.Request) bool { return r.Method == http.MethodHead }, false, ": 503 Service Unavailable"},
		{"refused", nil, true, ": connect: connection refused"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // each waits out the retry policy's backoff
			src, srv := s.downSource(t, func(r *http.Request) bool { return tt.down != nil && tt.down(r) })
			if tt.close {
				srv.Close()
			}
			c := &check.Checker{StoreDir: s.dir, Sources: []check.Source{src}, Local: local}
			start := time.Now()
			_, err := c.Check(t.Context(), targets)
			took := time.Since(start)
			prefix := "check: source " + srv.URL + ": "
			if err == nil || !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, storage.ErrUnavailable) {
				t.Fatalf("Check = %v, want %s…%s matching storage.ErrUnavailable", err, prefix, tt.want)
			}
			if tt.close && took > cache.RetryBackoff/2 {
				t.Errorf("Check took %s: a refused connection was tried again", took)
			}
			t.Logf("%s: %v", took.Round(time.Millisecond), err)
		})
	}
}

// TestCheckSourceHiccup: an HTTP source whose narinfos and hashed
// mirror each answer 503 once, then again, gives the check it gives
// when it never failed: both are tried by the one retry policy.
func TestCheckSourceHiccup(t *testing.T) {
	t.Parallel()
	s := newSynth(t)
	targets, local := s.world()
	check1 := func(hiccup bool) (check.Summary, int) {
		t.Helper()
		var mu sync.Mutex
		failed := map[string]bool{}
		heads := 0
		src, _ := s.downSource(t, func(r *http.Request) bool {
			mu.Lock()
			defer mu.Unlock()
			first := !failed[r.Method+r.URL.Path]
			failed[r.Method+r.URL.Path] = true
			if r.Method == http.MethodHead {
				heads++
			}
			return hiccup && first
		})
		c := &check.Checker{StoreDir: s.dir, Sources: []check.Source{src}, Local: local}
		res, err := c.Check(t.Context(), targets)
		if err != nil {
			t.Fatalf("check, each request failing once %v: %v", hiccup, err)
		}
		return res.Summary, heads
	}
	want, _ := check1(false)
	got, heads := check1(true)
	if want.FromSources == 0 || heads == 0 {
		t.Fatalf("check of the synthetic world %+v, %d mirror requests: want paths from the source, and its mirror asked", want, heads)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("check with each request failing once (-never failed +failed once):\n%s", diff)
	}
}

// TestWriteTextCountsFlakeInputs: a flake's inputs are checked as
// targets but not counted as targets the user named.
func TestWriteTextCountsFlakeInputs(t *testing.T) {
	for _, tc := range []struct {
		targets []check.TargetResult
		want    string
	}{
		{[]check.TargetResult{{Name: "./flake#hello"}}, "checked 1 target against 0 sources"},
		{[]check.TargetResult{{Name: "./flake#hello"}, {Name: "flake input abc-source", FlakeInput: true}}, "checked 1 target and 1 flake input against 0 sources"},
	} {
		var b bytes.Buffer
		if err := (&check.Result{Targets: tc.targets}).WriteText(&b); err != nil {
			t.Fatal(err)
		}
		if got, _, _ := strings.Cut(b.String(), "\n"); got != tc.want {
			t.Errorf("first line %q, want %q", got, tc.want)
		}
	}
}
