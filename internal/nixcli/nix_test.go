package nixcli_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

var record = flag.Bool("record", false, "record real Nix output into testdata/nix-MAJOR.MINOR/ (see testdata/README.md)")

// recordDir is where -record writes: testdata/nix-MAJOR.MINOR of the Nix
// on PATH.
func recordDir(t *testing.T) string {
	t.Helper()
	v, err := nixtest.Version()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("testdata/nix-%d.%d", v.Major, v.Minor)
}

// storeOptions gives TestStore a store of its own, or with -record the
// store dir of the committed 2.8 recording (emptied first), so that every
// version's recording names the same paths and parses to the same values.
func storeOptions(t *testing.T) nixtest.Options {
	t.Helper()
	if !*record {
		return nixtest.Options{}
	}
	dir := strings.TrimSpace(string(readFile(t, "nix-2.8/store-dir.txt")))
	root := filepath.Dir(filepath.Dir(dir))
	if err := os.RemoveAll(root); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	return nixtest.Options{StoreDir: storepath.Dir(dir)}
}

// testExpr has an input-addressed derivation with two outputs and a
// dependency, a flat and a recursive fixed-output derivation, a flat one
// with structured attrs (as nixpkgs' fetchurl), and an evaluation error.
const testExpr = `
let
  sh = name: script: attrs: derivation ({
    inherit name;
    builder = "/bin/busybox";
    args = [ "sh" "-c" script ];
    system = builtins.currentSystem;
  } // attrs);
in rec {
  dep = sh "dep" "echo dep > $out" {};
  top = sh "top" "echo ${dep} > $out; echo dev > $dev" { outputs = [ "out" "dev" ]; };
  flat = sh "flat" "echo -n hi > $out" {
    outputHashMode = "flat"; outputHashAlgo = "sha256";
    outputHash = builtins.hashString "sha256" "hi";
  };
  rec_ = sh "rec" "echo -n hi > $out" {
    outputHashMode = "recursive"; outputHashAlgo = "sha256";
    outputHash = "1z63q11s9hppsav4x9kh767bqr7ypmw7ncg3wjncgs4lijvx8li2";
  };
  # With structured attrs the outputs are not in the environment.
  structured = sh "structured" ''
    out=$(sed -n 's/.*"outputs":{"out":"\([^"]*\)".*/\1/p' "$NIX_ATTRS_JSON_FILE")
    echo -n hi > "$out"
  '' {
    __structuredAttrs = true;
    urls = [ "http://127.0.0.1:1/structured" ];
    outputHashMode = "flat"; outputHashAlgo = "sha256";
    outputHash = builtins.hashString "sha256" "hi";
  };
  broken = throw "nixcli-test: deliberate evaluation error";
}
`

func runner(n *nixtest.Nix) *nixcli.Runner {
	return &nixcli.Runner{Env: n.Env}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return name
}

func pathSet(ps []storepath.Path) []string {
	var ss []string
	for _, p := range ps {
		ss = append(ss, p.String())
	}
	slices.Sort(ss)
	return slices.Compact(ss)
}

// dumpHash hashes nix-store --dump of p as it streams.
func dumpHash(t *testing.T, n *nixtest.Nix, p storepath.Path) (storepath.Hash, uint64) {
	t.Helper()
	cmd := n.Command(t.Context(), "nix-store", "--dump", p.String())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	size, err := io.Copy(h, out)
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	return storepath.Hash{Algo: storepath.SHA256, Digest: h.Sum(nil)}, uint64(size)
}

func TestStore(t *testing.T) {
	n := nixtest.New(t, storeOptions(t))
	r := runner(n)
	ctx := t.Context()
	file := writeFile(t, filepath.Join(t.TempDir(), "test.nix"), testExpr)

	v, err := r.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	printed := n.Run(t, "nix", "--version")
	if v.Impl != "Nix" || !strings.HasSuffix(printed, " "+v.Raw) || v.Major != 2 {
		t.Errorf("Version = %+v, nix --version says %q", v, printed)
	}

	dir, err := r.StoreDir(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if dir != n.StoreDir {
		t.Fatalf("StoreDir = %q, want %q", dir, n.StoreDir)
	}

	drvPaths, err := r.Instantiate(ctx, file, []string{"top", "dep", "flat", "rec_", "structured", "top.dev"})
	if err != nil {
		t.Fatal(err)
	}
	if len(drvPaths) != 6 || drvPaths[5] != drvPaths[0] {
		t.Fatalf("Instantiate = %v, want 6 paths with top.dev's .drv equal to top's", drvPaths)
	}
	top, dep, flat, recursive, structured := drvPaths[0], drvPaths[1], drvPaths[2], drvPaths[3], drvPaths[4]
	if top.Name != "top.drv" || dep.Name != "dep.drv" {
		t.Fatalf("Instantiate = %v", drvPaths)
	}

	drvs, err := r.ShowDerivations(ctx, top, flat, recursive, structured)
	if err != nil {
		t.Fatal(err)
	}
	byPath := map[storepath.Path]nixcli.Derivation{}
	for _, d := range drvs {
		byPath[d.Path] = d
	}
	topDrv, flatDrv, recDrv, saDrv := byPath[top], byPath[flat], byPath[recursive], byPath[structured]
	if len(drvs) != 4 || topDrv.Name != "top" || flatDrv.Name != "flat" || saDrv.Name != "structured" {
		t.Fatalf("ShowDerivations = %+v", drvs)
	}
	var saAttrs struct {
		URLs []string `json:"urls"`
	}
	if err := json.Unmarshal(saDrv.StructuredAttrs, &saAttrs); err != nil || !slices.Equal(saAttrs.URLs, []string{"http://127.0.0.1:1/structured"}) {
		t.Errorf("structured: StructuredAttrs %s: urls %v, %v", saDrv.StructuredAttrs, saAttrs.URLs, err)
	}
	if _, ok := saDrv.Env["__json"]; ok || topDrv.StructuredAttrs != nil {
		t.Errorf("structured attrs: __json in Env %v, or in a derivation without: %s", saDrv.Env, topDrv.StructuredAttrs)
	}
	if diff := cmp.Diff(map[storepath.Path][]string{dep: {"out"}}, topDrv.InputDrvs); diff != "" {
		t.Errorf("top InputDrvs (-want +got):\n%s", diff)
	}
	if topDrv.Builder != "/bin/busybox" || topDrv.Env["outputs"] != "out dev" || len(topDrv.Outputs) != 2 || topDrv.IsFixedOutput() {
		t.Errorf("top = %+v", topDrv)
	}
	hiSum := sha256.Sum256([]byte("hi"))
	hiFlat := storepath.Hash{Algo: storepath.SHA256, Digest: hiSum[:]}
	wantFlat, _ := dir.MakeFixedOutput(storepath.Flat, hiFlat, "flat")
	hiNar, _ := storepath.ParseHash("sha256:1z63q11s9hppsav4x9kh767bqr7ypmw7ncg3wjncgs4lijvx8li2")
	wantRec, _ := dir.MakeFixedOutput(storepath.Recursive, hiNar, "rec")
	wantSA, _ := dir.MakeFixedOutput(storepath.Flat, hiFlat, "structured")
	for _, c := range []struct {
		d    nixcli.Derivation
		want nixcli.Output
	}{
		{flatDrv, nixcli.Output{Path: wantFlat, Method: "flat", HashAlgo: storepath.SHA256, Hash: hiFlat}},
		{recDrv, nixcli.Output{Path: wantRec, Method: "nar", HashAlgo: storepath.SHA256, Hash: hiNar}},
		{saDrv, nixcli.Output{Path: wantSA, Method: "flat", HashAlgo: storepath.SHA256, Hash: hiFlat}},
	} {
		if !c.d.IsFixedOutput() {
			t.Errorf("%s: IsFixedOutput = false", c.d.Path)
		}
		if diff := cmp.Diff(c.want, c.d.Outputs["out"]); diff != "" {
			t.Errorf("%s output (-want +got):\n%s", c.d.Path, diff)
		}
	}
	closure, err := r.ShowDerivationClosure(ctx, top)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(closure); got != 2 {
		t.Errorf("ShowDerivationClosure(top) gave %d derivations, want top and dep", got)
	}

	built, err := r.Realise(ctx, nixcli.RealiseOptions{}, top, flat, recursive, structured)
	if err != nil {
		t.Fatal(err)
	}
	wantBuilt := []storepath.Path{topDrv.Outputs["out"].Path, topDrv.Outputs["dev"].Path, wantFlat, wantRec, wantSA}
	if diff := cmp.Diff(pathSet(wantBuilt), pathSet(built)); diff != "" {
		t.Errorf("Realise (-want +got):\n%s", diff)
	}
	depOuts, err := r.Outputs(ctx, dep)
	if err != nil || len(depOuts) != 1 {
		t.Fatalf("Outputs(dep) = %v, %v", depOuts, err)
	}
	topOut := topDrv.Outputs["out"].Path

	// Signed with a fixed key: ed25519 signs deterministically, so every
	// version's recording carries the same signatures.
	const signingKey = "nixcli-record-1:M+nxjZ53TJb1XUYFKVAlkLxnRiW2y0CtM1fRQf6ZQYwvACt0TxH9LPjovyIR9sRI3b1N1u4n+ayfUsqN2pTj4Q=="
	keyFile := writeFile(t, filepath.Join(t.TempDir(), "key.sec"), signingKey)
	n.Run(t, "nix", append([]string{"store", "sign", "--key-file", keyFile}, pathStringsTest(wantBuilt)...)...)

	infos, err := r.PathInfo(ctx, append(wantBuilt, top)...)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 6 {
		t.Fatalf("PathInfo gave %d infos, want 6", len(infos))
	}
	for _, info := range infos {
		if info.Path != top && (len(info.Signatures) != 1 || !strings.HasPrefix(info.Signatures[0], "nixcli-record-1:")) {
			t.Errorf("%s: signatures %q, want one by nixcli-record-1", info.Path, info.Signatures)
		}
		h, size := dumpHash(t, n, info.Path)
		if !info.NarHash.Equal(h) || info.NarSize != size {
			t.Errorf("%s: PathInfo says %s %d, nix-store --dump hashes to %s %d", info.Path, info.NarHash, info.NarSize, h, size)
		}
		switch info.Path {
		case topOut:
			if diff := cmp.Diff(depOuts, info.References); diff != "" || info.Deriver != top || info.CA != "" {
				t.Errorf("top: references (-want +got):\n%s\nderiver %s, ca %q", diff, info.Deriver, info.CA)
			}
		case wantFlat:
			if info.CA != "fixed:"+hiFlat.String() || info.Deriver != flat {
				t.Errorf("flat: ca %q deriver %s", info.CA, info.Deriver)
			}
		case wantRec:
			if info.CA != "fixed:r:"+hiNar.String() {
				t.Errorf("rec: ca %q", info.CA)
			}
		case wantSA:
			if info.CA != "fixed:"+hiFlat.String() || info.Deriver != structured {
				t.Errorf("structured: ca %q deriver %s", info.CA, info.Deriver)
			}
		case top:
			if !strings.HasPrefix(info.CA, "text:sha256:") || len(info.References) != 1 || info.References[0] != dep {
				t.Errorf("top.drv: %+v", info)
			}
		}
	}
	missing, _ := dir.Base("00000000000000000000000000000000-missing")
	if _, err := r.PathInfo(ctx, missing); !errors.Is(err, nixcli.ErrInvalidPath) {
		t.Errorf("PathInfo(missing) error = %v, want ErrInvalidPath", err)
	}

	req, err := r.Requisites(ctx, topOut)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(pathSet(append(depOuts, topOut)), pathSet(req)); diff != "" {
		t.Errorf("Requisites (-want +got):\n%s", diff)
	}
	refs, err := r.References(ctx, top)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]storepath.Path{dep}, refs); diff != "" {
		t.Errorf("References(top.drv) (-want +got):\n%s", diff)
	}
	for p, want := range map[storepath.Path]bool{topOut: true, missing: false} {
		if got, err := r.IsValid(ctx, p); got != want || err != nil {
			t.Errorf("IsValid(%s) = %v, %v; want %v", p, got, err, want)
		}
	}

	if *record {
		recordStore(t, n, []storepath.Path{top, flat, recursive, structured}, wantBuilt, missing)
	}
}

func TestEvalErrors(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	r := runner(n)
	ctx := t.Context()
	file := writeFile(t, filepath.Join(t.TempDir(), "test.nix"), testExpr)

	var got struct {
		A int
		B []string
	}
	if err := r.EvalJSON(ctx, &got, "--expr", `{ A = 1 + 1; B = [ "x" ]; }`); err != nil {
		t.Fatal(err)
	}
	if got.A != 2 || !slices.Equal(got.B, []string{"x"}) {
		t.Errorf("EvalJSON = %+v", got)
	}
	if s, err := r.EvalRaw(ctx, "--expr", `"a" + "b"`); s != "ab" || err != nil {
		t.Errorf("EvalRaw = %q, %v", s, err)
	}

	for name, call := range map[string]func() error{
		"Instantiate": func() error { _, err := r.Instantiate(ctx, file, []string{"broken"}); return err },
		"EvalJSON":    func() error { var v any; return r.EvalJSON(ctx, &v, "--file", file, "broken") },
	} {
		err := call()
		var exit *nixcli.ExitError
		if !errors.As(err, &exit) {
			t.Fatalf("%s: error %v, want *ExitError", name, err)
		}
		if msg := exit.NixMessage(); !strings.HasPrefix(msg, "error:") || !strings.Contains(msg, "nixcli-test: deliberate evaluation error") {
			t.Errorf("%s: NixMessage = %q", name, msg)
		}
		if !strings.Contains(err.Error(), "nixcli-test: deliberate evaluation error") {
			t.Errorf("%s: error %q lacks Nix's message", name, err)
		}
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := r.EvalRaw(cancelled, "--expr", `"x"`); !errors.Is(err, context.Canceled) {
		t.Errorf("EvalRaw with cancelled context: error %v, want context.Canceled", err)
	}
}

func TestConfig(t *testing.T) {
	const key = "nixcli-test-1:Wd1C5tpnvPWAqH4v0rrInKQRM6hMm5nbN1N5PV1wbOE="
	n := nixtest.New(t, nixtest.Options{ExtraConf: "substituters = http://127.0.0.1:1/one file:///two\n" +
		"trusted-public-keys = " + key + "\nrequire-sigs = false\n"})
	c, err := runner(n).Config(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"http://127.0.0.1:1/one", "file:///two"}, c.Substituters); diff != "" {
		t.Errorf("Substituters (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{key}, c.TrustedPublicKeys); diff != "" {
		t.Errorf("TrustedPublicKeys (-want +got):\n%s", diff)
	}
	if c.RequireSigs {
		t.Error("RequireSigs = true, want false")
	}

	// The store dir, version and configuration are each asked once per
	// Runner, even when asked for at once.
	var log bytes.Buffer
	r := runner(n)
	r.Log = slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if _, err := r.Config(t.Context()); err != nil {
				t.Error(err)
			}
		})
		wg.Go(func() {
			if _, err := r.StoreDir(t.Context()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := strings.Count(log.String(), `msg="run nix"`); got != 3 {
		t.Errorf("nix ran %d times for StoreDir and Config, want 3 (store dir, version, config):\n%s", got, log.String())
	}
	if *record {
		args := []string{"show-config", "--json"}
		if v, _ := nixtest.Version(); v.AtLeast(2, 20) {
			args = []string{"config", "show", "--json"}
		}
		writeFile(t, filepath.Join(recordDir(t), "show-config.json"), n.Run(t, "nix", args...)+"\n")
	}
}

const depFlake = `{ outputs = { self }: { value = "from-dep"; }; }`

const topFlake = `{
  inputs.dep.url = "path:DEP";
  outputs = { self, dep }: {
    packages.SYSTEM.default = derivation {
      name = "flk"; builder = "/bin/busybox"; system = "SYSTEM";
      args = [ "sh" "-c" "echo ${dep.value} > $out" ];
    };
  };
}`

func TestFlake(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	r := runner(n)
	ctx := t.Context()
	root := t.TempDir()
	system := n.Run(t, "nix-instantiate", "--eval", "--expr", "builtins.currentSystem")
	system = strings.Trim(system, `"`)
	depDir, topDir := filepath.Join(root, "dep"), filepath.Join(root, "top")
	writeFile(t, filepath.Join(depDir, "flake.nix"), depFlake)
	writeFile(t, filepath.Join(topDir, "flake.nix"),
		strings.NewReplacer("DEP", depDir, "SYSTEM", system).Replace(topFlake))
	ref := "path:" + topDir
	dir, err := r.StoreDir(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// Lock first: nix flake metadata writes a missing flake.lock, which
	// changes the flake's source, and Nix 2.34 reports the source as it
	// was before.
	n.Run(t, "nix", "flake", "lock", ref)
	m, err := r.FlakeMetadata(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	depNode, ok := m.Locks.Nodes["dep"]
	if !ok || m.Locks.Nodes[m.Locks.Root].Inputs["dep"].Node != "dep" {
		t.Fatalf("FlakeMetadata locks = %+v", m.Locks)
	}
	if depNode.Locked.Type() != "path" || !depNode.IsFlake || depNode.Locked.Attrs["path"] != depDir {
		t.Errorf("dep node = %+v", depNode)
	}
	if self, err := m.Locked.SourcePath(dir); err != nil || self != m.Path {
		t.Errorf("flake source path from narHash = %v, %v; metadata path %v", self, err, m.Path)
	}

	a, err := r.FlakeArchive(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	depSource, err := depNode.Locked.SourcePath(dir)
	if err != nil {
		t.Fatal(err)
	}
	if a.Path != m.Path || len(a.Inputs) != 1 || a.Inputs["dep"].Path != depSource {
		t.Errorf("FlakeArchive = %+v, want %v with input dep %v", a, m.Path, depSource)
	}
	if diff := cmp.Diff(pathSet([]storepath.Path{m.Path, depSource}), pathSet(a.Paths())); diff != "" {
		t.Errorf("ArchivedFlake.Paths (-want +got):\n%s", diff)
	}
	if ok, err := r.IsValid(ctx, depSource); !ok || err != nil {
		t.Errorf("IsValid(dep source %s) = %v, %v after FlakeArchive", depSource, ok, err)
	}

	drvs, err := r.DerivationPaths(ctx, ref+"#default")
	if err != nil {
		t.Fatal(err)
	}
	drvPath, err := r.EvalRaw(ctx, ref+"#default.drvPath")
	if err != nil {
		t.Fatal(err)
	}
	if len(drvs) != 1 || drvs[0].String() != drvPath || drvs[0].Name != "flk.drv" {
		t.Errorf("DerivationPaths = %v, drvPath = %s", drvs, drvPath)
	}

	if *record {
		dir := recordDir(t)
		writeFile(t, filepath.Join(dir, "flake-metadata.json"), n.Run(t, "nix", "flake", "metadata", "--json", ref)+"\n")
		writeFile(t, filepath.Join(dir, "flake-archive.json"), n.Run(t, "nix", "flake", "archive", "--json", ref)+"\n")
		writeFile(t, filepath.Join(dir, "flake-store-dir.txt"), string(n.StoreDir)+"\n")
	}
}

// recordStore saves the running Nix's output for the parsers' golden
// tests, in every shape it prints.
func recordStore(t *testing.T, n *nixtest.Nix, drvs, outputs []storepath.Path, missing storepath.Path) {
	v, err := nixtest.Version()
	if err != nil {
		t.Fatal(err)
	}
	show := []string{"show-derivation"}
	if v.AtLeast(2, 15) {
		show = []string{"derivation", "show"}
	}
	files := map[string][]string{
		"version.txt":            {"--version"},
		"show-derivation.json":   append(append(show, "-r"), pathStringsTest(drvs)...),
		"path-info.json":         append([]string{"path-info", "--json", "--sigs"}, pathStringsTest(outputs)...),
		"path-info-drv.json":     {"path-info", "--json", "--sigs", "--derivation", drvs[0].String()},
		"path-info-invalid.json": {"path-info", "--json", missing.String()},
	}
	if v.AtLeast(2, 33) {
		files["path-info-2.json"] = append([]string{"path-info", "--json", "--json-format", "2", "--sigs"}, append(pathStringsTest(outputs), missing.String())...)
	}
	dir := recordDir(t)
	for name, args := range files {
		writeFile(t, filepath.Join(dir, name), n.Run(t, "nix", args...)+"\n")
	}
	writeFile(t, filepath.Join(dir, "store-dir.txt"), string(n.StoreDir)+"\n")
}

func pathStringsTest(ps []storepath.Path) []string {
	var ss []string
	for _, p := range ps {
		ss = append(ss, p.String())
	}
	return ss
}

// shBuilds starts a Nix file of derivations whose builder is busybox's
// sh with a script: "sh NAME SCRIPT".
const shBuilds = `
let sh = name: script: derivation { inherit name; builder = "/bin/busybox"; args = [ "sh" "-c" script ]; system = builtins.currentSystem; };
in `

// TestRealiseBuildLog realises a derivation whose builder fails after
// printing, and one that succeeds: Realise says first that Nix will build
// both, names each build as it starts,
// passes every log line on, and a failure's error ends with the failed
// build's last lines, as nix build shows them; the good build's lines are
// not in it.
func TestRealiseBuildLog(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	ctx := t.Context()
	file := writeFile(t, filepath.Join(t.TempDir(), "build.nix"), shBuilds+`{
  good = sh "good-1.0" "echo good says hi; echo ok > $out";
  bad = sh "bad-2.0" "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo bad line $i; done; echo to stderr >&2; exit 3";
}`)
	r := runner(n)
	drvs, err := r.Instantiate(ctx, file, []string{"good", "bad"})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen, work []string
	logs := map[string][]string{}
	opts := nixcli.RealiseOptions{
		Work: func(build, fetch int) {
			mu.Lock()
			defer mu.Unlock()
			work = append(work, fmt.Sprint(build, " ", fetch))
		},
		Activity: func(names []string) {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, strings.Join(names, ","))
		},
		BuildLog: func(name, line string) {
			mu.Lock()
			defer mu.Unlock()
			logs[name] = append(logs[name], line)
		},
	}
	_, err = r.Realise(ctx, opts, drvs...)
	var ee *nixcli.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("Realise: got %v, want an *ExitError", err)
	}
	msg := ee.NixMessage()
	t.Logf("error:\n%s", msg)
	for _, want := range []string{"error:", "bad-2.0", "the last 10 log lines of bad-2.0:\n> bad line 4\n", "> bad line 12\n> to stderr\n", "nix-store --read-log"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error message lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "good says hi") || strings.Contains(msg, "bad line 3\n") {
		t.Errorf("error message holds lines it should not:\n%s", msg)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.ContainsFunc(seen, func(s string) bool { return strings.Contains(s, "bad-2.0") }) || seen[len(seen)-1] != "" {
		t.Errorf("activities seen %q: want bad-2.0 building, then nothing", seen)
	}
	if !slices.Equal(work, []string{"2 0"}) {
		t.Errorf("work heard %q, want once 2 derivations to build, none to fetch", work)
	}
	if got := logs["bad-2.0"]; len(got) != 13 || got[0] != "bad line 1" {
		t.Errorf("build log of bad-2.0 = %q, want its 13 lines", got)
	}

	// A caller that showed every line (pack -L) gets Nix's error without
	// them again, as nix build -L does.
	_, err = r.Realise(ctx, nixcli.RealiseOptions{LogLines: -1, BuildLog: func(string, string) {}}, drvs...)
	if !errors.As(err, &ee) {
		t.Fatalf("Realise with LogLines -1: got %v, want an *ExitError", err)
	}
	msg = ee.NixMessage()
	if !strings.Contains(msg, "error:") || !strings.Contains(msg, "bad-2.0") || strings.Contains(msg, "log lines") || strings.Contains(msg, "bad line") {
		t.Errorf("Realise with LogLines -1: error message\n%s\nwant Nix's error naming bad-2.0, and no log lines", msg)
	}
}

// TestEvalArgs: a Runner's EvalArgs, -I and --show-trace, reach the
// programs that evaluate: <NAME> resolves by -I in Instantiate and
// FindFile, and nix path-info --derivation takes them too.
func TestEvalArgs(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "default.nix"), testExpr)
	env := append(slices.Clone(n.Env), "NIX_PATH=")
	ctx := t.Context()
	plain := &nixcli.Runner{Env: env}
	if _, err := plain.FindFile(ctx, "w"); err == nil {
		t.Fatal("FindFile(w) without -I: no error, want w not found")
	}
	r := &nixcli.Runner{Env: env, EvalArgs: []string{"-I", "w=" + dir, "--show-trace"}}
	if got, err := r.FindFile(ctx, "w"); got != dir || err != nil {
		t.Errorf("FindFile(w) with -I w=%s = %q, %v", dir, got, err)
	}
	drvs, err := r.Instantiate(ctx, "<w>", []string{"dep"})
	if err != nil || len(drvs) != 1 || drvs[0].Name != "dep.drv" {
		t.Fatalf("Instantiate(<w>, dep) with -I = %v, %v", drvs, err)
	}
	if got, err := r.DerivationPaths(ctx, drvs[0].String()); err != nil || len(got) != 1 || got[0] != drvs[0] {
		t.Errorf("DerivationPaths(%s) with -I and --show-trace = %v, %v", drvs[0], got, err)
	}
}

// TestNetworkFailure: a fixed-output fetch (builtin:fetchurl) and an
// evaluation-time builtins.fetchurl from a loopback port nothing listens
// on fail as ErrNetwork, a server that did not answer; a fetch the server
// answers 404 and a builder that fails do not.
func TestNetworkFailure(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{ExtraConf: "download-attempts = 1\n"})
	ctx := t.Context()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	file := writeFile(t, filepath.Join(t.TempDir(), "net.nix"), fmt.Sprintf(`{
  refused = import <nix/fetchurl.nix> { url = "http://%[1]s/x.tar"; sha256 = "1111111111111111111111111111111111111111111111111111"; };
  notFound = import <nix/fetchurl.nix> { url = "%[2]s/x.tar"; sha256 = "1111111111111111111111111111111111111111111111111112"; };
  bad = derivation { name = "bad"; system = builtins.currentSystem; builder = "/bin/busybox"; args = [ "sh" "-c" "echo error: unable to connect; exit 1" ]; };
  evalFetch = builtins.fetchurl "http://%[1]s/y";
}`, closed.Addr(), srv.URL))
	r := runner(n)
	for _, tc := range []struct {
		attr    string
		network bool
	}{{"refused", true}, {"notFound", false}, {"bad", false}} {
		drvs, err := r.Instantiate(ctx, file, []string{tc.attr})
		if err != nil {
			t.Fatal(err)
		}
		_, err = r.Realise(ctx, nixcli.RealiseOptions{LogLines: -1, BuildLog: func(string, string) {}}, drvs...)
		if !errors.As(err, new(*nixcli.ExitError)) || errors.Is(err, nixcli.ErrNetwork) != tc.network {
			t.Errorf("Realise %s: %v; want an *ExitError, ErrNetwork %v", tc.attr, err, tc.network)
		}
	}
	_, err = r.Instantiate(ctx, file, []string{"evalFetch"})
	if !errors.As(err, new(*nixcli.ExitError)) || !errors.Is(err, nixcli.ErrNetwork) {
		t.Errorf("Instantiate evalFetch: %v; want an *ExitError that is ErrNetwork", err)
	}
}

// TestRealiseCopies realises three derivations whose outputs an HTTP
// binary cache holds: Copies hears Nix's count of paths copied up to 3/3
// and every byte of the NARs downloaded and copied, and Builds no build.
func TestRealiseCopies(t *testing.T) {
	cache := t.TempDir()
	srv := httptest.NewServer(http.FileServer(http.Dir(cache)))
	defer srv.Close()
	n := nixtest.New(t, nixtest.Options{ExtraConf: "substituters = " + srv.URL + "\nrequire-sigs = false\n"})
	ctx := t.Context()
	file := writeFile(t, filepath.Join(t.TempDir(), "copies.nix"), shBuilds+`{
  big = sh "big-1.0" "/bin/busybox head -c 3000000 /dev/urandom > $out";
  small = sh "small-1.0" "echo small > $out";
  other = sh "other-2.0" "echo other > $out";
}`)
	r := runner(n)
	drvs, err := r.Instantiate(ctx, file, []string{"big", "small", "other"})
	if err != nil {
		t.Fatal(err)
	}
	outs, err := r.Realise(ctx, nixcli.RealiseOptions{}, drvs...)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--extra-experimental-features", "nix-command", "copy", "--to", "file://" + cache + "?compression=none"}
	for _, p := range outs {
		args = append(args, p.String())
	}
	n.Run(t, "nix", args...)
	for _, p := range outs {
		n.Run(t, "nix-store", "--delete", p.String())
	}
	var mu sync.Mutex
	var last nixcli.CopyCount
	var builds []nixcli.BuildCount
	_, err = r.Realise(ctx, nixcli.RealiseOptions{
		Copies: func(c nixcli.CopyCount) { mu.Lock(); last = c; mu.Unlock() },
		Builds: func(c nixcli.BuildCount) { mu.Lock(); builds = append(builds, c); mu.Unlock() },
	}, drvs...)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if last.Done != 3 || last.Total != 3 || last.Failed != 0 || last.Copied < 3000000 || last.Copied != last.CopyTotal || last.Downloaded < 3000000 {
		t.Errorf("last count of copies %+v, want 3/3 and the 3 MB NAR downloaded and copied", last)
	}
	if slices.ContainsFunc(builds, func(c nixcli.BuildCount) bool { return c.Total > 0 }) {
		t.Errorf("builds heard %+v, want none: every path was substituted", builds)
	}
}
