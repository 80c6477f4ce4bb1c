package storage_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/storage"
)

// A file spooled into a directory lands with the mode the umask gives a
// new file, as Nix's binary cache files do, not os.CreateTemp's 0600: a
// bundle or cache only its writer could read would not serve.
func TestSpoolCommitMode(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	top := filepath.Join(t.TempDir(), "cache")
	d, err := storage.CreateDir(top)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := storage.NewSpool(d, "")
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	for _, tc := range []struct {
		name   string
		create func() (*storage.SpoolFile, error)
	}{
		{"nar/a.nar.zst", sp.CreateTemp},
		{"b.narinfo", func() (*storage.SpoolFile, error) { return sp.Create("b.narinfo") }},
	} {
		f, err := tc.create()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte("data")); err != nil {
			t.Fatal(err)
		}
		p := f.Name()
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if err := sp.Commit(context.Background(), p, tc.name); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(filepath.Join(top, filepath.FromSlash(tc.name)))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := fi.Mode().Perm(), fs.FileMode(0o644); got != want {
			t.Errorf("%s: mode %v, want %v", tc.name, got, want)
		}
	}
}
