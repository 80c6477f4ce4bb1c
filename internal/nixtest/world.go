package nixtest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// WorldOptions configure NewWorld. The zero value gives the standard world.
type WorldOptions struct {
	// Salt, if set, goes into every served file, so that the world's
	// FOD hashes and every store path differ from the standard world's:
	// two worlds with different salts share nothing, not even their
	// files on a shared Internet. Letters, digits, '.', '_' and '-' only.
	Salt string
}

// World is a generated test world shaped like nixpkgs' bootstrap: the
// Nix expression File, whose sources the Internet serves.
//
// Its attributes (File's default.nix is a function of
// { variant ? "", deep ? "", internet ? URL }):
//
//	bootstrapTools  recursive FOD: a NAR unpacked by builtin:fetchurl (unpack = true)
//	busybox         recursive FOD: an executable file (executable = true)
//	src             flat FOD: a source tarball (hello-1.0.tar.gz)
//	patch           flat FOD: a patch
//	libbaseSrc      recursive FOD whose own builder downloads and unpacks a tar, like fetchgit
//	cc              the "compiler": built by the busybox FOD from bootstrapTools; build-only
//	libbase         built with cc from libbaseSrc; changes with deep
//	libgreet        built with cc from src plus patch; references libbase
//	hello           built with cc from src; bin/hello references libgreet
//	toplevel        the "system": bin/hello prints Greeting; sw links to hello; changes with variant
//
// The toplevel's runtime closure is RuntimeAttrs; sources and cc are only
// in its build closure. Everything runs /bin/busybox (busybox-static,
// whose shell runs applets without PATH).
type World struct {
	// Dir holds File.
	Dir string
	// File is the expression, Dir/default.nix.
	File string
	// Attr is the attribute Build and Instantiate use: "toplevel". Change
	// it on a copy of the World to build another attribute.
	Attr string
	// Nix runs the World's commands.
	Nix *Nix
	// Internet serves the World's sources.
	Internet *Internet

	fods []FOD
}

// FOD is one fixed-output derivation of a World, with the file the
// Internet serves for it.
type FOD struct {
	// Attr is its attribute in World.File.
	Attr string
	// Name is the derivation's (and its output's) name.
	Name string
	// URL is where it is downloaded from.
	URL string
	// File is its name on the Internet: Internet.Fetched(File) counts
	// its downloads. Salted worlds serve theirs under SALT/.
	File string
	// Method is storepath.Flat for plain files and storepath.Recursive
	// for NAR-hashed outputs.
	Method storepath.Method
	// Hash is its outputHash, always sha256.
	Hash storepath.Hash
}

// Path is the FOD's output path in store dir.
func (f FOD) Path(dir storepath.Dir) (storepath.Path, error) {
	return dir.MakeFixedOutput(f.Method, f.Hash, f.Name)
}

var saltRE = regexp.MustCompile(`^[A-Za-z0-9._-]*$`)

// NewWorld generates a World into a temp dir and publishes its sources on
// inet. It runs nix-store --dump and nix-hash with n, and builds nothing.
func NewWorld(t testing.TB, n *Nix, inet *Internet, opts WorldOptions) *World {
	t.Helper()
	if !saltRE.MatchString(opts.Salt) {
		t.Fatalf("new world: salt %q: want letters, digits, '.', '_' or '-'", opts.Salt)
	}
	w := &World{Dir: t.TempDir(), Attr: "toplevel", Nix: n, Internet: inet}
	w.File = filepath.Join(w.Dir, "default.nix")
	gen := t.TempDir()
	salt := opts.Salt
	files := map[string]string{
		"bootstrap-tools/bin/cc":           ccScript(salt),
		"bootstrap-tools/share/doc/README": "nixtest world bootstrap tools " + salt + "\n",
		"busybox":                          "#!/bin/busybox sh\n# nixtest world busybox " + salt + "\nexec /bin/busybox \"$@\"\n",
		"libbase-src/libbase.sh.in":        libbaseIn(salt),
		"hello-1.0/greet.sh.in":            greetIn(salt),
		"hello-1.0/hello.sh.in":            helloIn(salt),
		"hello-fix.patch":                  patchText(salt),
	}
	for name, content := range files {
		file := filepath.Join(gen, filepath.FromSlash(name))
		mode := os.FileMode(0o644)
		if strings.HasPrefix(content, "#!") {
			mode = 0o755
		}
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			t.Fatalf("new world: %v", err)
		}
		if err := os.WriteFile(file, []byte(content), mode); err != nil {
			t.Fatalf("new world: %v", err)
		}
	}
	// A symlink, so that the NAR has every node type.
	if err := os.Symlink("cc", filepath.Join(gen, "bootstrap-tools/bin/c99")); err != nil {
		t.Fatalf("new world: %v", err)
	}

	// Recursive hashes come from Nix itself.
	nar, err := n.Command(t.Context(), "nix-store", "--dump", filepath.Join(gen, "bootstrap-tools")).Output()
	if err != nil {
		t.Fatalf("new world: nix-store --dump: %v", err)
	}
	out := n.Run(t, "nix-hash", "--type", "sha256", "--base32", filepath.Join(gen, "busybox"), filepath.Join(gen, "libbase-src"))
	recursive := strings.Fields(out)
	if len(recursive) != 2 {
		t.Fatalf("new world: nix-hash printed %q, want two hashes", out)
	}
	libbaseTar := makeTar(t, map[string]string{"libbase.sh.in": files["libbase-src/libbase.sh.in"]})
	srcTar := makeTar(t, map[string]string{
		"hello-1.0/":            "",
		"hello-1.0/greet.sh.in": files["hello-1.0/greet.sh.in"],
		"hello-1.0/hello.sh.in": files["hello-1.0/hello.sh.in"],
	})
	var srcTgz bytes.Buffer
	zw := gzip.NewWriter(&srcTgz)
	if _, err := zw.Write(srcTar); err != nil {
		t.Fatalf("new world: gzip: %v", err)
	}
	if err := zw.Close(); err != nil {
		t.Fatalf("new world: gzip: %v", err)
	}

	type served struct {
		attr, name, file string
		data             []byte
		method           storepath.Method
		nix32            string // recursive hash from nix-hash; flat ones are computed here
	}
	for _, s := range []served{
		{"bootstrapTools", "bootstrap-tools.nar", "bootstrap-tools.nar", nar, storepath.Recursive, ""},
		{"busybox", "busybox", "busybox", []byte(files["busybox"]), storepath.Recursive, recursive[0]},
		{"src", "hello-1.0.tar.gz", "hello-1.0.tar.gz", srcTgz.Bytes(), storepath.Flat, ""},
		{"patch", "hello-fix.patch", "hello-fix.patch", []byte(files["hello-fix.patch"]), storepath.Flat, ""},
		{"libbaseSrc", "libbase-src", "libbase.tar", libbaseTar, storepath.Recursive, recursive[1]},
	} {
		var h storepath.Hash
		if s.nix32 != "" {
			h, err = storepath.ParseDigest(storepath.SHA256, s.nix32)
			if err != nil {
				t.Fatalf("new world: nix-hash of %s: %v", s.attr, err)
			}
		} else {
			// The flat hash of a file, and the recursive hash of a NAR
			// that unpack = true restores, are both the file's sha256.
			sum := sha256.Sum256(s.data)
			h = storepath.Hash{Algo: storepath.SHA256, Digest: sum[:]}
		}
		file := s.file
		if salt != "" {
			file = salt + "/" + file
		}
		w.fods = append(w.fods, FOD{
			Attr:   s.attr,
			Name:   s.name,
			URL:    inet.Add(file, s.data),
			File:   file,
			Method: s.method,
			Hash:   h,
		})
	}

	var expr bytes.Buffer
	if err := worldTemplate.Execute(&expr, w); err != nil {
		t.Fatalf("new world: %v", err)
	}
	if err := os.WriteFile(w.File, expr.Bytes(), 0o644); err != nil {
		t.Fatalf("new world: %v", err)
	}
	return w
}

// makeTar makes a deterministic tar; names ending in / are directories.
func makeTar(t testing.TB, files map[string]string) []byte {
	t.Helper()
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	// Directories sort before their contents.
	slices.Sort(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range names {
		hdr := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(files[name])), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0), Format: tar.FormatUSTAR}
		if strings.HasSuffix(name, "/") {
			hdr.Mode, hdr.Size, hdr.Typeflag = 0o755, 0, tar.TypeDir
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("new world: tar %s: %v", name, err)
		}
		if _, err := tw.Write([]byte(files[name])); err != nil {
			t.Fatalf("new world: tar %s: %v", name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("new world: tar: %v", err)
	}
	return buf.Bytes()
}

// FODs lists the World's fixed-output derivations, in a fixed order.
func (w *World) FODs() []FOD {
	return append([]FOD(nil), w.fods...)
}

// FOD returns the FOD with attribute attr, failing t if there is none.
func (w *World) FOD(t testing.TB, attr string) FOD {
	t.Helper()
	for _, f := range w.fods {
		if f.Attr == attr {
			return f
		}
	}
	t.Fatalf("world: no FOD %q", attr)
	return FOD{}
}

// RuntimeAttrs lists the attributes whose outputs form the toplevel's
// runtime closure. A deep change rebuilds all of them; a variant change
// only the toplevel.
func (w *World) RuntimeAttrs() []string {
	return []string{"toplevel", "hello", "libgreet", "libbase"}
}

// BuildOnlyAttrs lists the non-FOD attributes that building needs but the
// toplevel's runtime closure lacks.
func (w *World) BuildOnlyAttrs() []string {
	return []string{"cc"}
}

// Args are the nix-build (or nix-instantiate, nix build) arguments for a
// variant, which changes only the toplevel, and a deep change, which
// changes libbase and so everything above it. Use short words: "" is the
// default world.
func (w *World) Args(variant, deep string) []string {
	return []string{"--argstr", "variant", variant, "--argstr", "deep", deep}
}

// Greeting is what the toplevel's bin/hello prints.
func (w *World) Greeting(variant, deep string) string {
	return fmt.Sprintf("nixtest system, variant %q\nHello, world! (libbase %s)\n", variant, libbaseVersion(deep))
}

func libbaseVersion(deep string) string {
	if deep == "" {
		return "1.0"
	}
	return "1.0-" + deep
}

// On returns a copy of w whose commands run with another Nix: n.In(ns)
// for the same store offline, or a second hermetic Nix as an airgapped
// client of the same world.
func (w *World) On(n *Nix) *World {
	c := *w
	c.Nix = n
	return &c
}

// Instantiate runs nix-instantiate on w.Attr with extra args (such as
// Args) and returns the .drv path.
func (w *World) Instantiate(t testing.TB, args ...string) string {
	t.Helper()
	return w.Nix.Run(t, "nix-instantiate", append([]string{w.File, "-A", w.Attr}, args...)...)
}

// Build runs nix-build on w.Attr with extra args (such as Args), failing
// t on error, and returns the output path. It makes no GC root.
func (w *World) Build(t testing.TB, args ...string) string {
	t.Helper()
	out, err := w.TryBuild(t.Context(), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TryBuild is Build returning the error, with Nix's message, instead.
func (w *World) TryBuild(ctx context.Context, args ...string) (string, error) {
	return w.Nix.Output(ctx, "nix-build", append([]string{"--no-out-link", w.File, "-A", w.Attr}, args...)...)
}

// OutPaths evaluates every attribute's output path (without building or
// fetching anything) under extra args, keyed by attribute.
func (w *World) OutPaths(t testing.TB, args ...string) map[string]string {
	t.Helper()
	expr := "{ ... }@args: builtins.mapAttrs (_: d: d.outPath) (import " + w.File + " args)"
	// nix-instantiate --eval calls the function only when given an
	// argument, so always give it one: the default internet.
	out := w.Nix.Run(t, "nix-instantiate", append([]string{"--eval", "--strict", "--json", "-E", expr, "--argstr", "internet", w.Internet.URL}, args...)...)
	paths := map[string]string{}
	if err := json.Unmarshal([]byte(out), &paths); err != nil {
		t.Fatalf("world out paths: %v", err)
	}
	return paths
}

// The world's sources. Each carries the salt on a line of its own, so
// that line numbers (which the patch relies on) do not move.

// ccScript is the "compiler" in the bootstrap tools: cc IN OUT
// [KEY=VALUE]... copies IN to OUT, replacing each @KEY@ with VALUE.
func ccScript(salt string) string {
	return `#!/bin/busybox sh
# nixtest world cc ` + salt + `
set -e
in=$1 out=$2
shift 2
script=
for kv in "$@"; do
	script="$script s|@${kv%%=*}@|${kv#*=}|g;"
done
sed -e "$script" "$in" >"$out"
`
}

func libbaseIn(salt string) string {
	return `# nixtest world libbase ` + salt + `
base_version() {
	echo "@VERSION@"
}
`
}

// greetIn has a typo that the patch fixes.
func greetIn(salt string) string {
	return `# nixtest world libgreet ` + salt + `
. @LIBBASE@/lib/libbase.sh
greet() {
	echo "Helo, world! (libbase $(base_version))"
}
`
}

func helloIn(salt string) string {
	return `#!/bin/busybox sh
# nixtest world hello ` + salt + `
. @LIBGREET@/lib/libgreet.sh
greet
`
}

func patchText(salt string) string {
	return `nixtest world: fix the greeting ` + salt + `
--- a/greet.sh.in
+++ b/greet.sh.in
@@ -3,3 +3,3 @@
 greet() {
-	echo "Helo, world! (libbase $(base_version))"
+	echo "Hello, world! (libbase $(base_version))"
 }
`
}

// worldTemplate is World.File. Its only inputs are the Internet's URL and
// the FOD hashes, so the expression works with any store dir.
var worldTemplate = template.Must(template.New("default.nix").Funcs(template.FuncMap{
	"fod": func(w *World, attr string) (FOD, error) {
		for _, f := range w.fods {
			if f.Attr == attr {
				return f, nil
			}
		}
		return FOD{}, fmt.Errorf("no FOD %q", attr)
	},
}).Parse(`# Generated by nixtest.NewWorld: a small world shaped like nixpkgs'
# bootstrap. Builders run busybox-static's shell, whose applets need no
# PATH.
{ variant ? "", deep ? "", internet ? "{{.Internet.URL}}" }:
let
  fetchurl = import <nix/fetchurl.nix>;
  sh = name: attrs: script: derivation ({
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/busybox";
    args = [ "sh" "-e" "-c" script ];
  } // attrs);
in rec {
  # Bootstrap tools: a NAR that builtin:fetchurl unpacks (recursive FOD).
  bootstrapTools = fetchurl {
    url = "${internet}/{{(fod . "bootstrapTools").File}}";
    sha256 = "{{(fod . "bootstrapTools").Hash.Nix32}}";
    unpack = true;
  };

  # An executable file, like the bootstrap busybox (recursive FOD).
  busybox = fetchurl {
    url = "${internet}/{{(fod . "busybox").File}}";
    sha256 = "{{(fod . "busybox").Hash.Nix32}}";
    executable = true;
  };

  # A source tarball and a patch (flat FODs).
  src = fetchurl {
    url = "${internet}/{{(fod . "src").File}}";
    sha256 = "{{(fod . "src").Hash.Nix32}}";
  };
  patch = fetchurl {
    url = "${internet}/{{(fod . "patch").File}}";
    sha256 = "{{(fod . "patch").Hash.Nix32}}";
  };

  # A FOD whose builder downloads and unpacks, like fetchgit.
  libbaseSrc = sh "libbase-src" {
    url = "${internet}/{{(fod . "libbaseSrc").File}}";
    outputHashMode = "recursive";
    outputHashAlgo = "sha256";
    outputHash = "{{(fod . "libbaseSrc").Hash.Nix32}}";
  } ''
    wget -q -O libbase.tar "$url"
    mkdir "$out"
    tar -x -f libbase.tar -C "$out"
  '';

  # The compiler: built by the busybox FOD from the bootstrap tools, and
  # needed by the libs, which do not reference it.
  cc = derivation {
    name = "cc-1.0";
    system = builtins.currentSystem;
    builder = busybox;
    args = [ "sh" "-e" "-c" ''
      mkdir -p "$out/bin"
      cp ${bootstrapTools}/bin/cc "$out/bin/cc"
      ln -s ${bootstrapTools} "$out/libexec"
    '' ];
  };

  libbase = sh "libbase-1.0" {
    version = if deep == "" then "1.0" else "1.0-${deep}";
  } ''
    mkdir -p "$out/lib"
    ${cc}/bin/cc ${libbaseSrc}/libbase.sh.in "$out/lib/libbase.sh" "VERSION=$version"
  '';

  libgreet = sh "libgreet-1.0" { } ''
    tar -x -z -f ${src}
    cd hello-1.0
    patch -p1 -i ${patch}
    mkdir -p "$out/lib"
    ${cc}/bin/cc greet.sh.in "$out/lib/libgreet.sh" LIBBASE=${libbase}
  '';

  hello = sh "hello-1.0" { } ''
    tar -x -z -f ${src}
    mkdir -p "$out/bin"
    ${cc}/bin/cc hello-1.0/hello.sh.in "$out/bin/hello" LIBGREET=${libgreet}
    chmod +x "$out/bin/hello"
  '';

  # The system: what the user runs. Only it sees variant.
  toplevel = sh "nixtest-system" { inherit variant; } ''
    mkdir -p "$out/bin"
    ln -s ${hello} "$out/sw"
    cat >"$out/bin/hello" <<EOF
    #!/bin/busybox sh
    echo "nixtest system, variant \"$variant\""
    exec $out/sw/bin/hello
    EOF
    chmod +x "$out/bin/hello"
  '';
}
`))
