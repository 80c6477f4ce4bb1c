package cli_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/nix-airgap/nix-airgap/internal/cli"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
)

// openPTY returns the terminal side of a new pseudo-terminal.
func openPTY(t *testing.T) *os.File {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { ptmx.Close() })
	fd := int(ptmx.Fd())
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	tty, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { tty.Close() })
	return tty
}

// TestPackRefusesOutputs: pack refuses, before doing anything, an output
// it would not write as named (a compressed tar), a tar stream to a
// terminal, as tar does, and a --temp-dir that is no directory.
func TestPackRefusesOutputs(t *testing.T) {
	dir := t.TempDir()
	target := []string{"--file", filepath.Join(dir, "default.nix"), "--attr", "hello"}
	for _, out := range []string{"b.tar.gz", "b.tgz", "b.tar.zst", "b.zip"} {
		code, _, stderr := run(t, append([]string{"pack", "--out", filepath.Join(dir, out)}, target...)...)
		if code != cli.ExitUsage || !strings.Contains(stderr, "uncompressed FILE.tar") {
			t.Errorf("pack --out %s: exit %d, stderr %q; want %d, refused", out, code, stderr, cli.ExitUsage)
		}
		if _, err := os.Stat(filepath.Join(dir, out)); err == nil {
			t.Errorf("pack --out %s made it", out)
		}
	}
	notDir := filepath.Join(dir, "file")
	os.WriteFile(notDir, []byte("x\n"), 0o644)
	for _, tt := range []struct{ temp, want string }{
		{filepath.Join(dir, "nonexistent"), "no such file or directory"},
		{notDir, "not a directory"},
	} {
		code, _, stderr := run(t, append([]string{"pack", "--out", filepath.Join(dir, "b.tar"), "--temp-dir", tt.temp}, target...)...)
		if want := "nix-airgap: pack: --temp-dir " + tt.temp + ": " + tt.want; code != cli.ExitUsage || !strings.HasPrefix(stderr, want) {
			t.Errorf("pack --temp-dir %s: exit %d, stderr %q; want %d, %q", tt.temp, code, stderr, cli.ExitUsage, want)
		}
	}
	var stderr bytes.Buffer
	err := cli.Run(t.Context(), append([]string{"pack", "--out", "-"}, target...), openPTY(t), &stderr)
	if cli.ExitCode(err) != cli.ExitUsage || !strings.Contains(stderr.String(), "--out -: stdout is a terminal: no place to write a bundle") {
		t.Errorf("pack --out - to a terminal: exit %d, stderr %q; want %d, refused", cli.ExitCode(err), stderr.String(), cli.ExitUsage)
	}
	// /dev/null is a character device, but no terminal.
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	stderr.Reset()
	err = cli.Run(t.Context(), append([]string{"pack", "--out", "-"}, target...), null, &stderr)
	if cli.ExitCode(err) == cli.ExitUsage || strings.Contains(stderr.String(), "terminal") {
		t.Errorf("pack --out - >/dev/null: exit %d, stderr %q; want it not refused as a terminal", cli.ExitCode(err), stderr.String())
	}
}

// TestPackOutOfAnotherKind: an --out pack cannot write a bundle into (a
// file, a cache, a directory of other things) is refused before
// anything is planned or built: the target here would fail to evaluate.
func TestPackOutOfAnotherKind(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("x\n"), 0o644)
	cacheDir := filepath.Join(dir, "cache")
	os.MkdirAll(filepath.Join(cacheDir, "nix-airgap"), 0o755)
	os.WriteFile(filepath.Join(cacheDir, "nix-cache-info"), []byte("StoreDir: /nix/store\n"), 0o644)
	other := filepath.Join(dir, "other")
	os.MkdirAll(other, 0o755)
	os.WriteFile(filepath.Join(other, "notes.txt"), []byte("x\n"), 0o644)
	nixCache := filepath.Join(dir, "nix-cache")
	os.MkdirAll(filepath.Join(nixCache, "nar"), 0o755)
	os.WriteFile(filepath.Join(nixCache, "nix-cache-info"), []byte("StoreDir: /nix/store\n"), 0o644)
	for _, tt := range []struct{ out, want string }{
		{file, "a file, not a directory: refusing to replace it; give another --out: a new or empty directory, or FILE.tar"},
		{cacheDir, "a long-lived cache (it has nix-airgap/), not a bundle: refusing to replace it"},
		{other, "not empty and not a bundle: refusing to replace it"},
		{nixCache, "a binary cache no pack made (nix copy --to file://… makes one), which a pack into it would empty: refusing to replace it"},
		// A path below a file cannot be looked at, let alone written.
		{filepath.Join(file, "b"), "not a directory: no place to write a bundle; give another --out"},
	} {
		code, stdout, stderr := run(t, "pack", "--file", filepath.Join(dir, "nowhere.nix"), "--attr", "a", "--out", tt.out)
		if code != cli.ExitUsage || stdout != "" || !strings.HasPrefix(stderr, "nix-airgap: pack: --out "+tt.out+": "+tt.want) {
			t.Errorf("pack --out %s: exit %d, stderr %q; want %d and %q, before the target is evaluated", tt.out, code, stderr, cli.ExitUsage, tt.want)
		}
	}
}

// TestPackOutDirMissing: a FILE.tar or volume set --out in a directory
// that does not exist (a medium not mounted), or a bundle directory
// whose parent does not exist, is refused before the targets are
// evaluated, naming the directory, not once pack writes (or made with
// its parents, on the file system below the mount point).
func TestPackOutDirMissing(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "no", "such")
	for _, args := range [][]string{
		{"--out", filepath.Join(missing, "e.tar")},
		{"--out", filepath.Join(missing, "e.tar"), "--volume-size", "20KiB"},
		{"--out", filepath.Join(missing, "bundle-1")},
		{"--out", filepath.Join(missing, "bundle-1") + "/"},
	} {
		code, stdout, stderr := run(t, append([]string{"pack", "--file", filepath.Join(dir, "nowhere.nix"), "--attr", "a"}, args...)...)
		want := "nix-airgap: pack: --out " + args[1] + ": directory " + missing + " does not exist: no place to write a bundle; "
		if code != cli.ExitUsage || stdout != "" || !strings.HasPrefix(stderr, want) {
			t.Errorf("pack %q: exit %d, stderr %q; want %d and %q, before the target is evaluated", args, code, stderr, cli.ExitUsage, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "no")); err == nil {
		t.Errorf("a refused pack made %s", filepath.Join(dir, "no"))
	}
}

// TestStdinTerminalRefused: verify - and import - refuse to read a tar
// stream from a terminal, as tar does, rather than wait for one.
func TestStdinTerminalRefused(t *testing.T) {
	stdin := os.Stdin
	os.Stdin = openPTY(t)
	defer func() { os.Stdin = stdin }()
	for _, args := range [][]string{
		{"verify", "-", "--allow-unsigned"},
		{"import", "-", "--cache", filepath.Join(t.TempDir(), "cache"), "--allow-unsigned"},
	} {
		code, stdout, stderr := run(t, args...)
		if code != cli.ExitUsage || stdout != "" || !strings.Contains(stderr, "refusing to read a tar stream from a terminal") {
			t.Errorf("%s - from a terminal: exit %d, stderr %q; want %d, refused", args[0], code, stderr, cli.ExitUsage)
		}
	}
}

// TestPackDiskFull: a pack that fills its disk fails as pack, saying so
// first, as every command's error does ("op subject: problem"), then
// that the disk is full; it names the files the user knows (the bundle),
// not temp files. An import that would not fit is refused before it
// writes, naming the cache and both sizes (internal/reliability fills
// the disk under a running import).
func TestPackDiskFull(t *testing.T) {
	w, tmp, keyFile, pubFile := newKeyedWorld(t, "cli-test-1")
	full := filepath.Join(tmp, "full")
	os.Mkdir(full, 0o755)
	if err := unix.Mount("tmpfs", full, "tmpfs", 0, "size=40k"); err != nil {
		t.Skipf("cannot mount a small tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(full, unix.MNT_DETACH) })
	bundle := filepath.Join(tmp, "b")
	if code, _, stderr := run(t, "pack", "--file", w.File, "--attr", "toplevel", "--secret-key", keyFile, "--out", bundle, "--no-progress"); code != cli.ExitOK {
		t.Fatalf("pack: %s", stderr)
	}
	const enospc = "no space left on device\nThe disk is full (ENOSPC)"
	cache := filepath.Join(full, "cache")
	for _, tt := range []struct {
		args           []string
		prefix, in, at string
	}{
		{[]string{"pack", "--file", w.File, "--attr", "toplevel", "--secret-key", keyFile, "--out", filepath.Join(full, "b")}, "nix-airgap: pack: ", "write " + filepath.Join(full, "b") + ": ", enospc},
		{[]string{"pack", "--file", w.File, "--attr", "toplevel", "--secret-key", keyFile, "--out", filepath.Join(full, "b.tar")}, "nix-airgap: pack: ", "write " + filepath.Join(full, "b.tar") + ": ", enospc},
		{[]string{"import", bundle, "--cache", cache, "--public-key", pubFile}, "nix-airgap: import " + bundle + ": ", cache + " has ", "free, this import needs about "},
	} {
		code, _, stderr := run(t, append(tt.args, "--no-progress")...)
		if code != cli.ExitFailure || !strings.HasPrefix(stderr, tt.prefix) || !strings.Contains(stderr, tt.in) ||
			!strings.Contains(stderr, tt.at) || strings.Contains(stderr, "tmp-") || strings.Contains(stderr, ".staging-") {
			t.Errorf("%s onto a full disk: exit %d, stderr %q; want %d, %q naming %q and %q", tt.args[0], code, stderr, cli.ExitFailure, tt.prefix, tt.in, tt.at)
		}
		os.RemoveAll(filepath.Join(full, "b"))
	}
	if _, err := os.Stat(cache); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused import left %s: %v", cache, err)
	}
}

// TestUnsignedWarningWhenWriting: pack without --secret-key warns that
// the bundle will be unsigned once it writes one, not before failing for
// another reason, such as a target that does not evaluate.
func TestUnsignedWarningWhenWriting(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	n.Setenv(t)
	dir := t.TempDir()
	const warning = "warning: no --secret-key: the bundle will be unsigned"
	code, _, stderr := run(t, "pack", "--file", filepath.Join(dir, "nowhere.nix"), "--attr", "a", "--out", filepath.Join(dir, "b1"), "--no-progress")
	if code == cli.ExitOK || strings.Contains(stderr, warning) || !strings.HasPrefix(stderr, "nix-airgap: pack: ") {
		t.Errorf("pack of a target that does not evaluate: exit %d, stderr %q; want its error alone", code, stderr)
	}
	file := filepath.Join(dir, "hello.txt")
	os.WriteFile(file, []byte("hello\n"), 0o644)
	path := n.Run(t, "nix-store", "--add", file)
	code, _, stderr = run(t, "pack", path, "--out", filepath.Join(dir, "b2"), "--no-progress")
	if code != cli.ExitOK || strings.Count(stderr, warning) != 1 {
		t.Errorf("pack without a key: exit %d, stderr %q; want the warning once", code, stderr)
	}
}

// TestPackOutHoldsAnotherBundle: a finished bundle at --out of other
// targets or another mode (a directory, a tar, a volume set), or a tar
// that is no bundle, is refused before anything is planned, and left as
// it was; the same pack again goes on, and a set packed again in fewer
// volumes leaves none of the older set's to be mixed in.
func TestPackOutHoldsAnotherBundle(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	n.Setenv(t)
	// A chain of paths, each 24 KiB and referring to the one before.
	expr := `let
  mk = i: builtins.toFile "outguard-${toString i}" "${builtins.concatStringsSep "\n" (builtins.genList (j: builtins.hashString "sha512" "${toString i}-${toString j}") 190)}\n${if i > 0 then builtins.elemAt ps (i - 1) else ""}";
  ps = builtins.genList mk 6;
in builtins.elemAt ps `
	a := strings.Trim(n.Run(t, "nix-instantiate", "--eval", "--read-write-mode", "-E", expr+"5"), `"`)
	b := strings.Trim(n.Run(t, "nix-instantiate", "--eval", "--read-write-mode", "-E", expr+"1"), `"`)
	dir := t.TempDir()
	pack := func(target, out string, more ...string) (int, string) {
		t.Helper()
		code, _, stderr := run(t, append([]string{"pack", target, "--mode", "runtime", "--no-build", "--no-progress", "--out", out}, more...)...)
		return code, stderr
	}
	set := filepath.Join(dir, "set.tar")
	notes := filepath.Join(dir, "notes.tar")
	os.WriteFile(notes, []byte("not a tar\n"), 0o644)
	for _, tt := range []struct {
		name, out string
		more      []string
		file      string // what holds the older bundle, when not out itself
	}{
		{"directory", filepath.Join(dir, "bundle"), nil, filepath.Join(dir, "bundle", "manifest.json")},
		{"tar", filepath.Join(dir, "bundle.tar"), nil, ""},
		{"volume set", filepath.Join(dir, "set.tar"), []string{"--volume-size", "48KiB"}, filepath.Join(dir, "set.001.tar")},
	} {
		if code, stderr := pack(a, tt.out, tt.more...); code != cli.ExitOK {
			t.Fatalf("pack into a %s: exit %d\n%s", tt.name, code, stderr)
		}
		before := treeOf(t, dir)
		for _, other := range [][]string{{b}, {a, "--mode", "build"}} {
			code, stderr := pack(other[0], tt.out, append(slices.Clone(tt.more), other[1:]...)...)
			want := "nix-airgap: pack: --out " + tt.out + ": a finished bundle of "
			if tt.file != "" {
				want = "nix-airgap: pack: --out " + tt.out + ": " + tt.file + ": a finished bundle of "
			}
			if code != cli.ExitUsage || !strings.HasPrefix(stderr, want) || !strings.Contains(stderr, "remove it, or give another --out") {
				t.Errorf("pack %q into a %s of another bundle: exit %d, stderr %q; want %d, %q", other, tt.name, code, stderr, cli.ExitUsage, want)
			}
			if diff := cmp.Diff(before, treeOf(t, dir)); diff != "" {
				t.Errorf("pack %q into a %s of another bundle changed it (-before +after):\n%s", other, tt.name, diff)
			}
		}
		if code, stderr := pack(a, tt.out, tt.more...); code != cli.ExitOK {
			t.Errorf("the same pack again into a %s: exit %d\n%s", tt.name, code, stderr)
		}
	}
	// A binary cache Nix made, without a manifest as an unfinished
	// pack's leftovers: pack would have emptied it.
	nixCache := filepath.Join(dir, "nix-cache")
	n.Run(t, "nix", "--extra-experimental-features", "nix-command", "copy", "--to", "file://"+nixCache, a)
	before := treeOf(t, nixCache)
	if code, stderr := pack(b, nixCache); code != cli.ExitUsage || !strings.Contains(stderr, "--out "+nixCache+": a binary cache no pack made") {
		t.Errorf("pack into a binary cache Nix made: exit %d, stderr %q; want %d, refused", code, stderr, cli.ExitUsage)
	}
	if diff := cmp.Diff(before, treeOf(t, nixCache)); diff != "" {
		t.Errorf("pack into a binary cache Nix made changed it (-before +after):\n%s", diff)
	}
	code, stderr := pack(a, notes)
	if code != cli.ExitUsage || !strings.Contains(stderr, "--out "+notes+": not a bundle") {
		t.Errorf("pack into a tar that is no bundle: exit %d, stderr %q; want %d, refused", code, stderr, cli.ExitUsage)
	}
	if data, _ := os.ReadFile(notes); string(data) != "not a tar\n" {
		t.Errorf("pack into a tar that is no bundle changed it: %q", data)
	}
	dirTar := filepath.Join(dir, "dir.tar")
	os.Mkdir(dirTar, 0o755)
	if code, stderr := pack(a, dirTar); code != cli.ExitUsage || !strings.Contains(stderr, "--out "+dirTar+": a directory, not a tar") {
		t.Errorf("pack into a directory named FILE.tar: exit %d, stderr %q; want %d, refused", code, stderr, cli.ExitUsage)
	}

	// A file named as a volume of the set that is not one of this pack's
	// set, with no set there or beside one: the new set would overwrite
	// it, or leave it mixed in.
	userVol := filepath.Join(dir, "user.002.tar")
	os.WriteFile(userVol, []byte("the user's own\n"), 0o644)
	lone, bset := filepath.Join(dir, "lone.tar"), filepath.Join(dir, "bset.tar")
	if code, stderr := pack(b, lone); code != cli.ExitOK {
		t.Fatalf("pack into a tar: exit %d\n%s", code, stderr)
	}
	if code, stderr := pack(b, bset, "--volume-size", "48KiB"); code != cli.ExitOK {
		t.Fatalf("pack into a volume set: exit %d\n%s", code, stderr)
	}
	for _, tt := range []struct{ out, from, stray, want string }{
		{filepath.Join(dir, "user.tar"), "", userVol, userVol + ": not a bundle"},
		{set, lone, filepath.Join(dir, "set.0004.tar"), filepath.Join(dir, "set.0004.tar") + ": a bundle tar, not a volume of a set: refusing to replace it; remove it, or give another --out"},
		{set, filepath.Join(dir, "bset.001.tar"), filepath.Join(dir, "set.009.tar"), filepath.Join(dir, "set.009.tar") + ": a finished bundle of other targets (" + b + "): refusing to replace it; remove it, or give another --out"},
	} {
		if tt.from != "" {
			os.Rename(tt.from, tt.stray)
		}
		before := treeOf(t, dir)
		code, stderr := pack(a, tt.out, "--volume-size", "48KiB")
		if want := "nix-airgap: pack: --out " + tt.out + ": " + tt.want; code != cli.ExitUsage || !strings.HasPrefix(stderr, want) {
			t.Errorf("pack into %s beside %s: exit %d, stderr %q; want %d, %q", tt.out, tt.stray, code, stderr, cli.ExitUsage, want)
		}
		if diff := cmp.Diff(before, treeOf(t, dir)); diff != "" {
			t.Errorf("pack into %s beside %s changed it (-before +after):\n%s", tt.out, tt.stray, diff)
		}
		os.Remove(tt.stray)
	}

	// The same set again, in fewer volumes: the older set's last go, and
	// the new set verifies and imports as NAME.*.tar.
	many, _ := filepath.Glob(filepath.Join(dir, "set.*.tar"))
	if code, stderr := pack(a, set, "--volume-size", "96KiB"); code != cli.ExitOK {
		t.Fatalf("pack into fewer volumes: exit %d\n%s", code, stderr)
	}
	fewer, _ := filepath.Glob(filepath.Join(dir, "set.*.tar"))
	if len(fewer) >= len(many) {
		t.Fatalf("volumes %q, then %q: want fewer", many, fewer)
	}
	for _, cmd := range [][]string{{"verify"}, {"import", "--cache", filepath.Join(dir, "cache")}} {
		if code, _, stderr := run(t, append(append(cmd, fewer...), "--allow-unsigned", "--no-progress")...); code != cli.ExitOK {
			t.Errorf("%s of the set packed again: exit %d\n%s", cmd[0], code, stderr)
		}
	}
}

// TestPackOutOtherArguments: a bundle of a file's attribute with other
// --arg/--argstr values is of another target, refused; the same values in
// another order are the same target, and the manifest records them.
func TestPackOutOtherArguments(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	n.Setenv(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "args.nix")
	os.WriteFile(file, []byte(`{ v, w ? 0 }: {
  x = derivation { name = "outargs-${v}"; system = builtins.currentSystem; builder = "/bin/busybox"; args = [ "sh" "-c" "echo ${v} ${toString w} > $out" ]; };
}
`), 0o644)
	out := filepath.Join(dir, "bundle")
	pack := func(args ...string) (int, string) {
		t.Helper()
		code, _, stderr := run(t, append([]string{"pack", "--file", file, "-A", "x", "--mode", "runtime", "--no-progress", "--out", out}, args...)...)
		return code, stderr
	}
	if code, stderr := pack("--argstr", "v", "1", "--arg", "w", "2"); code != cli.ExitOK {
		t.Fatalf("pack: exit %d\n%s", code, stderr)
	}
	spec := "--file " + file + " --attr x --argstr v 1 --arg w 2"
	code, stdout, stderr := run(t, "show", out, "--json")
	if code != cli.ExitOK || !strings.Contains(stdout, fmt.Sprintf("%q", spec)) {
		t.Errorf("show of the bundle: exit %d, stdout %s, stderr %s; want target %q", code, stdout, stderr, spec)
	}
	before := treeOf(t, dir)
	code, stderr = pack("--argstr", "v", "2", "--arg", "w", "2")
	if code != cli.ExitUsage || !strings.Contains(stderr, ": a finished bundle of other targets ("+spec+")") {
		t.Errorf("pack with another --argstr value: exit %d, stderr %q; want %d, refused naming %q", code, stderr, cli.ExitUsage, spec)
	}
	if diff := cmp.Diff(before, treeOf(t, dir)); diff != "" {
		t.Errorf("pack with another --argstr value changed the bundle (-before +after):\n%s", diff)
	}
	if code, stderr := pack("--arg", "w", "2", "--argstr", "v", "1"); code != cli.ExitOK {
		t.Errorf("the same pack with its arguments reordered: exit %d\n%s", code, stderr)
	}
}

// TestPackStorePathOfAnotherStore: a store path of another store dir is
// said to be one, naming both dirs, not taken for a path: flake.
func TestPackStorePathOfAnotherStore(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	n.Setenv(t)
	other := "/nix/store/0c7fa3z2z7pxq2yl5v0glm1b2w8c1y1d-foo"
	if string(n.StoreDir) == "/nix/store" {
		other = "/tmp/x/store/0c7fa3z2z7pxq2yl5v0glm1b2w8c1y1d-foo"
	}
	code, _, stderr := run(t, "pack", other, "--out", filepath.Join(t.TempDir(), "b"), "--no-progress")
	want := fmt.Sprintf("a store path of the store %s, but this store's dir is %s", filepath.Dir(other), n.StoreDir)
	if code != cli.ExitUsage || !strings.Contains(stderr, want) {
		t.Errorf("pack %s: exit %d, stderr %q; want %d, %q", other, code, stderr, cli.ExitUsage, want)
	}
}

// TestPackOutSymlink: --out FILE.tar that is a symlink is written where
// it points, as tar writes, and the link stays; one whose target is
// missing gets its target made; one whose target's directory is missing
// (a medium not mounted) is refused and left as it is.
func TestPackOutSymlink(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	n.Setenv(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "hello.txt")
	os.WriteFile(file, []byte("hello\n"), 0o644)
	path := n.Run(t, "nix-store", "--add", file)
	os.Mkdir(filepath.Join(dir, "media"), 0o755)
	for _, tt := range []struct{ name, dest string }{
		{"a link to a bundle", filepath.Join(dir, "media", "live.tar")},
		{"a link to a missing file", "media/new.tar"},
	} {
		link := filepath.Join(dir, filepath.Base(tt.dest)+".link.tar")
		os.Symlink(tt.dest, link)
		for range 2 { // the first pack writes the bundle the second replaces
			if code, _, stderr := run(t, "pack", path, "--out", link, "--no-progress"); code != cli.ExitOK {
				t.Fatalf("pack --out %s: exit %d\n%s", tt.name, code, stderr)
			}
		}
		if got, err := os.Readlink(link); err != nil || got != tt.dest {
			t.Errorf("pack --out %s: the link is %q, %v; want it kept, to %s", tt.name, got, err, tt.dest)
		}
		if code, _, stderr := run(t, "verify", filepath.Join(dir, "media", filepath.Base(tt.dest)), "--allow-unsigned"); code != cli.ExitOK {
			t.Errorf("verify of what pack --out %s wrote: exit %d\n%s", tt.name, code, stderr)
		}
	}
	for _, tt := range []struct{ name, dest, want string }{
		{"a link into a missing directory", filepath.Join(dir, "unmounted", "b.tar"), "which does not resolve (no such file or directory): no place to write a bundle; give the file to write"},
		{"a link to a directory's name", filepath.Join(dir, "media"), "not to a FILE.tar: no place to write a bundle; give the file to write"},
	} {
		link := filepath.Join(dir, "other.tar")
		os.Remove(link)
		os.Symlink(tt.dest, link)
		before := treeOf(t, dir)
		code, _, stderr := run(t, "pack", path, "--out", link, "--no-progress")
		if want := "nix-airgap: pack: --out " + link + ": a symlink to " + tt.dest; code != cli.ExitUsage || !strings.HasPrefix(stderr, want) || !strings.Contains(stderr, tt.want) {
			t.Errorf("pack --out %s: exit %d, stderr %q; want %d, %q … %q", tt.name, code, stderr, cli.ExitUsage, want, tt.want)
		}
		if diff := cmp.Diff(before, treeOf(t, dir)); diff != "" {
			t.Errorf("pack --out %s changed it (-before +after):\n%s", tt.name, diff)
		}
	}
}

// TestPackOutSameTextOtherFlake: .#x or --file default.nix run in another
// directory is another target: a bundle of the first is refused, and the
// manifest names the flake's directory or the file's path.
func TestPackOutSameTextOtherFlake(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	n.Setenv(t)
	system := n.Run(t, "nix", "--extra-experimental-features", "nix-command", "eval", "--impure", "--raw", "--expr", "builtins.currentSystem")
	dir := t.TempDir()
	dirs := []string{filepath.Join(dir, "one"), filepath.Join(dir, "two")}
	for _, d := range dirs {
		os.Mkdir(d, 0o755)
		drv := `derivation { name = "outflake-` + filepath.Base(d) + `"; system = "` + system + `"; builder = "/bin/busybox"; args = [ "sh" "-c" "echo > $out" ]; }`
		os.WriteFile(filepath.Join(d, "flake.nix"), []byte("{ outputs = { self }: { packages."+system+".x = "+drv+"; }; }\n"), 0o644)
		os.WriteFile(filepath.Join(d, "default.nix"), []byte("{ x = "+drv+"; }\n"), 0o644)
	}
	for i, tt := range []struct {
		target []string
		spec   string // of the bundle packed in dirs[0]
	}{
		{[]string{".#x"}, dirs[0] + "#x"},
		{[]string{"--file", "default.nix", "-A", "x"}, "--file " + filepath.Join(dirs[0], "default.nix") + " --attr x"},
	} {
		out := filepath.Join(dir, fmt.Sprint("bundle", i))
		pack := func(d string) (int, string) {
			t.Helper()
			t.Chdir(d)
			code, _, stderr := run(t, append([]string{"pack", "--mode", "runtime", "--no-progress", "--out", out}, tt.target...)...)
			return code, stderr
		}
		if code, stderr := pack(dirs[0]); code != cli.ExitOK {
			t.Fatalf("pack %q in %s: exit %d\n%s", tt.target, dirs[0], code, stderr)
		}
		before := treeOf(t, out)
		if code, stderr := pack(dirs[1]); code != cli.ExitUsage || !strings.Contains(stderr, ": a finished bundle of other targets ("+tt.spec+")") {
			t.Errorf("pack %q in another directory: exit %d, stderr %q; want %d, refused naming %s", tt.target, code, stderr, cli.ExitUsage, tt.spec)
		}
		if diff := cmp.Diff(before, treeOf(t, out)); diff != "" {
			t.Errorf("pack %q in another directory changed the bundle (-before +after):\n%s", tt.target, diff)
		}
		if code, stderr := pack(dirs[0]); code != cli.ExitOK {
			t.Errorf("pack %q again in %s: exit %d\n%s", tt.target, dirs[0], code, stderr)
		}
	}
}
