package plan

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// ErrBadTarget reports a target that cannot be parsed.
var ErrBadTarget = errors.New("invalid target")

// TargetKind is the kind of a TargetSpec.
type TargetKind uint8

const (
	// TargetFlake is a flake installable, REF#ATTR.
	TargetFlake TargetKind = iota + 1
	// TargetFile is an attribute of a Nix file or expression, as
	// nix-build -A takes it.
	TargetFile
	// TargetPath is a store path: an output, or a .drv meaning its
	// outputs.
	TargetPath
)

// TargetSpec is one target as the user named it. The same syntax serves
// plan, pack and check.
type TargetSpec struct {
	Kind TargetKind
	// Flake is the flake reference (TargetFlake), such as ".",
	// "path:/dir" or "git+file:///repo".
	Flake string
	// Attr is the flake output attribute (TargetFlake; "" means the
	// flake's default package), or the attribute path in File
	// (TargetFile; "" means every derivation the file evaluates to).
	// A flake's "nixosConfigurations.NAME" is already expanded to
	// "nixosConfigurations.NAME.config.system.build.toplevel".
	Attr string
	// File is the Nix file (TargetFile), or "" for Expr.
	File string
	// Expr is the Nix expression of a TargetFile given with --expr.
	Expr string
	// NixArgs are "--arg NAME EXPR" and "--argstr NAME VALUE" words for
	// File or Expr, as nix-instantiate takes them (TargetFile).
	NixArgs []string
	// Path is the store path (TargetPath).
	Path storepath.Path
	// Outputs are the outputs chosen with DRV!OUT[,OUT...]; nil means
	// all of a .drv's outputs.
	Outputs []string
	// Text is the target as written: "path:/dir#attr" (a relative flake
	// path or file made absolute: ".#x" run in /src is "/src#x"), "--file F --attr
	// A --argstr v 1 -I P", a store path; an expression is quoted, on one
	// line: --expr "E". A TargetFile's text has its arguments and search
	// path, which make another target; arguments sorted by name, so that
	// their order on the command line does not.
	Text string
	// Group names the targets a summary reports together: Text, except
	// for paths read from a file, which share "--paths-from FILE".
	Group string
}

func (t TargetSpec) String() string { return t.Text }

// source is a TargetFile's file or expression as written: "--file F", or
// the expression quoted, so that the manifest and summaries show a target
// on one line: --expr "E".
func (t TargetSpec) source() string {
	if t.File != "" {
		return "--file " + absFile(t.File)
	}
	return "--expr " + strconv.Quote(t.Expr)
}

// argsText is a TargetFile's --arg/--argstr words, sorted by name (a
// name given twice keeps its order), then its -I entries in their order,
// which decides, as words for Text: "--argstr v 1 -I w=/dir", a value
// that is not one plain word quoted.
func argsText(nixArgs, include []string) string {
	var pairs [][]string
	for i := 0; i+3 <= len(nixArgs); i += 3 {
		pairs = append(pairs, nixArgs[i:i+3])
	}
	slices.SortStableFunc(pairs, func(a, b []string) int { return strings.Compare(a[1], b[1]) })
	var b strings.Builder
	for _, p := range pairs {
		fmt.Fprintf(&b, " %s %s %s", p[0], quoteWord(p[1]), quoteWord(p[2]))
	}
	for _, p := range include {
		b.WriteString(" -I " + quoteWord(p))
	}
	return b.String()
}

// quoteWord quotes s unless it is one plain word, as a shell reads it.
func quoteWord(s string) string {
	if s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_-./=+:,@%", r))
	}) {
		return s
	}
	return strconv.Quote(s)
}

// Installable is the flake installable to pass to nix, REF#ATTR, for a
// TargetFlake.
func (t TargetSpec) Installable() string {
	if t.Attr == "" {
		return t.Flake
	}
	return t.Flake + "#" + t.Attr
}

// Args are the targets of a command line.
type Args struct {
	// Installables are the positional arguments: flake installables and
	// store paths, and with File or Expr, bare attribute paths of it.
	Installables []string
	// File, Expr, Attrs and NixArgs are --file F, --expr E, --attr A
	// (repeatable) and the --arg/--argstr words.
	File    string
	Expr    string
	Attrs   []string
	NixArgs []string
	// Include are the -I entries, for the texts of File's or Expr's
	// targets only: the runner passes them to Nix.
	Include []string
	// PathsFrom are files listing store paths, one a line; xz-compressed
	// files are read as such.
	PathsFrom []string
}

// ParseTargets turns a command line's targets into specs, reading
// PathsFrom files. Positional targets come first, then --file ones, then
// those from files.
func ParseTargets(dir storepath.Dir, a Args) ([]TargetSpec, error) {
	var out []TargetSpec
	attrs := a.Attrs
	// src is what --attr selects from: --file F or --expr E.
	src := TargetSpec{Kind: TargetFile, File: a.File, Expr: a.Expr, NixArgs: a.NixArgs}
	if a.File != "" && a.Expr != "" {
		return nil, fmt.Errorf("target --expr: %w: give --file or --expr, not both", ErrBadTarget)
	}
	var args string
	if a.File != "" || a.Expr != "" {
		src.Text = src.source()
		args = argsText(a.NixArgs, a.Include)
	}
	for _, s := range a.Installables {
		if src.Text != "" && isBareAttr(s) {
			// nix build --file F ATTR's form: with --file, a bare name is
			// an attribute of the file, not a flake of the registry.
			attrs = append(attrs[:len(attrs):len(attrs)], s)
			continue
		}
		t, err := ParseTarget(dir, s)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	switch {
	case src.Text == "" && len(a.Attrs) > 0:
		return nil, fmt.Errorf("target --attr %s: %w: --attr needs --file or --expr%s", a.Attrs[0], ErrBadTarget, nixBuildHint(a))
	case src.Text == "" && len(a.NixArgs) > 0:
		return nil, fmt.Errorf("target %s: %w: --arg and --argstr need --file or --expr", strings.Join(a.NixArgs, " "), ErrBadTarget)
	case src.Text != "" && len(attrs) == 0:
		src.Text += args
		src.Group = src.Text
		out = append(out, src)
	}
	if a.File != "" {
		if err := checkFile(a.File); err != nil {
			return nil, err
		}
	}
	if src.Text != "" {
		for _, attr := range attrs {
			t := src
			t.Attr, t.Text = attr, src.Text+" --attr "+attr+args
			t.Group = t.Text
			out = append(out, t)
		}
	}
	for _, name := range a.PathsFrom {
		ts, err := ReadPathsFile(dir, name)
		if err != nil {
			return nil, err
		}
		out = append(out, ts...)
	}
	switch {
	case len(out) == 0 && len(a.PathsFrom) > 0:
		return nil, fmt.Errorf("targets: %w: none given: --paths-from %s lists no store path", ErrBadTarget, strings.Join(a.PathsFrom, ", "))
	case len(out) == 0:
		return nil, fmt.Errorf("targets: %w: none given", ErrBadTarget)
	}
	return out, nil
}

// nixBuildHint is what to write for nix-build's FILE -A ATTR, or its -A
// ATTR of ./default.nix, when that is what a's --attr without --file
// reads as: "" when it does not.
func nixBuildHint(a Args) string {
	switch {
	case len(a.Installables) == 0 && len(a.PathsFrom) == 0:
		return fmt.Sprintf(" (nix-build -A %s reads ./default.nix: here, --file default.nix --attr %[1]s)", quoteWord(a.Attrs[0]))
	case len(a.Installables) == 1 && !strings.ContainsAny(a.Installables[0], "#:"):
		return fmt.Sprintf(" (nix-build %s -A %s: here, --file %[1]s --attr %[2]s)", quoteWord(a.Installables[0]), quoteWord(a.Attrs[0]))
	}
	return ""
}

// checkFile says, before Nix is run, that --file names no file: a missing
// file is exit 5, as every missing input is, not a Nix failure (exit 7).
// A <NAME> lookup or a URL is Nix's to find.
func checkFile(file string) error {
	if strings.HasPrefix(file, "<") || strings.Contains(file, ":") {
		return nil
	}
	if _, err := os.Stat(file); err != nil {
		return fmt.Errorf("target --file %s: %w", file, storage.UnwrapPath(err))
	}
	return nil
}

// isBareAttr says whether s reads as an attribute path (hello,
// python3Packages.requests) rather than a flake reference or a path: no
// "#", ":" or "/", and not "." or "..".
func isBareAttr(s string) bool {
	_, ok := splitAttrPath(s)
	return ok && s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "#:/")
}

// ParseTarget parses one positional target: a store path in dir (an
// output, a .drv, or DRV!OUT[,OUT...]), or a flake installable (REF#ATTR,
// or a bare REF for its default package). As Nix does, it takes a path
// with a "/" for a store path when it is one, or a file in one, or a
// symlink to either (./result), before it tries a flake.
func ParseTarget(dir storepath.Dir, s string) (TargetSpec, error) {
	if p, ok := followLinksToStore(dir, s); ok {
		s = p
	}
	switch {
	case s == "":
		return TargetSpec{}, fmt.Errorf("target %q: %w: empty", s, ErrBadTarget)
	case strings.ContainsAny(s, "\n\x00"):
		return TargetSpec{}, fmt.Errorf("target %q: %w: control character", s, ErrBadTarget)
	case strings.HasPrefix(s, string(dir)+"/") && !strings.Contains(s, "#"):
		return parseStorePath(dir, storePathOf(dir, s))
	case otherStore(s) != "":
		// Else Nix would take it for a path: flake, and fail on it.
		return TargetSpec{}, fmt.Errorf("target %q: %w: a store path of the store %s, but this store's dir is %s; give --store for that store, or the path in %s", s, ErrBadTarget, otherStore(s), dir, dir)
	}
	ref, attr, _ := strings.Cut(s, "#")
	if ref == "" {
		return TargetSpec{}, fmt.Errorf("target %q: %w: no flake reference before #", s, ErrBadTarget)
	}
	if parts, ok := splitAttrPath(attr); ok && len(parts) == 2 && parts[0] == "nixosConfigurations" {
		attr += ".config.system.build.toplevel"
	}
	if abs := absFlake(ref); abs != ref {
		s = abs + strings.TrimPrefix(s, ref)
	}
	return TargetSpec{Kind: TargetFlake, Flake: ref, Attr: attr, Text: s, Group: s}, nil
}

// followLinksToStore is s, a path with a "/" that is not in dir, with
// its last component's symlinks followed as Nix's followLinksToStore
// does, when that leads into dir: ./result, or ../store/HASH-NAME. ok is
// false for anything else, which Nix then takes for a flake.
func followLinksToStore(dir storepath.Dir, s string) (path string, ok bool) {
	if !strings.Contains(s, "/") || strings.HasPrefix(s, string(dir)+"/") || strings.ContainsAny(s, "#\n\x00") {
		return "", false
	}
	p, err := filepath.Abs(s)
	for range 40 { // Linux's bound on the links one lookup follows
		if err != nil {
			return "", false
		}
		if strings.HasPrefix(p, string(dir)+"/") {
			return p, true
		}
		var target string
		if target, err = os.Readlink(p); err == nil && !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(p), target)
		}
		p = filepath.Clean(target)
	}
	return "", false
}

// storePathOf is the store path s names: s itself, or, for a file in a
// store path (STORE/HASH-NAME/bin/x), that store path, as Nix takes it.
// DRV!OUT, and what is no store path, are left as they are.
func storePathOf(dir storepath.Dir, s string) string {
	if p, rest, err := dir.ParseBelow(s); err == nil && rest != "" && !strings.Contains(s, "!") {
		return p.String()
	}
	return s
}

// absFile is a --file path made absolute, as absFlake makes a flake's:
// the same name in another directory is another file. A <NAME> lookup
// or a URL is left as it is.
func absFile(file string) string {
	if strings.HasPrefix(file, "<") || strings.Contains(file, ":") {
		return file
	}
	if abs, err := filepath.Abs(file); err == nil {
		return abs
	}
	return file
}

// absFlake is the flake reference ref with a relative path (".", "./x",
// "../x", "path:./x") made absolute, as Nix resolves it in the working
// directory: the same text run in another flake's directory is another
// target. Others are returned as they are.
func absFlake(ref string) string {
	scheme, p := "", ref
	if rest, ok := strings.CutPrefix(ref, "path:"); ok {
		scheme, p = "path:", rest
	}
	path, query, hasQuery := strings.Cut(p, "?")
	if path != "." && path != ".." && !strings.HasPrefix(path, "./") && !strings.HasPrefix(path, "../") {
		return ref
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return ref
	}
	if hasQuery {
		abs += "?" + query
	}
	return scheme + abs
}

// otherStore returns the store dir of s, a store path (or DRV!OUT) whose
// dir is not this store's, or "" if s reads as none.
func otherStore(s string) string {
	path, _, _ := strings.Cut(s, "!")
	d, base := filepath.Split(path)
	if !filepath.IsAbs(path) || strings.Contains(s, "#") {
		return ""
	}
	if _, _, err := storepath.ParseBase(base); err != nil {
		return ""
	}
	return filepath.Clean(d)
}

func parseStorePath(dir storepath.Dir, s string) (TargetSpec, error) {
	path, outs, hasOuts := strings.Cut(s, "!")
	p, err := dir.Parse(path)
	if err != nil {
		// Parse's error names the path again: say only what is wrong.
		if inner := errors.Unwrap(err); inner != nil {
			err = inner
		}
		return TargetSpec{}, fmt.Errorf("target %q: %w: %w", s, ErrBadTarget, err)
	}
	t := TargetSpec{Kind: TargetPath, Path: p, Text: s, Group: s}
	if hasOuts {
		if !p.IsDerivation() {
			return TargetSpec{}, fmt.Errorf("target %q: %w: !OUTPUT needs a .drv", s, ErrBadTarget)
		}
		for o := range strings.SplitSeq(outs, ",") {
			if storepath.ValidateName(o) != nil {
				return TargetSpec{}, fmt.Errorf("target %q: %w: bad output name %q", s, ErrBadTarget, o)
			}
			t.Outputs = append(t.Outputs, o)
		}
	}
	return t, nil
}

// splitAttrPath splits a Nix attribute path at dots outside double
// quotes, unquoting the parts. ok is false for unbalanced quotes.
func splitAttrPath(s string) (parts []string, ok bool) {
	var cur strings.Builder
	quoted := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			quoted = !quoted
		case c == '.' && !quoted:
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	return append(parts, cur.String()), !quoted
}

// maxLine bounds a line of a paths file; store paths are far shorter.
const maxLine = 64 << 10

// ReadPathsFile reads store path targets from the file name (see
// ReadPaths).
func ReadPathsFile(dir storepath.Dir, name string) ([]TargetSpec, error) {
	f, err := os.Open(name)
	if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
		err = pe.Err // named below, once
	}
	if err != nil {
		return nil, fmt.Errorf("read paths %s: %w", name, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("read paths %s: %w: a directory, where a file listing store paths belongs", name, ErrBadTarget)
	}
	return ReadPaths(dir, f, name)
}

// ReadPaths reads store path targets, one a line, from r, which may be
// xz-compressed (a channel's store-paths.xz). Blank lines and lines
// starting with # are skipped. Errors name the file and line.
func ReadPaths(dir storepath.Dir, r io.Reader, name string) ([]TargetSpec, error) {
	br := bufio.NewReader(r)
	if head, _ := br.Peek(compression.SniffSize); compression.Sniff(head) == compression.XZ {
		xr, err := compression.NewReader(br, compression.XZ)
		if err != nil {
			return nil, fmt.Errorf("read paths %s: %w", name, err)
		}
		defer xr.Close()
		r = xr
	} else {
		r = br
	}
	group := "--paths-from " + name
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, maxLine)
	var out []TargetSpec
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if len(out) == 0 && (line[0] == '{' || line[0] == '[') {
			// A cache inventory, a manifest.json or plan --json.
			return nil, fmt.Errorf("read paths %s: %w: a JSON document, not store paths one a line", name, ErrBadTarget)
		}
		if !strings.HasPrefix(line, string(dir)+"/") {
			return nil, fmt.Errorf("read paths %s:%d: %w: %q is not a store path in %s", name, n, ErrBadTarget, line, dir)
		}
		t, err := parseStorePath(dir, line)
		if err != nil {
			return nil, fmt.Errorf("read paths %s:%d: %w", name, n, err)
		}
		t.Group = group
		out = append(out, t)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read paths %s: %w", name, err)
	}
	return out, nil
}
