package nixcli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.json")

func readDir(t testing.TB, name string) storepath.Dir {
	t.Helper()
	dir, err := storepath.ParseDir(strings.TrimSpace(string(readFile(t, name))))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// golden compares v's JSON with testdata/NAME, or rewrites it with -update.
func golden(t *testing.T, name string, v any) {
	t.Helper()
	got, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff(string(readFile(t, name)), string(got)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", name, diff)
	}
}

// TestParsePathInfoShapes parses every recorded and written shape (see
// testdata/README.md) and wants one normalised result. The recordings all
// name the same paths; the written files describe only some of them.
func TestParsePathInfoShapes(t *testing.T) {
	dir := readDir(t, "nix-2.8/store-dir.txt")
	parse := func(files ...string) ([]nixcli.PathInfo, []storepath.Path) {
		var infos []nixcli.PathInfo
		var invalid []storepath.Path
		for _, f := range files {
			i, inv, err := nixcli.ParsePathInfo(dir, bytes.NewReader(readFile(t, f)))
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			infos, invalid = append(infos, i...), append(invalid, inv...)
		}
		// Registration times differ between recordings.
		for i := range infos {
			if infos[i].RegistrationTime == 0 {
				t.Errorf("%v: %s has no registration time", files, infos[i].Path)
			}
			infos[i].RegistrationTime = 0
		}
		return sortInfos(infos), invalid
	}
	wantInfos, wantInvalid := parse("nix-2.8/path-info-drv.json", "nix-2.8/path-info.json", "nix-2.8/path-info-invalid.json")
	if len(wantInfos) != 6 || len(wantInvalid) != 1 {
		t.Fatalf("Nix 2.8: %d infos and %d invalid, want 6 and 1", len(wantInfos), len(wantInvalid))
	}
	golden(t, "path-info.golden.json", infoViews(wantInfos))
	for _, c := range []struct {
		files    []string
		complete bool // all the recorded paths, not some
	}{
		{[]string{"nix-2.19/path-info-drv.json", "nix-2.19/path-info.json"}, false},
		{[]string{"nix-2.24/path-info-drv.json", "nix-2.24/path-info.json"}, false},
		{[]string{"nix-2.26/path-info-drv.json", "nix-2.26/path-info.json", "nix-2.26/path-info-invalid.json"}, true},
		{[]string{"nix-2.33/path-info.json"}, false},
		{[]string{"nix-2.34/path-info-drv.json", "nix-2.34/path-info.json", "nix-2.34/path-info-invalid.json"}, true},
		{[]string{"nix-2.34/path-info-drv.json", "nix-2.34/path-info-2.json"}, true},
		{[]string{"nix-2.34/path-info-drv.json", "nix-2.35/path-info.json"}, true},
	} {
		infos, invalid := parse(c.files...)
		// Nix 2.8 leaves out empty signatures and unknown fields; the
		// newer shapes give them as [] and null.
		for i := range infos {
			if infos[i].Signatures != nil && len(infos[i].Signatures) == 0 {
				infos[i].Signatures = nil
			}
		}
		want := wantInfos
		if !c.complete {
			want = slices.DeleteFunc(slices.Clone(wantInfos), func(w nixcli.PathInfo) bool {
				return !slices.ContainsFunc(infos, func(i nixcli.PathInfo) bool { return i.Path == w.Path })
			})
		}
		if diff := cmp.Diff(want, infos); diff != "" {
			t.Errorf("%v (-2.8 +newer):\n%s", c.files, diff)
		}
		if diff := cmp.Diff(wantInvalid, invalid); diff != "" {
			t.Errorf("%v invalid paths (-2.8 +newer):\n%s", c.files, diff)
		}
	}
}

func sortInfos(infos []nixcli.PathInfo) []nixcli.PathInfo {
	out := slices.Clone(infos)
	slices.SortFunc(out, func(a, b nixcli.PathInfo) int { return storepath.Compare(a.Path, b.Path) })
	return out
}

// infoViews and drvViews render parsed values with paths and hashes as
// Nix prints them, for readable golden files.
func infoViews(infos []nixcli.PathInfo) []map[string]any {
	var out []map[string]any
	for _, i := range infos {
		out = append(out, map[string]any{
			"path": i.Path.String(), "narHash": i.NarHash.String(), "narSize": i.NarSize,
			"references": pathStringsTest(i.References), "deriver": pathString(i.Deriver),
			"signatures": i.Signatures, "ca": i.CA, "registrationTime": i.RegistrationTime, "ultimate": i.Ultimate,
		})
	}
	return out
}

func drvViews(drvs []nixcli.Derivation) []map[string]any {
	var out []map[string]any
	for _, d := range drvs {
		outputs := map[string]any{}
		for name, o := range d.Outputs {
			h := ""
			if !o.Hash.IsZero() {
				h = o.Hash.String()
			}
			outputs[name] = map[string]any{"path": pathString(o.Path), "method": o.Method, "hashAlgo": algoString(o.HashAlgo), "hash": h, "impure": o.Impure}
		}
		inputDrvs := map[string][]string{}
		for p, outs := range d.InputDrvs {
			inputDrvs[p.String()] = outs
		}
		out = append(out, map[string]any{
			"path": d.Path.String(), "name": d.Name, "outputs": outputs, "inputSrcs": pathStringsTest(d.InputSrcs),
			"inputDrvs": inputDrvs, "platform": d.Platform, "builder": d.Builder, "args": d.Args, "env": d.Env,
			"structuredAttrs": d.StructuredAttrs, "isFixedOutput": d.IsFixedOutput(),
		})
	}
	return out
}

func pathString(p storepath.Path) string {
	if p.Hash == "" {
		return ""
	}
	return p.String()
}

func algoString(a storepath.Algo) string {
	if a == 0 {
		return ""
	}
	return a.String()
}

func TestParseDerivationShapes(t *testing.T) {
	dir := readDir(t, "nix-2.8/store-dir.txt")
	parse := func(f string) []nixcli.Derivation {
		drvs, err := nixcli.ParseDerivations(dir, bytes.NewReader(readFile(t, f)))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		return drvs
	}
	want := parse("nix-2.8/show-derivation.json")
	if len(want) != 5 {
		t.Fatalf("Nix 2.8: %d derivations, want 5", len(want))
	}
	golden(t, "derivations.golden.json", drvViews(want))
	for _, c := range []struct {
		file     string
		complete bool // all the recorded derivations, not some
	}{
		{"nix-2.24/derivation-show.json", false},
		{"nix-2.26/show-derivation.json", true},
		{"nix-2.30/derivation-show.json", true},
		{"nix-2.32/derivation-show.json", true},
		{"nix-2.33/derivation-show.json", false},
		{"nix-2.34/show-derivation.json", true},
	} {
		got := parse(c.file)
		want := want
		if !c.complete {
			// The written files lack the structured-attrs derivation.
			want = slices.DeleteFunc(slices.Clone(want), func(d nixcli.Derivation) bool { return d.StructuredAttrs != nil })
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s (-2.8 +newer):\n%s", c.file, diff)
		}
	}
}

func TestParseConfig(t *testing.T) {
	// Recorded by TestConfig.
	for _, v := range []string{"2.8", "2.26", "2.34"} {
		c, err := nixcli.ParseConfig(bytes.NewReader(readFile(t, "nix-"+v+"/show-config.json")))
		if err != nil {
			t.Fatalf("Nix %s: %v", v, err)
		}
		if len(c.Substituters) != 2 || len(c.TrustedPublicKeys) != 1 || c.RequireSigs || string(c.Settings["sandbox"]) != "false" {
			t.Errorf("Nix %s: ParseConfig = %v %v %v sandbox=%s", v, c.Substituters, c.TrustedPublicKeys, c.RequireSigs, c.Settings["sandbox"])
		}
	}
}

func TestParseFlake(t *testing.T) {
	for _, v := range []string{"2.8", "2.26", "2.34"} {
		dir := readDir(t, "nix-"+v+"/flake-store-dir.txt")
		m, err := nixcli.ParseFlakeMetadata(dir, bytes.NewReader(readFile(t, "nix-"+v+"/flake-metadata.json")))
		if err != nil {
			t.Fatalf("Nix %s: %v", v, err)
		}
		a, err := nixcli.ParseFlakeArchive(dir, bytes.NewReader(readFile(t, "nix-"+v+"/flake-archive.json")))
		if err != nil {
			t.Fatalf("Nix %s: %v", v, err)
		}
		if v == "2.8" {
			golden(t, "flake.golden.json", map[string]any{"metadata": m, "archive": a})
		}
		src, err := m.Locks.Nodes["dep"].Locked.SourcePath(dir)
		if err != nil || src != a.Inputs["dep"].Path {
			t.Errorf("Nix %s: dep SourcePath = %v, %v; archive says %v", v, src, err, a.Inputs["dep"].Path)
		}
		if u := m.Locks.Nodes["dep"].Locked.URL(); !strings.HasPrefix(u, "path:/tmp/") || !strings.HasSuffix(u, "/dep") {
			t.Errorf("Nix %s: dep's locked URL %q, want path:…/dep", v, u)
		}
		if self, err := m.Locked.SourcePath(dir); err != nil || self != m.Path || a.Path != m.Path {
			t.Errorf("Nix %s: flake source from narHash %v, %v; metadata says %v, archive %v", v, self, err, m.Path, a.Path)
		}
	}
}

func TestParseErrors(t *testing.T) {
	const dir = storepath.Dir("/s")
	const p = `"/s/00000000000000000000000000000000-x"`
	for _, c := range []struct {
		name, kind, in string
		want           error
	}{
		{"not JSON", "path-info", `[{`, nixcli.ErrUnexpectedOutput},
		{"array entry without path", "path-info", `[{"narHash":"x"}]`, nixcli.ErrUnexpectedOutput},
		{"path outside store", "path-info", `{"/nix/store/00000000000000000000000000000000-x":null}`, storepath.ErrBadPath},
		{"bad narHash", "path-info", `{` + p + `:{"narHash":"sha256-zz","narSize":1,"references":[]}}`, storepath.ErrBadHash},
		{"bad reference", "path-info", `{` + p + `:{"narHash":"sha256-IlLUt4yU6Mes5OMxe3i9/mS8jjlwpk620vfCpEPAw/w=","references":["x"]}}`, storepath.ErrBadPath},
		{"bad ca method", "path-info", `{` + p + `:{"narHash":"sha256-IlLUt4yU6Mes5OMxe3i9/mS8jjlwpk620vfCpEPAw/w=","ca":{"method":"zip","hash":"sha256-IlLUt4yU6Mes5OMxe3i9/mS8jjlwpk620vfCpEPAw/w="}}}`, nixcli.ErrUnexpectedOutput},
		{"other store dir", "path-info", `{"version":2,"storeDir":"/nix/store","info":{}}`, nixcli.ErrUnexpectedOutput},
		{"not a drv", "derivation", `{` + p + `:{}}`, nixcli.ErrUnexpectedOutput},
		{"bad hash algo", "derivation", `{"/s/00000000000000000000000000000000-x.drv":{"outputs":{"out":{"hashAlgo":"r:crc32","hash":"00"}}}}`, storepath.ErrBadHash},
		{"dynamic outputs", "derivation", `{"/s/00000000000000000000000000000000-x.drv":{"inputDrvs":{"/s/00000000000000000000000000000000-y.drv":{"outputs":[],"dynamicOutputs":{"a":{}}}}}}`, nixcli.ErrUnsupported},
		{"bad method", "derivation", `{"/s/00000000000000000000000000000000-x.drv":{"outputs":{"out":{"method":"zip"}}}}`, nixcli.ErrUnexpectedOutput},
		// The shapes of 2.33+ (testdata/nix-2.33): wrapped, base names, inputs, SRI hashes, signature objects.
		{"v4 dynamic outputs", "derivation", `{"version":4,"derivations":{"00000000000000000000000000000000-x.drv":{"inputs":{"srcs":[],"drvs":{"00000000000000000000000000000000-y.drv":{"outputs":[],"dynamicOutputs":{"a":{}}}}}}}}`, nixcli.ErrUnsupported},
		{"v4 bad input source", "derivation", `{"version":4,"derivations":{"00000000000000000000000000000000-x.drv":{"inputs":{"srcs":["x"],"drvs":{}}}}}`, storepath.ErrBadPath},
		{"v4 bad fixed hash", "derivation", `{"version":4,"derivations":{"00000000000000000000000000000000-x.drv":{"outputs":{"out":{"method":"flat","hash":"sha256-zz"}}}}}`, storepath.ErrBadHash},
		{"v3 signature without key name", "path-info", `{"version":3,"storeDir":"/s","info":{"00000000000000000000000000000000-x":{"narHash":"sha256-IlLUt4yU6Mes5OMxe3i9/mS8jjlwpk620vfCpEPAw/w=","narSize":1,"references":[],"signatures":[{"keyName":"","sig":"AA=="}]}}}`, nixcli.ErrUnexpectedOutput},
		{"config without substituters", "config", `{"trusted-public-keys":{"value":[]},"require-sigs":{"value":true}}`, nixcli.ErrUnexpectedOutput},
		{"flake without root", "flake-metadata", `{"path":"/s/00000000000000000000000000000000-source","locks":{"root":"root","nodes":{}}}`, nixcli.ErrUnexpectedOutput},
		{"archive bad path", "flake-archive", `{"path":"/s/source"}`, storepath.ErrBadPath},
		{"version garbage", "version", `nix 2.8`, nixcli.ErrUnexpectedOutput},
		{"version without minor", "version", `nix (Nix) 2`, nixcli.ErrUnexpectedOutput},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := parseAny(dir, c.kind, []byte(c.in))
			if !errors.Is(err, c.want) {
				t.Errorf("error %v, want %v", err, c.want)
			}
		})
	}
}

// parseAny runs the parser for kind and returns only its error.
func parseAny(dir storepath.Dir, kind string, in []byte) error {
	r := bytes.NewReader(in)
	var err error
	switch kind {
	case "path-info":
		_, _, err = nixcli.ParsePathInfo(dir, r)
	case "derivation":
		_, err = nixcli.ParseDerivations(dir, r)
	case "config":
		_, err = nixcli.ParseConfig(r)
	case "flake-metadata":
		_, err = nixcli.ParseFlakeMetadata(dir, r)
	case "flake-archive":
		_, err = nixcli.ParseFlakeArchive(dir, r)
	case "version":
		_, err = nixcli.ParseVersion(string(in))
	default:
		panic("parseAny: unknown kind " + kind)
	}
	return err
}

func TestParseVersion(t *testing.T) {
	for _, c := range []struct {
		in   string
		want nixcli.Version
		lix  bool
		is25 bool // AtLeast(2, 25)
	}{
		{"nix (Nix) 2.8.0\n", nixcli.Version{Impl: "Nix", Major: 2, Minor: 8, Raw: "2.8.0"}, false, false},
		{"nix (Nix) 2.24.10", nixcli.Version{Impl: "Nix", Major: 2, Minor: 24, Patch: 10, Raw: "2.24.10"}, false, false},
		{string(readFile(t, "nix-2.26/version.txt")), nixcli.Version{Impl: "Nix", Major: 2, Minor: 26, Patch: 3, Raw: "2.26.3"}, false, true},
		{string(readFile(t, "nix-2.34/version.txt")), nixcli.Version{Impl: "Nix", Major: 2, Minor: 34, Patch: 8, Raw: "2.34.8"}, false, true},
		{"nix (Determinate Nix 3.6.2) 2.26.3", nixcli.Version{Impl: "Determinate Nix 3.6.2", Major: 2, Minor: 26, Patch: 3, Raw: "2.26.3"}, false, true},
		{"nix (Lix, like Nix) 2.91.1", nixcli.Version{Impl: "Lix, like Nix", Major: 2, Minor: 91, Patch: 1, Raw: "2.91.1"}, true, false},
		{"nix (Nix) 2.4pre20211006_53e4794", nixcli.Version{Impl: "Nix", Major: 2, Minor: 4, Raw: "2.4pre20211006_53e4794"}, false, false},
		{"nix (Nix) 2.25.0pre20241101_dirty\nextra line", nixcli.Version{Impl: "Nix", Major: 2, Minor: 25, Raw: "2.25.0pre20241101_dirty"}, false, true},
		{"nix (Nix) 3.0", nixcli.Version{Impl: "Nix", Major: 3, Raw: "3.0"}, false, true},
	} {
		got, err := nixcli.ParseVersion(c.in)
		if err != nil {
			t.Errorf("ParseVersion(%q): %v", c.in, err)
			continue
		}
		if diff := cmp.Diff(c.want, got); diff != "" {
			t.Errorf("ParseVersion(%q) (-want +got):\n%s", c.in, diff)
		}
		if got.IsLix() != c.lix || got.AtLeast(2, 25) != c.is25 {
			t.Errorf("ParseVersion(%q): IsLix %v AtLeast(2,25) %v", c.in, got.IsLix(), got.AtLeast(2, 25))
		}
	}
}

// TestExitErrorMessage: a failed nix program's error is what Nix said, as
// nix-build shows it, not nix-airgap's command line for it (that is in the
// debug log); when Nix said nothing, the program and its subject. Nix's
// refusal to write a lock file is ErrLockNotWritten.
func TestExitErrorMessage(t *testing.T) {
	for _, c := range []struct {
		stderr, want, wantErr string
		lock                  bool
	}{
		{"warning: x\nerror: boom\n\n       at «string»:1:1:\n", "error: boom\n\n       at «string»:1:1:", "boom\n\n       at «string»:1:1:", false},
		{"building '/s/x.drv'...\n\x1b[31;1merror:\x1b[0m builder for '/s/x.drv' failed\n", "error: builder for '/s/x.drv' failed", "builder for '/s/x.drv' failed", false},
		{"a\nb\nc\nd\ne\nf\ng\n", "c\nd\ne\nf\ng", "c\nd\ne\nf\ng", false},
		{"", "", "nix-store /s/x.drv: exit status 1", false},
		{"\x1b[31;1merror:\x1b[0m cannot write modified lock file of flake 'flake:world' (use '--no-write-lock-file' to ignore)\n",
			"error: cannot write modified lock file of flake 'flake:world' (use '--no-write-lock-file' to ignore)",
			"cannot write modified lock file of flake 'flake:world' (use '--no-write-lock-file' to ignore)", true},
	} {
		e := &nixcli.ExitError{Cmd: []string{"nix-store", "--realise", "--log-format", "internal-json", "--", "/s/x.drv"}, Stderr: []byte(c.stderr), Err: errors.New("exit status 1")}
		if got := e.NixMessage(); got != c.want {
			t.Errorf("NixMessage(%q) = %q, want %q", c.stderr, got, c.want)
		}
		if got := e.Error(); got != c.wantErr {
			t.Errorf("Error() = %q, want %q", got, c.wantErr)
		}
		if got := errors.Is(e, nixcli.ErrLockNotWritten); got != c.lock {
			t.Errorf("errors.Is(%q, ErrLockNotWritten) = %v, want %v", c.stderr, got, c.lock)
		}
	}
}

func TestChunked(t *testing.T) {
	dir := storepath.Dir("/nix/store")
	var paths []storepath.Path
	for i := range 2*nixcli.ArgChunk + 3 {
		paths = append(paths, storepath.Path{Dir: dir, Hash: fmt.Sprintf("%032d", i), Name: "p"})
	}
	var calls, running atomic.Int32
	got, err := nixcli.Chunked(context.Background(), paths, 2, func(_ context.Context, ps ...storepath.Path) ([]storepath.Path, error) {
		calls.Add(1)
		if n := running.Add(1); n > 2 {
			t.Errorf("%d calls at once, want at most 2", n)
		}
		defer running.Add(-1)
		if len(ps) > nixcli.ArgChunk {
			t.Errorf("chunk of %d paths, want at most %d", len(ps), nixcli.ArgChunk)
		}
		return ps, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(paths, got); diff != "" {
		t.Errorf("Chunked lost or reordered paths (-want +got):\n%s", diff)
	}
	if calls.Load() != 3 {
		t.Errorf("fn called %d times, want 3", calls.Load())
	}
	boom := errors.New("boom")
	if _, err := nixcli.Chunked(context.Background(), paths, 2, func(context.Context, ...storepath.Path) ([]int, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Errorf("Chunked error = %v, want boom", err)
	}
}

// TestFlakeRefURL: a locked reference in attribute form, as lock files and
// nix flake metadata give inputs, spelled as a URL for people.
func TestFlakeRefURL(t *testing.T) {
	for _, tc := range []struct {
		attrs map[string]any
		want  string
	}{
		{map[string]any{"type": "github", "owner": "NixOS", "repo": "nixpkgs", "rev": "abc123", "narHash": "sha256-x"}, "github:NixOS/nixpkgs/abc123"},
		{map[string]any{"type": "gitlab", "owner": "o", "repo": "r", "ref": "main", "dir": "sub"}, "gitlab:o/r/main?dir=sub"},
		{map[string]any{"type": "git", "url": "file:///srv/site", "ref": "master", "rev": "abc"}, "git+file:///srv/site?ref=master&rev=abc"},
		{map[string]any{"type": "git", "url": "https://example.org/r.git", "rev": "abc"}, "git+https://example.org/r.git?rev=abc"},
		{map[string]any{"type": "mercurial", "url": "https://hg.example.org/r", "rev": "abc"}, "hg+https://hg.example.org/r?rev=abc"},
		{map[string]any{"type": "tarball", "url": "https://example.org/x.tar.gz"}, "tarball+https://example.org/x.tar.gz"},
		{map[string]any{"type": "path", "path": "/srv/dep", "narHash": "sha256-x"}, "path:/srv/dep"},
		{map[string]any{"type": "indirect", "id": "nixpkgs"}, "flake:nixpkgs"},
	} {
		if got := (nixcli.FlakeRef{Attrs: tc.attrs}).URL(); got != tc.want {
			t.Errorf("URL of %v = %q, want %q", tc.attrs, got, tc.want)
		}
	}
}
