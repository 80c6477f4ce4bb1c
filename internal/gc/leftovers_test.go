package gc_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/gc"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storage"
)

// TestLeftovers: gc removes the temp files killed writers left in the
// cache's directories, and counts them with their bytes; a dry run only
// counts them. What merely looks like one stays: other dotfiles, the
// lock, a live import's staging directory and what is in it.
func TestLeftovers(t *testing.T) {
	ctx := t.Context()
	sk, pk, _ := signing.Generate("gc-leftovers-1")
	keys := signing.NewKeyring(pk)
	b := channelBundle(t, sk, "only", time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC), nil)
	cacheDir := filepath.Join(t.TempDir(), "cache")
	if _, err := bundle.Import(ctx, b, cacheDir, bundle.ImportOptions{Keys: keys}); err != nil {
		t.Fatal(err)
	}
	d, err := storage.OpenDir(cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	staging, release, err := d.MkdirTemp()
	if err != nil {
		t.Fatal(err)
	}
	defer release()

	for _, tc := range []struct {
		name, data string
		goes       bool
	}{
		{".tmp-0123456789abcdef", "a narinfo, half written", true},
		{"nar/.tmp-0123456789abcdef", "a NAR file, half written", true},
		{"nix-airgap/bundles/.tmp-0123456789abcdef", "a record", true},
		{".hidden", "a dotfile", false},
		{".lock.tmp-1", "a dotfile", false},
		{filepath.Join(filepath.Base(staging), ".tmp-0123456789abcdef"), "an import's", false},
	} {
		p := filepath.Join(cacheDir, filepath.FromSlash(tc.name))
		if err := os.WriteFile(p, []byte(tc.data), 0o644); err != nil {
			t.Fatal(err)
		}
		defer func() {
			_, err := os.Stat(p)
			if gone := os.IsNotExist(err); gone != tc.goes {
				t.Errorf("%s gone: %v, want %v", tc.name, gone, tc.goes)
			}
		}()
	}
	want := gc.Removed{TempFiles: 3, TempBytes: int64(len("a narinfo, half written") + len("a NAR file, half written") + len("a record"))}
	want.Bytes = want.TempBytes
	for _, dry := range []bool{true, false} {
		rep, err := gc.Collect(ctx, cacheDir, gc.Options{Roots: gc.Roots{KeepBundles: 1}, Grace: -1, DryRun: dry})
		if err != nil {
			t.Fatalf("gc (dry run %v): %v", dry, err)
		}
		if got := rep.Removed; got.TempFiles != want.TempFiles || got.TempBytes != want.TempBytes || got.Count != want.Count {
			t.Errorf("gc (dry run %v) removed %+v; want %+v", dry, got, want)
		}
		if _, err := os.Stat(filepath.Join(cacheDir, ".tmp-0123456789abcdef")); os.IsNotExist(err) == dry {
			t.Errorf("gc (dry run %v): the temp file at the top: %v", dry, err)
		}
	}
	if _, err := os.Stat(filepath.Join(cacheDir, ".lock")); err != nil {
		t.Errorf("the lock: %v", err)
	}
	if _, err := bundle.Verify(ctx, cacheDir, bundle.VerifyOptions{Keys: keys}); err != nil {
		t.Errorf("verify the collected cache: %v", err)
	}
}
