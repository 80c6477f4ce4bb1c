package cli_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
// it would not write as named (a compressed tar) and a tar stream to a
// terminal, as tar does.
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
	var stderr bytes.Buffer
	err := cli.Run(t.Context(), append([]string{"pack", "--out", "-"}, target...), openPTY(t), &stderr)
	if cli.ExitCode(err) != cli.ExitUsage || !strings.Contains(stderr.String(), "refusing to write a tar stream to a terminal") {
		t.Errorf("pack --out - to a terminal: exit %d, stderr %q; want %d, refused", cli.ExitCode(err), stderr.String(), cli.ExitUsage)
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
	for _, tt := range []struct{ out, want string }{
		{file, "write bundle " + file + ": a file, not a directory"},
		{cacheDir, "this is a long-lived cache (it has nix-airgap/), not a bundle"},
		{other, "directory is not empty and not a bundle"},
	} {
		code, stdout, stderr := run(t, "pack", "--file", filepath.Join(dir, "nowhere.nix"), "--attr", "a", "--out", tt.out)
		if code != cli.ExitUsage || stdout != "" || !strings.HasPrefix(stderr, "nix-airgap: pack: write bundle "+tt.out+": ") || !strings.Contains(stderr, tt.want) {
			t.Errorf("pack --out %s: exit %d, stderr %q; want %d and %q, before the target is evaluated", tt.out, code, stderr, cli.ExitUsage, tt.want)
		}
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

// TestPackDiskFull: a pack or import that fills its disk fails as pack
// or import, saying so first, as every command's error does ("op subject:
// problem"), then that the disk is full; it names the files the user
// knows (the bundle, the cache's file), not temp files in a staging
// directory.
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
	for _, tt := range []struct {
		args       []string
		prefix, in string
	}{
		{[]string{"pack", "--file", w.File, "--attr", "toplevel", "--secret-key", keyFile, "--out", filepath.Join(full, "b")}, "nix-airgap: pack: ", "write " + filepath.Join(full, "b") + ": "},
		{[]string{"pack", "--file", w.File, "--attr", "toplevel", "--secret-key", keyFile, "--out", filepath.Join(full, "b.tar")}, "nix-airgap: pack: ", "write " + filepath.Join(full, "b.tar") + ": "},
		{[]string{"import", bundle, "--cache", filepath.Join(full, "cache"), "--public-key", pubFile}, "nix-airgap: import " + bundle + ": ", "write " + filepath.Join(full, "cache", "nar") + "/"},
	} {
		code, _, stderr := run(t, append(tt.args, "--no-progress")...)
		if code != cli.ExitFailure || !strings.HasPrefix(stderr, tt.prefix) || !strings.Contains(stderr, tt.in) ||
			!strings.Contains(stderr, "no space left on device\nThe disk is full (ENOSPC)") || strings.Contains(stderr, "tmp-") || strings.Contains(stderr, ".staging-") {
			t.Errorf("%s onto a full disk: exit %d, stderr %q; want %d, %q naming %q and that the disk is full", tt.args[0], code, stderr, cli.ExitFailure, tt.prefix, tt.in)
		}
		os.RemoveAll(filepath.Join(full, "b"))
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
