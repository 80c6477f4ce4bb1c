package cache

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestGroupCommit(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	d.GroupCommit = true
	ni := addTestNAR(t, d, "a", "first", "zstd")
	if err := d.PutNarInfo(t.Context(), ni); err != nil {
		t.Fatal(err)
	}
	if _, err := d.NarInfo(ctx, ni.StorePath.Hash); !errors.Is(err, ErrNotFound) {
		t.Fatalf("narinfo before Sync: err = %v, want ErrNotFound", err)
	}
	if err := d.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := d.NarInfo(ctx, ni.StorePath.Hash); err != nil {
		t.Fatalf("narinfo after Sync: %v", err)
	}

	// Without a Sync, a batch is published a batchDelay after its first
	// narinfo.
	ni2 := addTestNAR(t, d, "b", "second", "zstd")
	if err := d.PutNarInfo(t.Context(), ni2); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(batchDelay + 5*time.Second)
	for {
		_, err := d.NarInfo(ctx, ni2.StorePath.Hash)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("narinfo not published %v after it was queued: %v", batchDelay+5*time.Second, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	want := []string{ni.StorePath.Hash + ".narinfo", ni2.StorePath.Hash + ".narinfo", ni.URL, ni2.URL, "nix-cache-info"}
	slices.Sort(want)
	if diff := cmp.Diff(want, files(t, d.String())); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
}

// With GroupCommit a file WriteFile writes (a bundle's manifest) waits
// for the batch as a narinfo does: it appears whole, once synced, in a
// new subdirectory too.
func TestGroupCommitWriteFile(t *testing.T) {
	ctx := t.Context()
	d := newDir(t)
	d.GroupCommit = true
	for _, name := range []string{"manifest.json", "log/x.drv"} {
		if err := d.WriteFile(ctx, name, []byte("{}\n")); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(d.String(), name)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s before Sync: %v, want none", name, err)
		}
		if err := d.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(filepath.Join(d.String(), name)); err != nil || string(got) != "{}\n" {
			t.Errorf("%s after Sync = %q, %v", name, got, err)
		}
	}
}

// A directory cache's Batched view publishes its narinfos in batches into
// the same directory, leaving nothing of its own behind once closed.
func TestBatched(t *testing.T) {
	ctx := t.Context()
	d := newDir(t)
	bc, err := d.Batched()
	if err != nil {
		t.Fatal(err)
	}
	ni := addTestNAR(t, bc, "a", "first", "zstd")
	if err := bc.PutNarInfo(ctx, ni); err != nil {
		t.Fatal(err)
	}
	if _, err := d.NarInfo(ctx, ni.StorePath.Hash); !errors.Is(err, ErrNotFound) {
		t.Fatalf("narinfo before Sync: err = %v, want ErrNotFound", err)
	}
	if err := bc.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := d.NarInfo(ctx, ni.StorePath.Hash); err != nil {
		t.Fatalf("narinfo after Sync: %v", err)
	}
	if err := bc.Close(); err != nil {
		t.Fatal(err)
	}
	want := []string{ni.StorePath.Hash + ".narinfo", ni.URL, "nix-cache-info"}
	slices.Sort(want)
	if diff := cmp.Diff(want, files(t, d.String())); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
}
