package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/cli"
)

// snapshot maps every file under dir but the lock to its content.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == ".lock" {
			return err
		}
		data, err := os.ReadFile(p)
		files[p] = string(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestGCRootsNoneInCache: gc --roots with a roots file that lists no
// store path, or only paths the cache does not have, would remove
// everything; it refuses, saying so, and the cache stays as it was. A
// line that is not a store path is refused too, as bad input (exit 2),
// naming the line.
func TestGCRootsNoneInCache(t *testing.T) {
	dir, _, pub := writeBundle(t, "0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello")
	cacheDir := filepath.Join(t.TempDir(), "cache")
	if code, stdout, stderr := run(t, "import", dir, "--cache", cacheDir, "--public-key", pub, "--no-progress"); code != cli.ExitOK {
		t.Fatalf("import: exit %d\n%s%s", code, stdout, stderr)
	}
	before := snapshot(t, cacheDir)
	roots := func(content string) string {
		f := filepath.Join(t.TempDir(), "roots")
		os.WriteFile(f, []byte(content), 0o644)
		return f
	}
	badLine := roots("/nix/store/0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello\nhello\n")
	for _, tt := range []struct {
		name, roots string
		code        int
		want        string
	}{
		{"empty", roots(""), cli.ExitUsage, "lists no store path: gc would remove everything in the cache"},
		{"comments only", roots("# nothing\n\n"), cli.ExitUsage, "lists no store path"},
		{"a bad line", badLine, cli.ExitUsage, "--roots " + badLine + ": line 2: "},
		{"not in the cache", roots("/nix/store/1a7bjbqy2xhvqzk0h7q4wn8xg0mjrw9m-other\n"), cli.ExitMissing,
			"no root path in the cache: none of the 1 root path given is there: gc would remove everything (1 store path)"},
	} {
		for _, dry := range []bool{false, true} {
			args := []string{"gc", "--cache", cacheDir, "--roots", tt.roots, "--grace", "0s"}
			if dry {
				args = append(args, "--dry-run")
			}
			code, stdout, stderr := run(t, args...)
			if code != tt.code || !strings.Contains(stderr, tt.want) || strings.Count(stderr, "nix-airgap:") != 1 {
				t.Errorf("gc --roots, %s (dry run %v): exit %d, want %d and one error saying %q:\n%s%s", tt.name, dry, code, tt.code, tt.want, stdout, stderr)
			}
			if after := snapshot(t, cacheDir); len(after) != len(before) {
				t.Fatalf("gc --roots, %s, changed the cache: %d files, had %d", tt.name, len(after), len(before))
			}
		}
	}
}

// readOnly makes dir read-only for this process: a read-only bind mount
// when it runs as root (whom modes do not stop), or else modes; it
// skips t when neither works.
func readOnly(t *testing.T, dir string) {
	t.Helper()
	if os.Geteuid() != 0 {
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(p, 0o555)
			}
			return err
		})
		t.Cleanup(func() {
			filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					os.Chmod(p, 0o755)
				}
				return err
			})
		})
		return
	}
	if err := syscall.Mount(dir, dir, "", syscall.MS_BIND, ""); err != nil {
		t.Skipf("cannot make %s read-only: bind mount: %v", dir, err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	if err := syscall.Mount("", dir, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, ""); err != nil {
		t.Skipf("cannot make %s read-only: remount: %v", dir, err)
	}
}

// TestGCDryRunReadOnly: gc --dry-run only reads, so it works on a cache
// it may not write (a read-only mount of a backup, say), with or without
// a lock file there; gc itself is refused, naming the lock file.
func TestGCDryRunReadOnly(t *testing.T) {
	dir, _, pub := writeBundle(t, "0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello")
	for _, withLock := range []bool{true, false} {
		cacheDir := filepath.Join(t.TempDir(), "cache")
		if code, stdout, stderr := run(t, "import", dir, "--cache", cacheDir, "--public-key", pub, "--no-progress"); code != cli.ExitOK {
			t.Fatalf("import: exit %d\n%s%s", code, stdout, stderr)
		}
		if !withLock {
			os.Remove(filepath.Join(cacheDir, ".lock"))
		}
		readOnly(t, cacheDir)
		before := snapshot(t, cacheDir)
		code, stdout, stderr := run(t, "gc", "--cache", cacheDir, "--keep-bundles", "1", "--dry-run", "--no-progress")
		if code != cli.ExitOK || !strings.Contains(stdout, "would remove 0 store paths") {
			t.Errorf("gc --dry-run of a read-only cache (lock file %v): exit %d, want 0\n%s%s", withLock, code, stdout, stderr)
		}
		code, stdout, stderr = run(t, "gc", "--cache", cacheDir, "--keep-bundles", "1", "--no-progress")
		if code != cli.ExitFailure || !strings.Contains(stderr, "lock "+filepath.Join(cacheDir, ".lock")+": ") {
			t.Errorf("gc of a read-only cache (lock file %v): exit %d, want %d and the lock file named\n%s%s", withLock, code, cli.ExitFailure, stdout, stderr)
		}
		if after := snapshot(t, cacheDir); len(after) != len(before) {
			t.Errorf("gc changed a read-only cache")
		}
	}
}

// TestShowCacheAfterGC: show and diff of a cache say what it holds, not
// everything the records of the bundles imported list: gc --roots keeps
// a record while any of its paths is left.
func TestShowCacheAfterGC(t *testing.T) {
	dir, paths, pubFile := writeBundleOf(t, []string{"0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello-1.0", "1a7bjbqy2xhvqzk0h7q4wn8xg0mjrw9m-other-2.0"})
	cacheDir := filepath.Join(t.TempDir(), "cache")
	if code, stdout, stderr := run(t, "import", dir, "--cache", cacheDir, "--public-key", pubFile, "--no-progress"); code != cli.ExitOK {
		t.Fatalf("import: exit %d\n%s%s", code, stdout, stderr)
	}
	roots := filepath.Join(t.TempDir(), "roots")
	os.WriteFile(roots, []byte(paths[0].String()+"\n"), 0o644)
	if code, stdout, stderr := run(t, "gc", "--cache", cacheDir, "--roots", roots, "--grace", "0s", "--no-progress"); code != cli.ExitOK || !strings.Contains(stdout, "removed 1 store path") {
		t.Fatalf("gc --roots: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr := run(t, "show", cacheDir, "--json")
	var inv struct {
		Packages []struct{ Name string }
		Totals   struct{ Paths int }
	}
	if err := json.Unmarshal([]byte(stdout), &inv); code != cli.ExitOK || err != nil {
		t.Fatalf("show: exit %d, %v\n%s%s", code, err, stdout, stderr)
	}
	if len(inv.Packages) != 1 || inv.Packages[0].Name != "hello" || inv.Totals.Paths != 1 {
		t.Errorf("show of the cache after gc: packages %+v, %d paths; want hello alone", inv.Packages, inv.Totals.Paths)
	}
	code, stdout, stderr = run(t, "diff", dir, cacheDir)
	if code != cli.ExitOK || !strings.Contains(stdout, "other: 2.0 → ∅") {
		t.Errorf("diff of the bundle and the cache after gc: exit %d, want other removed\n%s%s", code, stdout, stderr)
	}
}

// TestGCInterruptedWaiting: gc interrupted while it waits for an
// import's lock exits 130 saying it was interrupted, not in Go's words.
func TestGCInterruptedWaiting(t *testing.T) {
	dir, _, pub := writeBundle(t, "0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello")
	cacheDir := filepath.Join(t.TempDir(), "cache")
	if code, stdout, stderr := run(t, "import", dir, "--cache", cacheDir, "--public-key", pub, "--no-progress"); code != cli.ExitOK {
		t.Fatalf("import: exit %d\n%s%s", code, stdout, stderr)
	}
	lock, err := os.OpenFile(filepath.Join(cacheDir, ".lock"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_SH); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context()) // as SIGINT does
	defer cancel()
	time.AfterFunc(300*time.Millisecond, cancel)
	var stdout, stderr bytes.Buffer
	err = cli.Run(ctx, []string{"gc", "--cache", cacheDir, "--keep-bundles", "1", "--no-progress"}, &stdout, &stderr)
	if code := cli.ExitCode(err); code != cli.ExitInterrupted || !strings.HasSuffix(stderr.String(), "waiting for another process to release the lock on "+cacheDir+"\nnix-airgap: gc: interrupted\n") {
		t.Errorf("gc interrupted waiting for the lock: exit %d, want %d, and stderr saying it was interrupted:\n%s", code, cli.ExitInterrupted, stderr.String())
	}
}

// TestGCNotACache: gc --keep-bundles of a bundle, or of a binary cache
// no bundle was imported into, has nothing to keep and would empty it;
// it refuses, saying why, and leaves it as it was (no lock file in a
// bundle either).
func TestGCNotACache(t *testing.T) {
	bundleDir, pub := smallBundle(t)
	cacheDir := filepath.Join(t.TempDir(), "cache")
	if code, stdout, stderr := run(t, "import", bundleDir, "--cache", cacheDir, "--public-key", pub, "--no-progress"); code != cli.ExitOK {
		t.Fatalf("import: exit %d\n%s%s", code, stdout, stderr)
	}
	if err := os.RemoveAll(filepath.Join(cacheDir, "nix-airgap")); err != nil { // a plain binary cache
		t.Fatal(err)
	}
	for _, tt := range []struct {
		dir, want string
		code      int
	}{
		// Not a cache at all, as every command says it.
		{bundleDir, "gc " + bundleDir + ": not a cache: a bundle (it has manifest.json); give the cache import made", cli.ExitCorrupt},
		{cacheDir, "no bundle was imported into it (nix-airgap/bundles has no records), so --keep-bundles would remove everything (1 store path); give --roots FILE", cli.ExitMissing},
	} {
		before, _ := os.ReadDir(tt.dir)
		for _, dry := range []string{"--dry-run=true", "--dry-run=false"} {
			code, stdout, stderr := run(t, "gc", "--cache", tt.dir, "--keep-bundles", "1", dry, "--no-progress")
			if code != tt.code || !strings.Contains(stderr, tt.want) || strings.Count(stderr, "nix-airgap:") != 1 {
				t.Errorf("gc --cache %s %s: exit %d, want %d and one error saying %q:\n%s%s", tt.dir, dry, code, tt.code, tt.want, stdout, stderr)
			}
		}
		after, _ := os.ReadDir(tt.dir)
		if tt.dir == bundleDir && len(after) != len(before) {
			t.Errorf("gc of a bundle changed it: %d entries, had %d", len(after), len(before))
		}
	}
	if code, stdout, stderr := run(t, "verify", bundleDir, "--public-key", pub, "--no-progress"); code != cli.ExitOK {
		t.Errorf("verify of the bundle after gc refused it: exit %d\n%s%s", code, stdout, stderr)
	}
}
