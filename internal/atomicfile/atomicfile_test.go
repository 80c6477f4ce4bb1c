package atomicfile

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "key.sec")
	if err := WriteFile(name, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(name)
	if err != nil || string(got) != "secret" {
		t.Fatalf("ReadFile = %q, %v", got, err)
	}
	fi, _ := os.Stat(name)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
	}
	assertOnly(t, dir, "key.sec")
}

// TestCommitNew: CommitNew publishes a file whose name is free, and leaves
// one that appeared while it was being written, the race a check before
// writing loses.
func TestCommitNew(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "key.sec")
	f, err := Create(name, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("mine")
	if err := os.WriteFile(name, []byte("theirs"), 0o600); err != nil { // another process, meanwhile
		t.Fatal(err)
	}
	if err := f.CommitNew(); !errors.Is(err, fs.ErrExist) {
		t.Errorf("CommitNew over a file made meanwhile = %v, want fs.ErrExist", err)
	}
	if got, _ := os.ReadFile(name); string(got) != "theirs" {
		t.Errorf("CommitNew replaced the file made meanwhile: %q", got)
	}
	assertOnly(t, dir, "key.sec")

	other := filepath.Join(dir, "key.pub")
	f, err = Create(other, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("new")
	if err := f.CommitNew(); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(other); string(got) != "new" {
		t.Errorf("CommitNew wrote %q, want new", got)
	}
	assertOnly(t, dir, "key.pub", "key.sec")
}

func TestAbortLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "x")
	if err := os.WriteFile(name, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Create(name, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("half"))
	f.Abort()
	got, _ := os.ReadFile(name)
	if string(got) != "old" {
		t.Errorf("after Abort, file = %q, want the old content", got)
	}
	assertOnly(t, dir, "x")
	if err := f.Commit(); err == nil {
		t.Error("Commit after Abort succeeded")
	}
}

func assertOnly(t *testing.T, dir string, want ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, want) {
		t.Errorf("dir holds %v, want only %v", names, want)
	}
}

// TestCreateRemovesStale: a temp file no writer holds (a killed writer's)
// goes when the name is next created; one being written stays.
func TestCreateRemovesStale(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "b.tar")
	stale := filepath.Join(dir, ".b.tar.tmp-123")
	other := filepath.Join(dir, ".c.tar.tmp-123")
	for _, p := range []string{stale, other} {
		if err := os.WriteFile(p, []byte("left by a killed pack"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	live, err := Create(name, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Abort()
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale temp file still there: %v", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("another name's temp file was removed: %v", err)
	}
	second, err := Create(name, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Abort()
	if _, err := os.Stat(live.File.Name()); err != nil {
		t.Errorf("a temp file being written was removed: %v", err)
	}
}

// TestResume: Resume reopens the newest temp file a killed writer left,
// removes the older and empty ones, leaves a live writer's alone, and
// creates a new one when there is none to reopen.
func TestResume(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "b.tar")
	old := time.Now().Add(-time.Hour)
	for _, tf := range []struct {
		name, data string
		mtime      time.Time
	}{
		{".b.tar.tmp-old", "older", old},
		{".b.tar.tmp-new", "newest", old.Add(time.Minute)},
		{".b.tar.tmp-empty", "", old.Add(2 * time.Minute)},
		{".c.tar.tmp-1", "another name's", old},
	} {
		p := filepath.Join(dir, tf.name)
		if err := os.WriteFile(p, []byte(tf.data), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, tf.mtime, tf.mtime); err != nil {
			t.Fatal(err)
		}
	}
	f, resumed, err := Resume(name, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if !resumed || filepath.Base(f.File.Name()) != ".b.tar.tmp-new" {
		t.Fatalf("Resume = %s, resumed %v; want .b.tar.tmp-new, resumed", f.File.Name(), resumed)
	}
	assertOnly(t, dir, ".b.tar.tmp-new", ".c.tar.tmp-1")
	got, err := io.ReadAll(f)
	if err != nil || string(got) != "newest" {
		t.Fatalf("read the resumed file: %q, %v", got, err)
	}
	if _, err := f.Write([]byte(" and more")); err != nil {
		t.Fatal(err)
	}

	// Held by f: a second writer starts afresh beside it.
	second, resumed, err := Resume(name, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if resumed {
		t.Errorf("a second Resume reopened %s, which the first holds", second.File.Name())
	}
	second.Abort()

	// Kept, it is resumed again; committed, it is the file.
	f.Keep()
	f, resumed, err = Resume(name, 0o644)
	if err != nil || !resumed {
		t.Fatalf("Resume after Keep = %v, %v; want the kept file", resumed, err)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(name); string(got) != "newest and more" {
		t.Errorf("committed file = %q", got)
	}
	assertOnly(t, dir, ".c.tar.tmp-1", "b.tar")

	f, resumed, err = Resume(name, 0o644)
	if err != nil || resumed {
		t.Fatalf("Resume with no temp file = %v, %v; want a new one", resumed, err)
	}
	f.Abort()
}

// TestSweep: what no one holds goes, files and directories alike, old
// or new (a maker that had not locked its new one yet makes another);
// with resumable, the newest it accepts is kept, locked. Held ones and
// other names stay.
func TestSweep(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-time.Hour)
	put := func(name, data string, mtime time.Time) string {
		t.Helper()
		p := filepath.Join(dir, name)
		var err error
		if data == "/" {
			err = os.Mkdir(p, 0o755)
		} else {
			err = os.WriteFile(p, []byte(data), 0o644)
		}
		if err == nil {
			err = os.Chtimes(p, mtime, mtime)
		}
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	put("s-file", "x", time.Now())
	put("s-empty", "", old)
	put("s-dir", "/", time.Now())
	held := put("s-held", "x", old)
	put("t-other", "x", old)
	lock, err := Lock(held, os.O_RDONLY, syscall.LOCK_EX)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if kept := Sweep(dir, "s-", nil); kept != nil {
		t.Errorf("Sweep without resumable kept %s", kept.Name())
	}
	assertOnly(t, dir, "s-held", "t-other")

	put("s-older", "x", old)
	put("s-newer", "x", old.Add(time.Second))
	put("s-empty", "", old.Add(time.Minute))
	kept := Sweep(dir, "s-", nonEmpty)
	if kept == nil || filepath.Base(kept.Name()) != "s-newer" {
		t.Fatalf("Sweep kept %v, want s-newer", kept)
	}
	defer kept.Close()
	assertOnly(t, dir, "s-held", "s-newer", "t-other")
	if again := Sweep(dir, "s-", nonEmpty); again != nil {
		t.Errorf("Sweep kept %s, which another holds", again.Name())
	}
}

// TestWriteFileConcurrent: writers of one name do not take each other's
// temp files for killed writers' (each Create sweeps them), neither one
// just made nor one being committed.
func TestWriteFileConcurrent(t *testing.T) {
	name := filepath.Join(t.TempDir(), "x")
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 8 {
		wg.Go(func() {
			for range 50 {
				if err := WriteFile(name, []byte("data"), 0o644); err != nil && failed.Add(1) == 1 {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of 400 writes failed", n)
	}
	assertOnly(t, filepath.Dir(name), "x")
}

// TestMkdirAll: it says the topmost directory it made, which a caller
// that made a directory only to hold something removes again.
func TestMkdirAll(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a", "b", "c")
	if made, err := MkdirAll(p); err != nil || made != filepath.Join(dir, "a") {
		t.Errorf("MkdirAll(%s) = %q, %v; want %s made", p, made, err, filepath.Join(dir, "a"))
	}
	if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
		t.Errorf("MkdirAll made no %s: %v", p, err)
	}
	if made, err := MkdirAll(p); err != nil || made != "" {
		t.Errorf("MkdirAll(%s) again = %q, %v; want nothing made", p, made, err)
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	if _, err := MkdirAll(filepath.Join(file, "x")); err == nil {
		t.Errorf("MkdirAll under a file succeeded")
	}
}

// TestCreateMissingDir: a file in a directory that does not exist is
// refused naming the file and the directory, as fs.ErrNotExist.
func TestCreateMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nodir")
	name := filepath.Join(dir, "inventory.json")
	_, err := Create(name, 0o644)
	want := "create " + name + ": directory " + dir + ": no such file or directory"
	if !errors.Is(err, fs.ErrNotExist) || err.Error() != want {
		t.Errorf("Create in a missing directory: %v, want %q", err, want)
	}
}
