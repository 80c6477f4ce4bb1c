package storage_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/storage"
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
