// Package world generates a small Nix world shaped like nixpkgs'
// bootstrap, for `nix-airgap demo` and for the tests: fixed-output
// derivations of every kind fetched from an "internet" URL, a build-only
// compiler, and a layered graph ending in a system-like toplevel that runs.
// Generating it needs no Nix; building it needs Nix and /bin/busybox
// (busybox-static), whose shell runs applets without PATH.
package world

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// World is a generated world: the Nix expression File, and the Files an
// internet at InternetURL must serve for it to build.
//
// File's default.nix is a function of { variant ? "", deep ? "",
// rebuild ? "", internet ? InternetURL } with these attributes:
//
//	bootstrapTools  recursive FOD: a NAR unpacked by builtin:fetchurl (unpack = true)
//	busybox         recursive FOD: an executable file (executable = true)
//	src             flat FOD: a source tarball (hello-1.0.tar.gz)
//	patch           flat FOD: a patch
//	libbaseSrc      recursive FOD whose own builder downloads and unpacks a tar, like fetchgit
//
// src and patch are fetched by builtin:fetchurl and libbaseSrc by a
// builder of its own; with Options.StructuredAttrs all three are
// structured-attrs derivations as nixpkgs' fetchurl and fetchgit have
// made since late 2025 (their URLs and hashes in the .drv's __json, read
// by the builder from $NIX_ATTRS_JSON_FILE; fetchurl tries
// $NIX_HASHED_MIRRORS after its URLs).
//
//	cc              the "compiler": built by the busybox FOD from bootstrapTools; build-only; changes with rebuild
//	libbase         built with cc from libbaseSrc; changes with deep
//	libgreet        built with cc from src plus patch; references libbase
//	hello           built with cc from src; bin/hello references libgreet
//	toplevel        the "system": bin/hello prints Greeting; sw links to hello; changes with variant
//
// The toplevel's runtime closure is RuntimeAttrs; sources and cc are only
// in its build closure.
type World struct {
	// Dir holds File.
	Dir string
	// File is the expression, Dir/default.nix.
	File string
	// InternetURL is the default for the expression's internet argument.
	InternetURL string
	// Files maps each name the internet serves (below InternetURL) to
	// its content.
	Files map[string][]byte
	// FODs lists the fixed-output derivations, in a fixed order.
	FODs []FOD
	// StructuredAttrs is Options.StructuredAttrs.
	StructuredAttrs bool
	// Channel is a nixpkgs-shaped tree of the same world, as a channel
	// holds one: <nixpkgs> with Channel on NIX_PATH as nixpkgs, or
	// nix-build Channel -A hello, builds the same derivations as File:
	// a default.nix taking nixpkgs-like arguments, the world as
	// pkgs/top-level/all-packages.nix, a lib, and .version.
	Channel string
}

// Options configure Generate. The zero value gives the standard world.
type Options struct {
	// Salt, if set, goes into every source, so that the world's FOD
	// hashes and every store path differ from the unsalted world's: two
	// worlds with different salts share nothing. Letters, digits, '.',
	// '_' and '-' only.
	Salt string
	// StructuredAttrs makes src, patch and libbaseSrc structured-attrs
	// derivations, as nixpkgs' fetchers. Their output paths stay the
	// same (a FOD's path depends only on its name and hash); everything
	// built from them changes.
	StructuredAttrs bool
	// LibbaseData, if set, is how many bytes of random hex libbase's
	// source, and so libbase, carry: a library big enough that a binary
	// delta of its next version or rebuild beats its compressed NAR.
	LibbaseData int
}

// FOD is one fixed-output derivation of a World, with the file the
// internet serves for it.
type FOD struct {
	// Attr is its attribute in World.File.
	Attr string
	// Name is the derivation's (and its output's) name.
	Name string
	// File is its name below the internet URL. Salted worlds serve
	// theirs under SALT/.
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

// ErrBadSalt reports a salt with characters other than letters, digits,
// '.', '_' and '-'.
var ErrBadSalt = errors.New("invalid salt")

var saltRE = regexp.MustCompile(`^[A-Za-z0-9._-]*$`)

// Generate writes a World into dir (which must exist) whose sources are
// downloaded from internetURL.
func Generate(dir, internetURL string, opts Options) (*World, error) {
	if !saltRE.MatchString(opts.Salt) {
		return nil, fmt.Errorf("generate world: salt %q: %w", opts.Salt, ErrBadSalt)
	}
	w, err := generate(dir, internetURL, opts)
	if err != nil {
		return nil, fmt.Errorf("generate world in %s: %w", dir, err)
	}
	return w, nil
}

func generate(dir, internetURL string, opts Options) (*World, error) {
	salt := opts.Salt
	w := &World{
		Dir:             dir,
		File:            filepath.Join(dir, "default.nix"),
		InternetURL:     strings.TrimSuffix(internetURL, "/"),
		Files:           map[string][]byte{},
		StructuredAttrs: opts.StructuredAttrs,
	}
	gen := filepath.Join(dir, "sources")
	files := map[string]string{
		"bootstrap-tools/bin/cc":           ccScript(salt),
		"bootstrap-tools/share/doc/README": "nix-airgap demo world bootstrap tools " + salt + "\n",
		"bootstrap-tools/share/blob":       blob(salt),
		"busybox":                          "#!/bin/busybox sh\n# nix-airgap demo world busybox " + salt + "\nexec /bin/busybox \"$@\"\n",
		"libbase-src/libbase.sh.in":        libbaseIn(salt, opts.LibbaseData),
		"hello-1.0/greet.sh.in":            greetIn(salt),
		"hello-1.0/hello.sh.in":            helloIn(salt),
		"hello-fix.patch":                  patchText(salt),
	}
	if err := writeSources(gen, files); err != nil {
		return nil, err
	}

	var bootstrapNAR bytes.Buffer
	if err := nar.Dump(&bootstrapNAR, filepath.Join(gen, "bootstrap-tools")); err != nil {
		return nil, err
	}
	busyboxHash, _, err := nar.DumpHash(discard{}, filepath.Join(gen, "busybox"))
	if err != nil {
		return nil, err
	}
	libbaseHash, _, err := nar.DumpHash(discard{}, filepath.Join(gen, "libbase-src"))
	if err != nil {
		return nil, err
	}
	libbaseTar, err := makeTar(map[string]string{"libbase.sh.in": files["libbase-src/libbase.sh.in"]})
	if err != nil {
		return nil, err
	}
	srcTgz, err := makeTgz(map[string]string{
		"hello-1.0/":            "",
		"hello-1.0/greet.sh.in": files["hello-1.0/greet.sh.in"],
		"hello-1.0/hello.sh.in": files["hello-1.0/hello.sh.in"],
	})
	if err != nil {
		return nil, err
	}

	for _, s := range []struct {
		attr, name, file string
		data             []byte
		method           storepath.Method
		hash             storepath.Hash // zero: the data's sha256
	}{
		{"bootstrapTools", "bootstrap-tools.nar", "bootstrap-tools.nar", bootstrapNAR.Bytes(), storepath.Recursive, storepath.Hash{}},
		{"busybox", "busybox", "busybox", []byte(files["busybox"]), storepath.Recursive, busyboxHash},
		{"src", "hello-1.0.tar.gz", "hello-1.0.tar.gz", srcTgz, storepath.Flat, storepath.Hash{}},
		{"patch", "hello-fix.patch", "hello-fix.patch", []byte(files["hello-fix.patch"]), storepath.Flat, storepath.Hash{}},
		{"libbaseSrc", "libbase-src", "libbase.tar", libbaseTar, storepath.Recursive, libbaseHash},
	} {
		h := s.hash
		if h.IsZero() {
			// The flat hash of a file, and the recursive hash of a NAR
			// that unpack = true restores, are both the file's sha256.
			sum := sha256.Sum256(s.data)
			h = storepath.Hash{Algo: storepath.SHA256, Digest: sum[:]}
		}
		file := s.file
		if salt != "" {
			file = salt + "/" + file
		}
		w.Files[file] = s.data
		w.FODs = append(w.FODs, FOD{Attr: s.attr, Name: s.name, File: file, Method: s.method, Hash: h})
	}

	var expr bytes.Buffer
	if err := worldTemplate.Execute(&expr, w); err != nil {
		return nil, err
	}
	if err := os.WriteFile(w.File, expr.Bytes(), 0o644); err != nil {
		return nil, err
	}
	w.Channel = filepath.Join(dir, "channel")
	if err := writeFiles(w.Channel, channelFiles(expr.String())); err != nil {
		return nil, err
	}
	return w, nil
}

// ChannelVersion is the .version file of the world's channel, as
// nixpkgs' lib.trivial.release reads its own.
const ChannelVersion = "26.05"

// channelFiles are the files of the world's nixpkgs-shaped channel, by
// slash path, for the world expression expr: a default.nix taking
// nixpkgs-like arguments (and the world's variant and deep), the world
// itself as pkgs/top-level/all-packages.nix, a lib, and .version.
func channelFiles(expr string) map[string]string {
	return map[string]string{
		"default.nix": `# The nix-airgap test world as a nixpkgs-shaped channel: <nixpkgs> -A hello.
{ system ? builtins.currentSystem, config ? { }, overlays ? [ ], variant ? "", deep ? "", ... }:
import ./pkgs/top-level/all-packages.nix { inherit variant deep; }
  // { lib = import ./lib; }
`,
		"lib/default.nix": `{
  version = builtins.readFile ../.version;
}
`,
		"pkgs/top-level/all-packages.nix": expr,
		".version":                        ChannelVersion,
	}
}

// writeSources writes files (by slash path under gen) with the modes their
// NARs must have, and a symlink, so that the NAR has every node type.
func writeSources(gen string, files map[string]string) error {
	if err := writeFiles(gen, files); err != nil {
		return err
	}
	return os.Symlink("cc", filepath.Join(gen, "bootstrap-tools/bin/c99"))
}

// writeFiles writes files by slash path under dir, executable when they
// start with "#!".
func writeFiles(dir string, files map[string]string) error {
	for name, content := range files {
		file := filepath.Join(dir, filepath.FromSlash(name))
		mode := os.FileMode(0o644)
		if strings.HasPrefix(content, "#!") {
			mode = 0o755
		}
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(file, []byte(content), mode); err != nil {
			return err
		}
		// The umask must not decide the NAR's executable bits.
		if err := os.Chmod(file, mode); err != nil {
			return err
		}
	}
	return nil
}

// blobSize is the size of the bootstrap tools' blob: incompressible
// bytes that make their NAR the world's biggest by far, so that a tiny
// volume size splits it across volumes.
const blobSize = 48 << 10

// blob is blobSize pseudo-random bytes, the same for the same salt.
func blob(salt string) string {
	seed := sha256.Sum256([]byte("nix-airgap demo world blob " + salt))
	var b strings.Builder
	for b.Len() < blobSize {
		seed = sha256.Sum256(seed[:])
		b.Write(seed[:])
	}
	return b.String()[:blobSize]
}

// makeTgz is makeTar, gzipped.
func makeTgz(files map[string]string) ([]byte, error) {
	tar, err := makeTar(files)
	if err != nil {
		return nil, err
	}
	var tgz bytes.Buffer
	zw := gzip.NewWriter(&tgz)
	if _, err := zw.Write(tar); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return tgz.Bytes(), nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// makeTar makes a deterministic tar; names ending in / are directories.
func makeTar(files map[string]string) ([]byte, error) {
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
			return nil, fmt.Errorf("tar %s: %w", name, err)
		}
		if _, err := tw.Write([]byte(files[name])); err != nil {
			return nil, fmt.Errorf("tar %s: %w", name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// FOD returns the FOD with attribute attr.
func (w *World) FOD(attr string) (FOD, bool) {
	for _, f := range w.FODs {
		if f.Attr == attr {
			return f, true
		}
	}
	return FOD{}, false
}

// URL is where the internet serves f.
func (w *World) URL(f FOD) string { return w.InternetURL + "/" + f.File }

// RuntimeAttrs lists the attributes whose outputs form the toplevel's
// runtime closure. A deep change rebuilds all of them; a variant change
// only the toplevel.
func RuntimeAttrs() []string {
	return []string{"toplevel", "hello", "libgreet", "libbase"}
}

// BuildOnlyAttrs lists the non-FOD attributes that building needs but the
// toplevel's runtime closure lacks.
func BuildOnlyAttrs() []string {
	return []string{"cc"}
}

// Args are the nix-build (or nix-instantiate, nix build) arguments for a
// variant, which changes only the toplevel, and a deep change, which
// changes libbase and so everything above it. Use short words: "" is the
// default world.
func Args(variant, deep string) []string {
	return []string{"--argstr", "variant", variant, "--argstr", "deep", deep}
}

// RebuildArgs are the arguments for a mass rebuild: a new build-only cc
// gives libbase and everything above it new store paths, written into
// their files, and changes nothing else.
func RebuildArgs(rebuild string) []string {
	return []string{"--argstr", "rebuild", rebuild}
}

// Greeting is what the toplevel's bin/hello prints.
func Greeting(variant, deep string) string {
	return fmt.Sprintf("nix-airgap demo system, variant %q\nHello, world! (libbase %s)\n", variant, libbaseVersion(deep))
}

func libbaseVersion(deep string) string {
	if deep == "" {
		return "1.0"
	}
	return "1.0-" + deep
}

// The world's sources. Each carries the salt on a line of its own, so
// that line numbers (which the patch relies on) do not move.

// ccScript is the "compiler" in the bootstrap tools: cc IN OUT
// [KEY=VALUE]... copies IN to OUT, replacing each @KEY@ with VALUE.
func ccScript(salt string) string {
	return `#!/bin/busybox sh
# nix-airgap demo world cc ` + salt + `
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

// libbaseIn carries data bytes of hex as comment lines of 65 bytes.
func libbaseIn(salt string, data int) string {
	var lines strings.Builder
	for seed := sha256.Sum256([]byte("nix-airgap demo world libbase data " + salt)); lines.Len() < data; {
		seed = sha256.Sum256(seed[:])
		fmt.Fprintf(&lines, "#%x\n", seed)
	}
	return `# nix-airgap demo world libbase ` + salt + `
` + lines.String() + `base_version() {
	echo "@VERSION@"
}
`
}

// greetIn has a typo that the patch fixes.
func greetIn(salt string) string {
	return `# nix-airgap demo world libgreet ` + salt + `
. @LIBBASE@/lib/libbase.sh
greet() {
	echo "Helo, world! (libbase $(base_version))"
}
`
}

func helloIn(salt string) string {
	return `#!/bin/busybox sh
# nix-airgap demo world hello ` + salt + `
. @LIBGREET@/lib/libgreet.sh
greet
`
}

func patchText(salt string) string {
	return `nix-airgap demo world: fix the greeting ` + salt + `
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
		for _, f := range w.FODs {
			if f.Attr == attr {
				return f, nil
			}
		}
		return FOD{}, fmt.Errorf("no FOD %q", attr)
	},
}).Parse(`# Generated by nix-airgap (internal/world): a small world shaped like nixpkgs'
# bootstrap. Builders run busybox-static's shell, whose applets need no
# PATH. A flake gives system, which its pure evaluation cannot ask.
{ variant ? "", deep ? "", rebuild ? "", internet ? "{{.InternetURL}}", system ? builtins.currentSystem }:
let
  fetchurlBuiltin = import <nix/fetchurl.nix>;
{{- if not .StructuredAttrs}}
  fetchurl = fetchurlBuiltin;
{{- end}}
  sh = name: attrs: script: derivation ({
    inherit name;
    inherit system;
    builder = "/bin/busybox";
    args = [ "sh" "-e" "-c" script ];
  } // attrs);
{{- if .StructuredAttrs}}

  # nixpkgs' fetchers since late 2025 build with structured attrs: name,
  # URLs, hash and the rest are in the .drv's __json, and the builder
  # reads them, and its output path, from $NIX_ATTRS_JSON_FILE.
  structured = name: attrs: script: derivation ({
    inherit name;
    __structuredAttrs = true;
    inherit system;
    builder = "/bin/busybox";
    args = [ "sh" "-e" "-c" (attrScript + script) ];
  } // attrs);
  attrScript = ''
    attr() { sed -n "s|.*\"$1\":\"\([^\"]*\)\".*|\1|p" "$NIX_ATTRS_JSON_FILE"; }
    out=$(attr out)
  '';
  # Like nixpkgs' fetchurl: each URL, then each of $NIX_HASHED_MIRRORS
  # (an impure variable, from the Nix daemon's environment) as
  # MIRROR/ALGO/HASH with the hash as written.
  fetchurl = { url, sha256 }: structured (baseNameOf url) {
    urls = [ url ];
    outputHashMode = "flat";
    outputHashAlgo = "sha256";
    outputHash = sha256;
    impureEnvVars = [ "NIX_HASHED_MIRRORS" ];
    preferLocalBuild = true;
  } ''
    for url in $(sed -n 's|.*"urls":\[\([^]]*\)\].*|\1|p' "$NIX_ATTRS_JSON_FILE" | tr -d '"' | tr , ' '); do
      wget -q -O "$out" "$url" && exit 0
    done
    for mirror in $NIX_HASHED_MIRRORS; do
      wget -q -O "$out" "''${mirror%/}/$(attr outputHashAlgo)/$(attr outputHash)" && exit 0
    done
    echo "cannot download $(attr name) from any mirror" >&2
    exit 1
  '';
{{- end}}
in rec {
  # Bootstrap tools: a NAR that builtin:fetchurl unpacks (recursive FOD).
  bootstrapTools = fetchurlBuiltin {
    url = "${internet}/{{(fod . "bootstrapTools").File}}";
    sha256 = "{{(fod . "bootstrapTools").Hash.Nix32}}";
    unpack = true;
  };

  # An executable file, like the bootstrap busybox (recursive FOD).
  busybox = fetchurlBuiltin {
    url = "${internet}/{{(fod . "busybox").File}}";
    sha256 = "{{(fod . "busybox").Hash.Nix32}}";
    executable = true;
  };

  # A source tarball and a patch (flat FODs){{if .StructuredAttrs}}, from nixpkgs-style fetchurl{{end}}.
  src = fetchurl {
    url = "${internet}/{{(fod . "src").File}}";
    sha256 = "{{(fod . "src").Hash.Nix32}}";
  };
  patch = fetchurl {
    url = "${internet}/{{(fod . "patch").File}}";
    sha256 = "{{(fod . "patch").Hash.Nix32}}";
  };

  # A FOD whose builder downloads and unpacks, like fetchgit.
  libbaseSrc = {{if .StructuredAttrs}}structured{{else}}sh{{end}} "libbase-src" {
    url = "${internet}/{{(fod . "libbaseSrc").File}}";
    outputHashMode = "recursive";
    outputHashAlgo = "sha256";
    outputHash = "{{(fod . "libbaseSrc").Hash.Nix32}}";
  } ''
    wget -q -O libbase.tar "{{if .StructuredAttrs}}$(attr url){{else}}$url{{end}}"
    mkdir "$out"
    tar -x -f libbase.tar -C "$out"
  '';

  # The compiler: built by the busybox FOD from the bootstrap tools, and
  # needed by the libs, which do not reference it.
  # A rebuild changes only its derivation, as a new stdenv would.
  cc = derivation ({
    name = "cc-1.0";
    inherit system;
    builder = busybox;
    args = [ "sh" "-e" "-c" ''
      mkdir -p "$out/bin"
      cp ${bootstrapTools}/bin/cc "$out/bin/cc"
      ln -s ${bootstrapTools} "$out/libexec"
    '' ];
  } // (if rebuild == "" then { } else { inherit rebuild; }));

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
  toplevel = sh "demo-system" { inherit variant; } ''
    mkdir -p "$out/bin"
    ln -s ${hello} "$out/sw"
    cat >"$out/bin/hello" <<EOF
    #!/bin/busybox sh
    echo "nix-airgap demo system, variant \"$variant\""
    exec $out/sw/bin/hello
    EOF
    chmod +x "$out/bin/hello"
  '';
}
`))
