package atomicfile

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestRoot(t *testing.T) {
	dir := t.TempDir()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	for _, durable := range []bool{true, false} {
		f, tmp, err := CreateTemp(root, ".")
		if err != nil {
			t.Fatal(err)
		}
		f.Write([]byte("one"))
		if err := Publish(root, f, tmp, "a", durable); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := os.ReadFile(filepath.Join(dir, "a")); err != nil || string(got) != "one" {
		t.Errorf("a = %q, %v", got, err)
	}

	// Written and sealed now, moved into a new directory later.
	f, tmp, err := CreateTemp(root, ".")
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("two"))
	if err := Seal(f); err != nil {
		t.Fatal(err)
	}
	dirs, err := Move(root, tmp, "sub/deeper/b")
	if err != nil {
		t.Fatal(err)
	}
	// The new directories' parents, then b's own.
	if want := []string{"sub", ".", "sub/deeper"}; !slices.Equal(dirs, want) {
		t.Errorf("Move into new directories: sync %q, want %q", dirs, want)
	}
	for _, d := range dirs {
		if err := SyncDirIn(root, d); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := os.ReadFile(filepath.Join(dir, "sub", "deeper", "b")); err != nil || string(got) != "two" {
		t.Errorf("sub/deeper/b = %q, %v", got, err)
	}
	assertOnly(t, dir, "a", "sub")

	// No name leads outside the root, and a refused one leaves nothing.
	if _, _, err := CreateTemp(root, ".."); err == nil {
		t.Error("CreateTemp in .. succeeded")
	}
	f, tmp, err = CreateTemp(root, ".")
	if err != nil {
		t.Fatal(err)
	}
	if err := Publish(root, f, tmp, "../escaped", true); err == nil {
		t.Error("Publish to ../escaped succeeded")
	}
	assertOnly(t, dir, "a", "sub")
}

// TestSweepIn: inside a root, a killed maker's directory goes with what
// is in it, a live one stays, and a symlink named like them is left,
// with what it leads to outside the root.
func TestSweepIn(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	live, lock, err := MkdirTempIn(root, "s-")
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if lock.Name() != filepath.Join(dir, live) {
		t.Errorf("MkdirTempIn's lock is named %s, want %s", lock.Name(), filepath.Join(dir, live))
	}
	os.MkdirAll(filepath.Join(dir, "s-dead", "nar"), 0o755)
	os.WriteFile(filepath.Join(dir, "s-dead", "nar", "x"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(outside, "x"), []byte("x"), 0o644)
	if err := os.Symlink(outside, filepath.Join(dir, "s-link")); err != nil {
		t.Fatal(err)
	}
	if kept := SweepIn(root, "s-", nil); kept != nil {
		t.Errorf("SweepIn without resumable kept %s", kept.Name())
	}
	assertOnly(t, dir, live, "s-link")
	if _, err := os.Stat(filepath.Join(outside, "x")); err != nil {
		t.Errorf("outside the root: %v", err)
	}
}
