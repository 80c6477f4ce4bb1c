package atomicfile

import (
	"os"
	"path/filepath"
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
	if err := Move(root, tmp, "sub/b"); err != nil {
		t.Fatal(err)
	}
	if err := SyncDirIn(root, "sub"); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "sub", "b")); err != nil || string(got) != "two" {
		t.Errorf("sub/b = %q, %v", got, err)
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
