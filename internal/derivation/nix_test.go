package derivation_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/nix-airgap/nix-airgap/internal/derivation"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// TestRealClosure instantiates testdata/closure.nix with real Nix in two
// store dirs and checks every .drv of its closure: parsing agrees with
// nix show-derivation, serialising gives the file back byte for byte, and
// the .drv path and all output paths are predicted as Nix computes them.
func TestRealClosure(t *testing.T) {
	nixtest.Require(t)
	expr, err := filepath.Abs("testdata/closure.nix")
	if err != nil {
		t.Fatal(err)
	}
	otherDir := storepath.Dir(filepath.Join(t.TempDir(), "other", "store"))
	tops := map[string]storepath.Path{}
	for _, tc := range []struct {
		name string
		opts nixtest.Options
	}{
		{"default", nixtest.Options{}},
		{"other-dir", nixtest.Options{StoreDir: otherDir}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := nixtest.New(t, tc.opts)
			tops[tc.name] = checkClosure(t, n, expr)
		})
	}
	if len(tops) == 2 && tops["default"].Hash == tops["other-dir"].Hash {
		t.Errorf("top .drv has hash %s in both store dirs; predictions must depend on the dir", tops["default"].Hash)
	}
}

func checkClosure(t *testing.T, n *nixtest.Nix, expr string) storepath.Path {
	topPath := n.Run(t, "nix-instantiate", expr)
	closure := strings.Fields(n.Run(t, "nix-store", "-qR", topPath))
	checkReadClosure(t, n.StoreDir, topPath, closure)
	shown := showDerivations(t, n, topPath)
	hasher := derivation.NewHasher(derivation.FileLoader{})
	kinds := map[string]int{}
	var top *derivation.Derivation
	for _, p := range closure {
		if !strings.HasSuffix(p, ".drv") {
			continue // input sources are in the closure too
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		d, err := derivation.Parse(data, n.StoreDir)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if diff := cmp.Diff(shown[p], toShown(t, p, d), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s: parsed differently from nix show-derivation (-nix +ours):\n%s", p, diff)
		}
		if got := d.MarshalATerm(); !bytes.Equal(got, data) {
			t.Errorf("%s: serialised differently:\n got %s\nwant %s", p, got, data)
		}
		if got, err := d.DrvPath(); err != nil || got.String() != p {
			t.Errorf("%s: DrvPath() = %s, %v", p, got, err)
		}
		if err := d.VerifyOutputPaths(t.Context(), hasher); err != nil {
			t.Errorf("%s: %v", p, err)
		}
		kinds[kind(d)]++
		if p == topPath {
			top = d
		}
	}
	want := map[string]int{
		"fod flat md5": 1, "fod r: md5": 1, "fod flat sha1": 1, "fod r: sha1": 1,
		"fod flat sha256": 1 + 3, "fod r: sha256": 1 + 2, "fod flat sha512": 1 + 1, "fod r: sha512": 1,
		"input-addressed 1 outputs": 2, "input-addressed 3 outputs": 1,
		"fod flat sha256 structured": 1, "fod r: sha256 structured": 1, "input-addressed 1 outputs structured": 1,
	}
	if diff := cmp.Diff(want, kinds); diff != "" {
		t.Errorf("closure kinds (-want +got):\n%s", diff)
	}
	if top == nil {
		t.Fatal("top derivation not parsed")
	}
	checkChanged(t, n, expr, top)
	p, err := n.StoreDir.Parse(topPath)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// checkChanged predicts the .drv and outputs of top with one more
// environment variable, as later code will for a changed derivation, and
// compares them with what Nix instantiates.
func checkChanged(t *testing.T, n *nixtest.Nix, expr string, top *derivation.Derivation) {
	changed := *top
	changed.Env = map[string]string{"extra": "changed"}
	changed.Outputs = map[string]derivation.Output{}
	for k, v := range top.Env {
		changed.Env[k] = v
	}
	for out := range top.Outputs {
		changed.Outputs[out] = derivation.Output{}
		changed.Env[out] = ""
	}
	paths, err := changed.PredictOutputPaths(t.Context(), derivation.NewHasher(derivation.FileLoader{}))
	if err != nil {
		t.Fatal(err)
	}
	for out, p := range paths {
		changed.Outputs[out] = derivation.Output{Path: p}
		changed.Env[out] = p.String()
	}
	predicted, err := changed.DrvPath()
	if err != nil {
		t.Fatal(err)
	}
	real := n.Run(t, "nix-instantiate", "--argstr", "extra", "changed", expr)
	if predicted.String() != real {
		t.Errorf("changed derivation: predicted %s, Nix instantiates %s", predicted, real)
	}
	if paths["out"] == top.Outputs["out"].Path {
		t.Errorf("changed derivation keeps output %s", paths["out"])
	}
}

func kind(d *derivation.Derivation) string {
	k := "input-addressed " + string(rune('0'+len(d.Outputs))) + " outputs"
	if m, h, ok := d.FixedOutput(); ok {
		mode := "flat"
		if m == storepath.Recursive {
			mode = "r:"
		}
		k = "fod " + mode + " " + h.Algo.String()
	}
	if d.IsStructured() {
		k += " structured"
	}
	return k
}

// showDerivations runs nix show-derivation -r (nix derivation show on
// newer Nix) through nixcli, which reads every version's JSON.
func showDerivations(t *testing.T, n *nixtest.Nix, drv string) map[string]nixcli.Derivation {
	t.Helper()
	p, err := n.StoreDir.Parse(drv)
	if err != nil {
		t.Fatal(err)
	}
	r := nixcli.Runner{Env: n.Env, KnownStoreDir: n.StoreDir}
	drvs, err := r.ShowDerivationClosure(t.Context(), p)
	if err != nil {
		t.Fatal(err)
	}
	shown := map[string]nixcli.Derivation{}
	for _, d := range drvs {
		shown[d.Path.String()] = d
	}
	return shown
}

// toShown is d as nixcli reads it from Nix's JSON.
func toShown(t *testing.T, p string, d *derivation.Derivation) nixcli.Derivation {
	t.Helper()
	path, err := d.StoreDir.Parse(p)
	if err != nil {
		t.Fatal(err)
	}
	s := nixcli.Derivation{
		Path:      path,
		Name:      d.Name(),
		Outputs:   map[string]nixcli.Output{},
		InputSrcs: d.InputSrcs,
		InputDrvs: d.InputDrvs,
		Platform:  d.Platform,
		Builder:   d.Builder,
		Args:      d.Args,
		Env:       d.Env,
	}
	if js, ok := d.Env["__json"]; ok {
		s.Env = maps.Clone(d.Env)
		delete(s.Env, "__json")
		s.StructuredAttrs = json.RawMessage(js)
	}
	for name, o := range d.Outputs {
		out := nixcli.Output{Path: o.Path}
		if o.HashAlgo != "" {
			method, h, ok := d.FixedOutput()
			if !ok {
				t.Fatalf("%s: output %s has hash algo %q but is not fixed", p, name, o.HashAlgo)
			}
			out.Method, out.HashAlgo, out.Hash = "flat", h.Algo, h
			if method == storepath.Recursive {
				out.Method = "nar"
			}
		}
		s.Outputs[name] = out
	}
	return s
}

// whole keeps all of a derivation ReadClosure reads.
func whole(_ storepath.Path, d *derivation.Derivation) (*derivation.Derivation, error) { return d, nil }

// checkReadClosure compares ReadClosure with the .drv files in Nix's own
// closure of top.
func checkReadClosure(t *testing.T, dir storepath.Dir, top string, closure []string) {
	t.Helper()
	topPath, err := dir.Parse(top)
	if err != nil {
		t.Fatal(err)
	}
	drvs, err := derivation.ReadClosure(t.Context(), dir, []storepath.Path{topPath}, 4, whole)
	if err != nil {
		t.Fatal(err)
	}
	var got, want []string
	for p, d := range drvs {
		if d == nil {
			t.Errorf("ReadClosure left %s unread", p)
		}
		got = append(got, p.String())
	}
	for _, p := range closure {
		if strings.HasSuffix(p, ".drv") {
			want = append(want, p)
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ReadClosure(%s) differs from nix-store -qR (-want +got):\n%s", top, diff)
	}
	if _, err := derivation.ReadClosure(t.Context(), dir, []storepath.Path{{Dir: dir, Hash: topPath.Hash, Name: "missing.drv"}}, 4, whole); err == nil {
		t.Error("ReadClosure of a missing .drv succeeded")
	}
	boom := errors.New("boom")
	names, err := derivation.ReadClosure(t.Context(), dir, []storepath.Path{topPath}, 4, func(p storepath.Path, d *derivation.Derivation) (string, error) {
		return d.Name(), nil
	})
	if err != nil || len(names) != len(drvs) || names[topPath] != drvs[topPath].Name() {
		t.Errorf("ReadClosure keeping names: %d of %d, %q for the top, error %v", len(names), len(drvs), names[topPath], err)
	}
	if _, err := derivation.ReadClosure(t.Context(), dir, []storepath.Path{topPath}, 4, func(p storepath.Path, d *derivation.Derivation) (int, error) {
		return 0, boom
	}); !errors.Is(err, boom) {
		t.Errorf("ReadClosure with a failing keep: error %v, want boom", err)
	}
}
