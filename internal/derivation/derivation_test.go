package derivation_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/derivation"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

var update = flag.Bool("update", false, "rewrite golden files")

// testdata/drv holds the closure of testdata/closure.nix as real Nix
// instantiated it in /nix/store: 2.8 wrote most, 2.26.3 (in the Debian
// trixie chroot of the Nix matrix) the structured-attrs ones and top; the
// files of the derivations both wrote are identical.
const goldenDir = "testdata/drv"

func readGolden(t testing.TB, base string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(goldenDir, base))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func goldenLoader() derivation.Loader {
	return derivation.LoaderFunc(func(_ context.Context, p storepath.Path) (*derivation.Derivation, error) {
		return derivation.ReadFile(filepath.Join(goldenDir, p.Base()), p.Dir)
	})
}

type summary struct {
	Outputs    map[string]string `json:",omitempty"`
	Fixed      string            `json:",omitempty"`
	FetchURLs  []string          `json:",omitempty"`
	MirrorPath string            `json:",omitempty"`
}

// TestGolden checks the committed .drv files without running Nix: round
// trip, .drv path, output paths, and a golden summary of the answers the
// pack and serve halves use.
func TestGolden(t *testing.T) {
	entries, err := os.ReadDir(goldenDir)
	if err != nil {
		t.Fatal(err)
	}
	hasher := derivation.NewHasher(goldenLoader())
	got := map[string]summary{}
	for _, e := range entries {
		data := readGolden(t, e.Name())
		d, err := derivation.Parse(data, storepath.DefaultDir)
		if err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		if !bytes.Equal(d.MarshalATerm(), data) {
			t.Errorf("%s: round trip differs", e.Name())
		}
		if p, err := d.DrvPath(); err != nil || p.Base() != e.Name() {
			t.Errorf("%s: DrvPath() = %s, %v", e.Name(), p, err)
		}
		if err := d.VerifyOutputPaths(t.Context(), hasher); err != nil {
			t.Errorf("%s: %v", e.Name(), err)
		}
		s := summary{Outputs: map[string]string{}, FetchURLs: d.FetchURLs()}
		for name, o := range d.Outputs {
			s.Outputs[name] = o.Path.Base()
		}
		if m, h, ok := d.FixedOutput(); ok {
			s.Fixed = m.Prefix() + h.String()
		}
		s.MirrorPath, _ = d.MirrorPath()
		got[e.Name()] = s
	}
	want, err := json.MarshalIndent(got, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, '\n')
	const golden = "testdata/summary.golden.json"
	if *update {
		if err := os.WriteFile(golden, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(old), string(want)); diff != "" {
		t.Errorf("summary differs from %s (-golden +got):\n%s", golden, diff)
	}
}

func TestParseErrors(t *testing.T) {
	valid := string(readGolden(t, "2l6x5drcpicvdkhvm6b6pjvp71q1d63j-flat.tar.gz.drv"))
	tests := []struct {
		name string
		in   string
	}{
		{"empty", ""},
		{"not a derivation", "Derivex([],[],[],\"\",\"\",[],[])"},
		{"trailing newline", valid + "\n"},
		{"trailing garbage", valid + "x"},
		{"truncated", valid[:len(valid)-1]},
		{"unterminated string", `Derive([("out`},
		{"missing comma", strings.Replace(valid, `")],[],[],`, `")][],[],`, 1)},
		{"space", strings.Replace(valid, `[],[],`, `[], [],`, 1)},
		{"trailing comma in list", strings.Replace(valid, `"builtin:fetchurl",[]`, `"builtin:fetchurl",["a",]`, 1)},
		{"unknown escape", strings.Replace(valid, `"preferLocalBuild","1"`, `"preferLocalBuild","\a"`, 1)},
		{"escape at end", `Derive([],[],[],"","\`},
		{"raw newline in escaped field", strings.Replace(valid, `"preferLocalBuild","1"`, "\"preferLocalBuild\",\"\n\"", 1)},
		{"backslash in platform", strings.Replace(valid, `"builtin","builtin:fetchurl"`, `"bu\\ltin","builtin:fetchurl"`, 1)},
		{"env out of order", strings.Replace(valid, `("builder","builtin:fetchurl"),("executable","")`, `("executable",""),("builder","builtin:fetchurl")`, 1)},
		{"env repeated", strings.Replace(valid, `("builder","builtin:fetchurl")`, `("builder","builtin:fetchurl"),("builder","x")`, 1)},
		{"output path outside store", strings.Replace(valid, `"/nix/store/`, `"/gnu/store/`, 1)},
		{"bad output path", strings.Replace(valid, `-flat.tar.gz","sha256"`, `-flat/tar.gz","sha256"`, 1)},
		{"outputs repeated", `Derive([("out","","",""),("out","","","")],[],[],"","",[],[])`},
		{"input drvs out of order", `Derive([],[("/nix/store/h2mq72i5ggcdq8p8bizapi9sxx23q78v-b.drv",[]),("/nix/store/h2mq72i5ggcdq8p8bizapi9sxx23q78v-a.drv",[])],[],"","",[],[])`},
		{"input outputs repeated", `Derive([],[("/nix/store/h2mq72i5ggcdq8p8bizapi9sxx23q78v-b.drv",["out","out"])],[],"","",[],[])`},
		{"input srcs out of order", `Derive([],[],["/nix/store/h2mq72i5ggcdq8p8bizapi9sxx23q78v-b","/nix/store/h2mq72i5ggcdq8p8bizapi9sxx23q78v-a"],"","",[],[])`},
		{"empty input src", `Derive([],[],[""],"","",[],[])`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.in == valid {
				t.Fatal("test input equals the valid derivation")
			}
			d, err := derivation.Parse([]byte(tc.in), storepath.DefaultDir)
			if !errors.Is(err, derivation.ErrSyntax) {
				t.Errorf("Parse() = %v, %v; want ErrSyntax", d, err)
			}
		})
	}
}

func TestParseEdgeCases(t *testing.T) {
	for _, in := range []string{
		`Derive([],[],[],"","",[],[])`,
		`Derive([("out","","","")],[],[],"","",[""],[("","")])`,
		"Derive([],[],[],\"multi\nline\x00\",\"\\\"\\\\\\n\\r\\t\x01\",[\"\xff\"],[])",
	} {
		d, err := derivation.Parse([]byte(in), storepath.DefaultDir)
		if err != nil {
			t.Errorf("Parse(%q): %v", in, err)
			continue
		}
		if got := string(d.MarshalATerm()); got != in {
			t.Errorf("Parse(%q) serialises as %q", in, got)
		}
	}
}

func TestParseTooLarge(t *testing.T) {
	_, err := derivation.Parse(make([]byte, derivation.MaxSize+1), storepath.DefaultDir)
	if !errors.Is(err, derivation.ErrTooLarge) {
		t.Errorf("Parse() error = %v, want ErrTooLarge", err)
	}
	name := filepath.Join(t.TempDir(), "big.drv")
	if err := os.WriteFile(name, make([]byte, derivation.MaxSize+1), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := derivation.ReadFile(name, storepath.DefaultDir); !errors.Is(err, derivation.ErrTooLarge) {
		t.Errorf("ReadFile() error = %v, want ErrTooLarge", err)
	}
}

func TestFixedOutput(t *testing.T) {
	sha256 := "68c5ccdad0655d816f445d522a3da5f0d2bc0324d67ae165b993e28ecb595506"
	tests := []struct {
		name    string
		outputs map[string]derivation.Output
		method  storepath.Method
		algo    storepath.Algo
		ok      bool
	}{
		{"flat hex", map[string]derivation.Output{"out": {HashAlgo: "sha256", Hash: sha256}}, storepath.Flat, storepath.SHA256, true},
		{"recursive nix32", map[string]derivation.Output{"out": {HashAlgo: "r:sha256", Hash: "01jmb75qxqlkp5jy2ynn4h1vrlphllyjlljx8ipq2pb5s3dcrib8"}}, storepath.Recursive, storepath.SHA256, true},
		{"recursive base64", map[string]derivation.Output{"out": {HashAlgo: "r:sha256", Hash: "aMXM2tBlXYFvRF1SKj2l8NK8AyTWeuFluZPijstZVQY="}}, storepath.Recursive, storepath.SHA256, true},
		{"wrong length", map[string]derivation.Output{"out": {HashAlgo: "sha1", Hash: sha256}}, 0, 0, false},
		{"unknown algo", map[string]derivation.Output{"out": {HashAlgo: "sha3", Hash: sha256}}, 0, 0, false},
		{"SRI not accepted", map[string]derivation.Output{"out": {HashAlgo: "sha256", Hash: "sha256-aMXM2tBlXYFvRF1SKj2l8NK8AyTWeuFluZPijstZVQY="}}, 0, 0, false},
		{"floating", map[string]derivation.Output{"out": {HashAlgo: "r:sha256"}}, 0, 0, false},
		{"not out", map[string]derivation.Output{"bin": {HashAlgo: "sha256", Hash: sha256}}, 0, 0, false},
		{"two outputs", map[string]derivation.Output{"out": {HashAlgo: "sha256", Hash: sha256}, "dev": {}}, 0, 0, false},
		{"input-addressed", map[string]derivation.Output{"out": {}}, 0, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := &derivation.Derivation{StoreDir: storepath.DefaultDir, Outputs: tc.outputs, Env: map[string]string{"name": "x"}}
			m, h, ok := d.FixedOutput()
			if ok != tc.ok || m != tc.method || h.Algo != tc.algo {
				t.Errorf("FixedOutput() = %v, %v, %v; want %v, %v, %v", m, h.Algo, ok, tc.method, tc.algo, tc.ok)
			}
			if ok && h.Hex() != sha256 {
				t.Errorf("FixedOutput() hash = %s, want %s", h.Hex(), sha256)
			}
			if _, err := d.PredictFixedOutputPath(); (err == nil) != tc.ok {
				t.Errorf("PredictFixedOutputPath() error = %v", err)
			}
		})
	}
}

func TestOutputPaths(t *testing.T) {
	out, err := storepath.DefaultDir.Base("01jmb75qxqlkp5jy2ynn4h1vrlphllyj-x")
	if err != nil {
		t.Fatal(err)
	}
	dev, err := storepath.DefaultDir.Base("0jmb75qxqlkp5jy2ynn4h1vrlphllyjl-x-dev")
	if err != nil {
		t.Fatal(err)
	}
	sha256 := "68c5ccdad0655d816f445d522a3da5f0d2bc0324d67ae165b993e28ecb595506"
	fixed := &derivation.Derivation{StoreDir: storepath.DefaultDir, Outputs: map[string]derivation.Output{"out": {HashAlgo: "sha256", Hash: sha256}}, Env: map[string]string{"name": "x"}}
	fixedPath, err := fixed.PredictFixedOutputPath()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		outputs map[string]derivation.Output
		want    map[string]storepath.Path
		err     error
	}{
		{"recorded", map[string]derivation.Output{"out": {Path: out}, "dev": {Path: dev}}, map[string]storepath.Path{"out": out, "dev": dev}, nil},
		{"fixed, recorded", map[string]derivation.Output{"out": {Path: out, HashAlgo: "sha256", Hash: sha256}}, map[string]storepath.Path{"out": out}, nil},
		{"fixed, left empty", fixed.Outputs, map[string]storepath.Path{"out": fixedPath}, nil},
		{"fixed, bad hash", map[string]derivation.Output{"out": {HashAlgo: "sha1", Hash: sha256}}, nil, derivation.ErrNotFixedOutput},
		{"floating", map[string]derivation.Output{"out": {HashAlgo: "r:sha256"}}, nil, derivation.ErrUnsupported},
		{"deferred", map[string]derivation.Output{"out": {}}, nil, derivation.ErrUnsupported},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := &derivation.Derivation{StoreDir: storepath.DefaultDir, Outputs: tc.outputs, Env: map[string]string{"name": "x"}}
			got, err := d.OutputPaths()
			if !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
				t.Fatalf("OutputPaths() error = %v, want %v", err, tc.err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("OutputPaths() (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFetchURLs(t *testing.T) {
	fixed := map[string]derivation.Output{"out": {HashAlgo: "sha256", Hash: "68c5ccdad0655d816f445d522a3da5f0d2bc0324d67ae165b993e28ecb595506"}}
	tests := []struct {
		name    string
		outputs map[string]derivation.Output
		env     map[string]string
		want    []string
	}{
		{"builtin:fetchurl", fixed, map[string]string{"url": "http://a/x", "urls": "http://a/x"}, []string{"http://a/x"}},
		{"nixpkgs urls", fixed, map[string]string{"urls": "mirror://gnu/x http://b/x"}, []string{"mirror://gnu/x", "http://b/x"}},
		{"url not in urls", fixed, map[string]string{"url": "http://c/x", "urls": "http://b/x"}, []string{"http://b/x", "http://c/x"}},
		{"no urls", fixed, map[string]string{"rev": "abc"}, nil},
		{"structured urls", fixed, map[string]string{"__json": `{"name":"x","urls":["http://a/x","mirror://gnu/x"]}`, "out": "/nix/store/x"}, []string{"http://a/x", "mirror://gnu/x"}},
		{"structured url", fixed, map[string]string{"__json": `{"url":"https://git.example/r.git","rev":"abc"}`}, []string{"https://git.example/r.git"}},
		{"structured urls string", fixed, map[string]string{"__json": `{"urls":"http://a/x http://b/x","url":"http://a/x"}`}, []string{"http://a/x", "http://b/x"}},
		{"structured odd values", fixed, map[string]string{"__json": `{"urls":[1,"http://a/x",null],"url":{"no":"pe"}}`}, []string{"http://a/x"}},
		{"structured env ignored", fixed, map[string]string{"__json": `{}`, "urls": "http://env/x"}, nil},
		{"structured bad json", fixed, map[string]string{"__json": `{`, "urls": "http://env/x"}, []string{"http://env/x"}},
		{"not fixed", map[string]derivation.Output{"out": {}}, map[string]string{"url": "http://a/x"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := &derivation.Derivation{Outputs: tc.outputs, Env: tc.env}
			if diff := cmp.Diff(tc.want, d.FetchURLs()); diff != "" {
				t.Errorf("FetchURLs() (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHasherErrors(t *testing.T) {
	top, err := derivation.Parse(readGolden(t, "gk3hqc4d2d6rggnh0q2qdnyysi5nsifd-top.drv"), storepath.DefaultDir)
	if err != nil {
		t.Fatal(err)
	}
	errLoad := errors.New("load failed")
	failing := derivation.LoaderFunc(func(context.Context, storepath.Path) (*derivation.Derivation, error) {
		return nil, errLoad
	})
	if _, err := top.PredictOutputPaths(t.Context(), derivation.NewHasher(failing)); !errors.Is(err, errLoad) {
		t.Errorf("with failing loader: error = %v, want %v", err, errLoad)
	}
	cyclic := derivation.LoaderFunc(func(context.Context, storepath.Path) (*derivation.Derivation, error) {
		return top, nil
	})
	if _, err := top.PredictOutputPaths(t.Context(), derivation.NewHasher(cyclic)); !errors.Is(err, derivation.ErrCycle) {
		t.Errorf("with cyclic loader: error = %v, want ErrCycle", err)
	}
	changed := *top
	changed.Outputs = map[string]derivation.Output{"out": {Path: top.Outputs["out"].Path}, "dev": {Path: top.Outputs["out"].Path}}
	if err := changed.VerifyOutputPaths(t.Context(), derivation.NewHasher(goldenLoader())); !errors.Is(err, derivation.ErrOutputMismatch) {
		t.Errorf("with an added output: error = %v, want ErrOutputMismatch", err)
	}
	floating := derivation.Derivation{StoreDir: storepath.DefaultDir, Outputs: map[string]derivation.Output{"out": {HashAlgo: "r:sha256"}}, Env: map[string]string{"name": "x"}}
	if _, err := floating.PredictOutputPaths(t.Context(), derivation.NewHasher(failing)); !errors.Is(err, derivation.ErrUnsupported) {
		t.Errorf("floating CA derivation: error = %v, want ErrUnsupported", err)
	}
}

// TestHasherConcurrent shares one Hasher between goroutines, as a planner
// walking a closure in parallel does; run it with -race.
func TestHasherConcurrent(t *testing.T) {
	hasher := derivation.NewHasher(goldenLoader())
	entries, err := os.ReadDir(goldenDir)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, len(entries))
	for _, e := range entries {
		go func() {
			d, err := derivation.ReadFile(filepath.Join(goldenDir, e.Name()), storepath.DefaultDir)
			if err == nil {
				err = d.VerifyOutputPaths(t.Context(), hasher)
			}
			errs <- err
		}()
	}
	for range entries {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
