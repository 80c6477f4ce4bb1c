package plan_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/ulikunitz/xz"

	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

const dir storepath.Dir = "/nix/store"

const (
	hello = "/nix/store/0c7fa3z2z7pxq2yl5v0glm1b2w8c1y1d-hello-2.12"
	drv   = "/nix/store/1c7fa3z2z7pxq2yl5v0glm1b2w8c1y1d-hello-2.12.drv"
)

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in   string
		want plan.TargetSpec
		err  bool
	}{
		{".#hello", plan.TargetSpec{Kind: plan.TargetFlake, Flake: ".", Attr: "hello"}, false},
		{".", plan.TargetSpec{Kind: plan.TargetFlake, Flake: "."}, false},
		{"path:/dir#packages.x86_64-linux.foo", plan.TargetSpec{Kind: plan.TargetFlake, Flake: "path:/dir", Attr: "packages.x86_64-linux.foo"}, false},
		{"git+file:///repo?ref=main#attr", plan.TargetSpec{Kind: plan.TargetFlake, Flake: "git+file:///repo?ref=main", Attr: "attr"}, false},
		{".#nixosConfigurations.web", plan.TargetSpec{Kind: plan.TargetFlake, Flake: ".", Attr: "nixosConfigurations.web.config.system.build.toplevel"}, false},
		{`.#nixosConfigurations."web.example.org"`, plan.TargetSpec{Kind: plan.TargetFlake, Flake: ".", Attr: `nixosConfigurations."web.example.org".config.system.build.toplevel`}, false},
		{".#nixosConfigurations.web.config.system.build.vm", plan.TargetSpec{Kind: plan.TargetFlake, Flake: ".", Attr: "nixosConfigurations.web.config.system.build.vm"}, false},
		{hello, plan.TargetSpec{Kind: plan.TargetPath, Path: mustPath(hello)}, false},
		{drv, plan.TargetSpec{Kind: plan.TargetPath, Path: mustPath(drv)}, false},
		{drv + "!out,dev", plan.TargetSpec{Kind: plan.TargetPath, Path: mustPath(drv), Outputs: []string{"out", "dev"}}, false},
		{hello + "!out", plan.TargetSpec{}, true},
		{drv + "!", plan.TargetSpec{}, true},
		{"/nix/store/short-hello", plan.TargetSpec{}, true},
		{"#hello", plan.TargetSpec{}, true},
		{"/tmp/x/store/0c7fa3z2z7pxq2yl5v0glm1b2w8c1y1d-hello-2.12", plan.TargetSpec{}, true},
		{"/tmp/x/store/1c7fa3z2z7pxq2yl5v0glm1b2w8c1y1d-hello-2.12.drv!out", plan.TargetSpec{}, true},
		{"/tmp/x/0c7fa3z2z7pxq2yl5v0glm1b2w8c1y1d-flake#x", plan.TargetSpec{Kind: plan.TargetFlake, Flake: "/tmp/x/0c7fa3z2z7pxq2yl5v0glm1b2w8c1y1d-flake", Attr: "x"}, false},
		{"/tmp/flake", plan.TargetSpec{Kind: plan.TargetFlake, Flake: "/tmp/flake"}, false},
		{"", plan.TargetSpec{}, true},
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{
		"./sub#x":          wd + "/sub#x",
		"../up":            filepath.Dir(wd) + "/up",
		"path:.?dir=a#x":   "path:" + wd + "?dir=a#x",
		"path:/abs#x":      "path:/abs#x",
		"nixpkgs/nixos#x":  "nixpkgs/nixos#x",
		"git+file:///r#.x": "git+file:///r#.x",
	} {
		if got, err := plan.ParseTarget(dir, in); err != nil || got.Text != want || got.Flake != strings.Split(in, "#")[0] {
			t.Errorf("ParseTarget(%q) = %+v, %v; want text %s, flake as given", in, got, err, want)
		}
	}
	// A store path of another store is said to be one, naming both.
	other := "/tmp/x/store/0c7fa3z2z7pxq2yl5v0glm1b2w8c1y1d-hello-2.12"
	if _, err := plan.ParseTarget(dir, other); err == nil || !strings.Contains(err.Error(), "a store path of the store /tmp/x/store, but this store's dir is /nix/store") {
		t.Errorf("ParseTarget(%q): %v; want it named a path of another store", other, err)
	}
	// A path in the store that is no store path is named once, with
	// what is wrong with it.
	if _, err := plan.ParseTarget(dir, "/nix/store/short-hello"); err == nil || strings.Count(err.Error(), "short-hello") != 1 || !strings.Contains(err.Error(), "want HASH-NAME") {
		t.Errorf("ParseTarget(/nix/store/short-hello): %v; want it named once, and why it is no store path", err)
	}
	for _, tt := range tests {
		got, err := plan.ParseTarget(dir, tt.in)
		if tt.err {
			if err == nil || !errors.Is(err, plan.ErrBadTarget) {
				t.Errorf("ParseTarget(%q) = %+v, %v; want an ErrBadTarget", tt.in, got, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseTarget(%q): %v", tt.in, err)
			continue
		}
		// A relative flake path is recorded absolute: the same text
		// elsewhere is another flake.
		text := tt.in
		if rest, ok := strings.CutPrefix(text, "."); ok {
			text = wd + rest
		}
		tt.want.Text, tt.want.Group = text, text
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParseTarget(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

// TestParseTargetFollowsLinks: as Nix does, a target with a "/" is a
// store path when it is a file in one, or a symlink (./result, a link to
// a link) into the store, before it is tried as a flake; one that leads
// elsewhere stays a flake reference.
func TestParseTargetFollowsLinks(t *testing.T) {
	tmp := t.TempDir()
	t.Chdir(tmp)
	for name, target := range map[string]string{
		"result":     hello,
		"result-drv": drv,
		"bin-link":   hello + "/bin/hello",
		"chain":      "result",
		"elsewhere":  tmp,
		"dangling":   filepath.Join(tmp, "nothing"),
	} {
		if err := os.Symlink(target, name); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct{ in, want string }{
		{hello + "/bin/hello", hello},
		{hello + "/share/doc/", hello},
		{"./result", hello},
		{tmp + "/result", hello},
		{"./chain", hello},
		{"./bin-link", hello},
		{"./result-drv", drv},
		{"../" + filepath.Base(tmp) + "/result", hello},
	} {
		got, err := plan.ParseTarget(dir, tt.in)
		want := plan.TargetSpec{Kind: plan.TargetPath, Path: mustPath(tt.want), Text: tt.want, Group: tt.want}
		if err != nil {
			t.Errorf("ParseTarget(%q): %v", tt.in, err)
		} else if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("ParseTarget(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
	for _, in := range []string{"./elsewhere", "./dangling", "./result/bin", "./missing", "result"} {
		got, err := plan.ParseTarget(dir, in)
		if err != nil || got.Kind != plan.TargetFlake {
			t.Errorf("ParseTarget(%q) = %+v, %v; want a flake reference, as Nix takes it", in, got, err)
		}
	}
}

func mustPath(s string) storepath.Path {
	p, err := dir.Parse(s)
	if err != nil {
		panic(err)
	}
	return p
}

func TestParseTargets(t *testing.T) {
	t.Chdir(t.TempDir())
	if err := os.WriteFile("w.nix", []byte("{ }"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := plan.ParseTargets(dir, plan.Args{
		Installables: []string{".#a"}, File: "w.nix", Attrs: []string{"x", "y"},
		NixArgs: []string{"--argstr", "v", "1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	wnix := filepath.Join(wd, "w.nix") // recorded absolute, as a flake path
	want := []plan.TargetSpec{
		{Kind: plan.TargetFlake, Flake: ".", Attr: "a", Text: wd + "#a", Group: wd + "#a"},
		{Kind: plan.TargetFile, File: "w.nix", Attr: "x", NixArgs: []string{"--argstr", "v", "1"}, Text: "--file " + wnix + " --attr x --argstr v 1", Group: "--file " + wnix + " --attr x --argstr v 1"},
		{Kind: plan.TargetFile, File: "w.nix", Attr: "y", NixArgs: []string{"--argstr", "v", "1"}, Text: "--file " + wnix + " --attr y --argstr v 1", Group: "--file " + wnix + " --attr y --argstr v 1"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseTargets (-want +got):\n%s", diff)
	}
	// With --file, a bare name is an attribute of the file, as nix build
	// --file F ATTR takes it; flake references stay flakes.
	got, err = plan.ParseTargets(dir, plan.Args{
		Installables: []string{"hello", ".", "nixpkgs#x", "a.\"b.c\""}, File: "w.nix", Attrs: []string{"y"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want = []plan.TargetSpec{
		{Kind: plan.TargetFlake, Flake: ".", Text: wd, Group: wd},
		{Kind: plan.TargetFlake, Flake: "nixpkgs", Attr: "x", Text: "nixpkgs#x", Group: "nixpkgs#x"},
		{Kind: plan.TargetFile, File: "w.nix", Attr: "y", Text: "--file " + wnix + " --attr y", Group: "--file " + wnix + " --attr y"},
		{Kind: plan.TargetFile, File: "w.nix", Attr: "hello", Text: "--file " + wnix + " --attr hello", Group: "--file " + wnix + " --attr hello"},
		{Kind: plan.TargetFile, File: "w.nix", Attr: `a."b.c"`, Text: "--file " + wnix + ` --attr a."b.c"`, Group: "--file " + wnix + ` --attr a."b.c"`},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseTargets with --file and bare names (-want +got):\n%s", diff)
	}
	// --expr E is a source as --file F is, with bare names and --attr
	// its attributes; its text is on one line, quoted.
	expr := "{ x = import ./w.nix;\n y = 1; }"
	got, err = plan.ParseTargets(dir, plan.Args{Installables: []string{"y"}, Expr: expr, Attrs: []string{"x"}, NixArgs: []string{"--arg", "a", "1"}})
	if err != nil {
		t.Fatal(err)
	}
	quoted := `--expr "{ x = import ./w.nix;\n y = 1; }"`
	want = []plan.TargetSpec{
		{Kind: plan.TargetFile, Expr: expr, Attr: "x", NixArgs: []string{"--arg", "a", "1"}, Text: quoted + " --attr x --arg a 1", Group: quoted + " --attr x --arg a 1"},
		{Kind: plan.TargetFile, Expr: expr, Attr: "y", NixArgs: []string{"--arg", "a", "1"}, Text: quoted + " --attr y --arg a 1", Group: quoted + " --attr y --arg a 1"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseTargets with --expr (-want +got):\n%s", diff)
	}
	// The arguments and search path are in the text, as other values
	// make other targets; arguments sorted by name, as their order on
	// the command line makes none, a name given twice in its order.
	for _, tt := range []struct {
		args, include []string
		want          string
	}{
		{[]string{"--argstr", "v", "1"}, nil, "--file " + wnix + " --argstr v 1"},
		{[]string{"--argstr", "v", "2"}, nil, "--file " + wnix + " --argstr v 2"},
		{[]string{"--argstr", "v", "1", "--arg", "a", "{ }"}, nil, "--file " + wnix + ` --arg a "{ }" --argstr v 1`},
		{[]string{"--arg", "a", "{ }", "--argstr", "v", "1"}, nil, "--file " + wnix + ` --arg a "{ }" --argstr v 1`},
		{[]string{"--arg", "b", "2", "--argstr", "a", "", "--arg", "b", "1"}, []string{"n=/x y", "/p"}, "--file " + wnix + ` --argstr a "" --arg b 2 --arg b 1 -I "n=/x y" -I /p`},
	} {
		got, err := plan.ParseTargets(dir, plan.Args{File: "w.nix", NixArgs: tt.args, Include: tt.include})
		if err != nil || len(got) != 1 || got[0].Text != tt.want || got[0].Group != tt.want {
			t.Errorf("ParseTargets(--file w.nix %q -I %q): %+v, %v; want text %s", tt.args, tt.include, got, err, tt.want)
		}
	}
	got, err = plan.ParseTargets(dir, plan.Args{Expr: "1"})
	if err != nil {
		t.Fatal(err)
	}
	want = []plan.TargetSpec{{Kind: plan.TargetFile, Expr: "1", Text: `--expr "1"`, Group: `--expr "1"`}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseTargets with --expr alone (-want +got):\n%s", diff)
	}
	// A --file that is not there is said before Nix runs, as a missing
	// file (exit 5); a <NAME> or a URL is Nix's to find.
	missing := filepath.Join(t.TempDir(), "missing.nix")
	if _, err := plan.ParseTargets(dir, plan.Args{File: missing, Attrs: []string{"x"}}); !errors.Is(err, fs.ErrNotExist) || err.Error() != "target --file "+missing+": no such file or directory" {
		t.Errorf("ParseTargets(--file %s) = %v, want it missing, named once", missing, err)
	}
	for _, file := range []string{"<nixpkgs>", "https://example.org/nixexprs.tar.xz"} {
		if _, err := plan.ParseTargets(dir, plan.Args{File: file, Attrs: []string{"x"}}); err != nil {
			t.Errorf("ParseTargets(--file %s) = %v, want it left to Nix", file, err)
		}
	}
	for _, bad := range []plan.Args{
		{},
		{Attrs: []string{"x"}},
		{File: "w.nix", Expr: "{ }", Attrs: []string{"x"}},
		{NixArgs: []string{"--arg", "a", "1"}, Installables: []string{".#a"}},
		{PathsFrom: []string{filepath.Join(t.TempDir(), "missing")}},
	} {
		if got, err := plan.ParseTargets(dir, bad); err == nil {
			t.Errorf("ParseTargets(%+v) = %+v, want an error", bad, got)
		}
	}
}

// TestParseTargetsNixBuildForm: --attr without --file or --expr is
// refused; when the command line reads as nix-build's FILE -A ATTR, or
// -A ATTR of ./default.nix, the error says how to write it here.
func TestParseTargetsNixBuildForm(t *testing.T) {
	for _, tt := range []struct {
		args plan.Args
		want string
	}{
		{plan.Args{Installables: []string{"world.nix"}, Attrs: []string{"hello"}},
			"target --attr hello: invalid target: --attr needs --file or --expr (nix-build world.nix -A hello: here, --file world.nix --attr hello)"},
		{plan.Args{Installables: []string{"./nixpkgs"}, Attrs: []string{"a.b", "c"}},
			"target --attr a.b: invalid target: --attr needs --file or --expr (nix-build ./nixpkgs -A a.b: here, --file ./nixpkgs --attr a.b)"},
		{plan.Args{Attrs: []string{`x."y z"`}},
			`target --attr x."y z": invalid target: --attr needs --file or --expr (nix-build -A "x.\"y z\"" reads ./default.nix: here, --file default.nix --attr "x.\"y z\"")`},
		{plan.Args{Installables: []string{".#a"}, Attrs: []string{"hello"}},
			"target --attr hello: invalid target: --attr needs --file or --expr"},
		{plan.Args{Installables: []string{"a.nix", "b.nix"}, Attrs: []string{"hello"}},
			"target --attr hello: invalid target: --attr needs --file or --expr"},
	} {
		_, err := plan.ParseTargets(dir, tt.args)
		if !errors.Is(err, plan.ErrBadTarget) || err.Error() != tt.want {
			t.Errorf("ParseTargets(%+v) = %v\nwant %s", tt.args, err, tt.want)
		}
	}
}

func TestReadPaths(t *testing.T) {
	text := "# comment\n" + hello + "\n\n  " + drv + "  \n"
	var xzBuf bytes.Buffer
	xw, err := xz.NewWriter(&xzBuf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := xw.Write([]byte(text)); err != nil {
		t.Fatal(err)
	}
	if err := xw.Close(); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	for name, data := range map[string][]byte{"store-paths": []byte(text), "store-paths.xz": xzBuf.Bytes()} {
		file := filepath.Join(tmp, name)
		if err := os.WriteFile(file, data, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := plan.ReadPathsFile(dir, file)
		if err != nil {
			t.Fatal(err)
		}
		group := "--paths-from " + file
		want := []plan.TargetSpec{
			{Kind: plan.TargetPath, Path: mustPath(hello), Text: hello, Group: group},
			{Kind: plan.TargetPath, Path: mustPath(drv), Text: drv, Group: group},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("ReadPathsFile(%s) (-want +got):\n%s", name, diff)
		}
	}

	for _, tt := range []struct{ in, err string }{
		{hello + "\n.#foo\n", "paths:2: invalid target: \".#foo\" is not a store path in /nix/store"},
		{"/other/store/0c7fa3z2z7pxq2yl5v0glm1b2w8c1y1d-x\n", "paths:1:"},
		{hello + "\n" + string(dir) + "/bad\n", "paths:2:"},
		{strings.Repeat("x", 70000), "token too long"},
		{"\n{\n  \"version\": 1,\n", "read paths paths: invalid target: a JSON document, not store paths one a line"},
	} {
		_, err := plan.ReadPaths(dir, strings.NewReader(tt.in), "paths")
		if err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("ReadPaths(%.40q) error = %v, want %q", tt.in, err, tt.err)
		}
	}
}
