package storage_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storage/s3test"
	"github.com/nix-airgap/nix-airgap/internal/storage/storagetest"
)

// Every durability mode keeps the Backend contract; they differ only in
// what a crash may lose.
func TestDirConformance(t *testing.T) {
	for _, tc := range []struct {
		name            string
		noSync, scratch bool
	}{
		{"each write", false, false},
		{"NoSync", true, false},
		{"Scratch", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			storagetest.Run(t, func(t *testing.T) storage.Backend {
				d, err := storage.CreateDir(filepath.Join(t.TempDir(), "cache"))
				if err != nil {
					t.Fatal(err)
				}
				d.NoSync, d.Scratch = tc.noSync, tc.scratch
				return d
			})
		})
	}
}

// No name, symlink or temp file leads a Dir outside its directory, and
// temp files stay out of listings.
func TestDirStaysInside(t *testing.T) {
	top := t.TempDir()
	os.WriteFile(filepath.Join(top, "secret"), []byte("secret"), 0o600)
	dir := filepath.Join(top, "cache")
	d, err := storage.CreateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	os.Symlink("../secret", filepath.Join(dir, "escape.narinfo"))
	os.Symlink(filepath.Join(top, "secret"), filepath.Join(dir, "abs.narinfo"))
	os.WriteFile(filepath.Join(dir, ".tmp-123"), []byte("temp"), 0o644)
	ctx := context.Background()
	for _, name := range []string{"escape.narinfo", "abs.narinfo"} {
		if f, err := d.Open(ctx, name); err == nil {
			f.Close()
			t.Errorf("Open(%s) followed a symlink out of the directory", name)
		}
	}
	for info, err := range d.List(ctx, "") {
		if err == nil {
			t.Errorf("List yielded %+v", info)
		}
	}
}

// MkdirTemp removes the staging directories of dead makers, not of live
// ones.
func TestDirStaleStaging(t *testing.T) {
	dir := t.TempDir()
	d, err := storage.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	live, release, err := d.MkdirTemp()
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	dead := filepath.Join(dir, ".staging-0123456789abcdef")
	os.MkdirAll(filepath.Join(dead, "nar"), 0o755)
	os.WriteFile(filepath.Join(dead, "nar", "x"), []byte("x"), 0o644)
	_, release2, err := d.MkdirTemp()
	if err != nil {
		t.Fatal(err)
	}
	defer release2()
	if _, err := os.Stat(dead); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a dead staging directory is still there: %v", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("a live staging directory was removed: %v", err)
	}
}

// Staging directories made at once, as concurrent imports make them,
// survive one another's sweep of dead makers' directories.
func TestDirMkdirTempConcurrent(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			d, err := storage.OpenDir(dir)
			if err != nil {
				t.Error(err)
				return
			}
			defer d.Close()
			for range 50 {
				p, release, err := d.MkdirTemp()
				if err != nil {
					t.Error(err)
					return
				}
				if err := os.WriteFile(filepath.Join(p, "x"), []byte("x"), 0o644); err != nil {
					t.Errorf("a staging directory just made: %v", err)
				}
				release()
			}
		})
	}
	wg.Wait()
}

func TestDirNoSyncSync(t *testing.T) {
	d, err := storage.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.NoSync = true
	ctx := context.Background()
	if err := d.Put(ctx, "nar/a", strings.NewReader("a"), 1); err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if err := d.Sync(ctx); err != nil {
		t.Fatalf("Sync with nothing to do: %v", err)
	}
}

// SweepLeftovers removes exactly the temp files Puts left, in every
// directory, made before the time it is given; nothing that only looks
// like one, nothing in a staging directory, nothing through a symlink.
func TestDirSweepLeftovers(t *testing.T) {
	top := t.TempDir()
	dir := filepath.Join(top, "cache")
	d, err := storage.CreateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := t.Context()
	if err := d.Put(ctx, "nar/x.nar", strings.NewReader("nar"), 3); err != nil {
		t.Fatal(err)
	}
	live, release, err := d.MkdirTemp()
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	outside := filepath.Join(top, "outside")
	os.MkdirAll(outside, 0o755)
	os.WriteFile(filepath.Join(outside, ".tmp-0"), []byte("outside"), 0o644)
	later := time.Now().Add(time.Hour)

	for _, tc := range []struct {
		name   string
		make   func(p string) error
		sweeps bool
	}{
		{".tmp-1", file("narinfo"), true},
		{"nar/.tmp-2", file("nar file"), true},
		{"nix-airgap/bundles/.tmp-3", file("record"), true},
		{"nar/.tmp-new", func(p string) error {
			if err := file("written as gc started")(p); err != nil {
				return err
			}
			return os.Chtimes(p, later, later)
		}, false},
		{"x.narinfo", file("a narinfo"), false},
		{".lock", file(""), false},
		{".hidden", file("a dotfile"), false},
		{".x.narinfo.tmp-4", file("atomicfile.Create's"), false},
		{"x.narinfo.tmp.42", file("Nix's"), false},
		{".tmp-dir/f", file("in a directory named as a temp file"), false},
		{".staging-0123456789abcdef/.tmp-5", file("a dead staging directory's"), false},
		{filepath.Base(live) + "/.tmp-6", file("a live staging directory's"), false},
		{".tmp-link", func(p string) error { return os.Symlink(filepath.Join(outside, ".tmp-0"), p) }, false},
		{"linked", func(p string) error { return os.Symlink(outside, p) }, false}, // to outside/.tmp-0
	} {
		p := filepath.Join(dir, filepath.FromSlash(tc.name))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := tc.make(p); err != nil {
			t.Fatal(err)
		}
	}
	before := time.Now()
	want := storage.Leftovers{Files: 3, Bytes: int64(len("narinfo") + len("nar file") + len("record"))}
	listing := tree(t, top)
	if got, err := d.SweepLeftovers(ctx, before, true); err != nil || got != want {
		t.Errorf("dry run: %+v, %v; want %+v", got, err, want)
	}
	if after := tree(t, top); !slices.Equal(after, listing) {
		t.Errorf("a dry run changed the directory: %q, was %q", after, listing)
	}
	if got, err := d.SweepLeftovers(ctx, before, false); err != nil || got != want {
		t.Errorf("sweep: %+v, %v; want %+v", got, err, want)
	}
	gone := slices.DeleteFunc(listing, func(name string) bool {
		return slices.Contains([]string{"cache/.tmp-1", "cache/nar/.tmp-2", "cache/nix-airgap/bundles/.tmp-3"}, name)
	})
	if after := tree(t, top); !slices.Equal(after, gone) {
		t.Errorf("after the sweep: %q, want %q", after, gone)
	}
	if got, err := d.SweepLeftovers(ctx, before, false); err != nil || got != (storage.Leftovers{}) {
		t.Errorf("a second sweep: %+v, %v; want nothing", got, err)
	}
}

// file makes a function that writes data to a file.
func file(data string) func(p string) error {
	return func(p string) error { return os.WriteFile(p, []byte(data), 0o644) }
}

// tree lists every name under dir, without following symlinks.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(dir, p)
		names = append(names, filepath.ToSlash(rel))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// The lock file's record of its holder only tells those that wait: a
// stale one (a killed holder's) blocks nothing and names no one, and
// flock alone decides.
func TestDirLockStaleRecord(t *testing.T) {
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	b, err := storage.OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	host, _ := os.Hostname()
	stale := fmt.Sprintf(`{"holder":"pid %[1]d (nix-airgap gc)","command":"gc","pid":%[1]d,"host":%[2]q,"since":"2026-01-02T03:04:05Z","exclusive":true}`+"\n", gone.Process.Pid, host)
	lockFile := filepath.Join(root, ".lock")
	if err := os.WriteFile(lockFile, []byte(stale), 0o644); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	_, unlock, err := b.Lock(short, storage.LockOptions{Exclusive: true, Command: "gc"})
	if err != nil {
		t.Fatalf("Lock over a stale record: %v", err)
	}
	unlock()

	// Held, under a record naming a process that is gone: the waiter
	// is told of no one rather than of it.
	_, unlock, err = b.Lock(t.Context(), storage.LockOptions{Command: "import b.tar"})
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	os.WriteFile(lockFile, []byte(stale), 0o644)
	heard := []string{}
	short, cancel = context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, _, err := b.Lock(short, storage.LockOptions{Exclusive: true, Command: "gc", Waiting: func(h string) { heard = append(heard, h) }}); err == nil {
		t.Fatal("an exclusive lock while a shared one is held: no error")
	}
	if !slices.Equal(heard, []string{""}) {
		t.Errorf("the waiter heard %q of a holder that is gone, want \"\"", heard)
	}
	if got := storage.WaitingFor("", b); got != "waiting for another process to release the lock on "+root {
		t.Errorf("WaitingFor of no one known: %q", got)
	}
}

// Exists says whether a file is there, and a store that cannot say gives
// its error rather than either answer.
func TestExists(t *testing.T) {
	b, err := storage.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Put(t.Context(), "there", strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"there": true, "missing": false, "nar/missing": false} {
		if got, err := storage.Exists(t.Context(), b, name); got != want || err != nil {
			t.Errorf("Exists(%q) = %v, %v; want %v, nil", name, got, err, want)
		}
	}
	down, err := storage.Open(t.Context(), "s3://cache?endpoint="+s3test.RefusedAddr(t)+"&scheme=http")
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	if got, err := storage.Exists(t.Context(), down, "there"); got || !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("Exists with the store down = %v, %v; want false and ErrUnavailable", got, err)
	}
}
