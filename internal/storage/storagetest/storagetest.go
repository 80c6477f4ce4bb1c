// Package storagetest is the conformance suite every storage.Backend
// passes: the directory backend and the S3 one run the same tests, so
// that what caches build on (atomic puts, ranged reads, ordered listings,
// idempotent removal, compare and swap) means the same on both.
package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/storage"
)

// Run runs the suite. open returns a new, empty backend for each test;
// the test closes it.
func Run(t *testing.T, open func(t *testing.T) storage.Backend) {
	tests := []struct {
		name string
		f    func(t *testing.T, b storage.Backend)
	}{
		{"RoundTrip", testRoundTrip},
		{"Missing", testMissing},
		{"Replace", testReplace},
		{"Seek", testSeek},
		{"ShortReader", testShortReader},
		{"FailingReader", testFailingReader},
		{"Cancelled", testCancelled},
		{"List", testList},
		{"Names", testNames},
		{"DirectoryIsNoFile", testDirectoryIsNoFile},
		{"Remove", testRemove},
		{"ConcurrentPuts", testConcurrentPuts},
		{"Swap", testSwap},
		{"Mover", testMover},
		{"Locker", testLocker},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := open(t)
			t.Cleanup(func() { b.Close() })
			tt.f(t, b)
		})
	}
}

func put(t *testing.T, b storage.Backend, name string, data []byte) {
	t.Helper()
	if err := b.Put(t.Context(), name, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("Put %s: %v", name, err)
	}
}

func read(t *testing.T, b storage.Backend, name string) []byte {
	t.Helper()
	f, err := b.Open(t.Context(), name)
	if err != nil {
		t.Fatalf("Open %s: %v", name, err)
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return data
}

func payload(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func testRoundTrip(t *testing.T, b storage.Backend) {
	start := time.Now().Add(-time.Minute)
	for i, n := range []int{0, 1, 4096, 3<<20 + 7} {
		name := fmt.Sprintf("nar/file-%d.nar", i)
		data := payload(n, uint64(i))
		put(t, b, name, data)
		if got := read(t, b, name); !bytes.Equal(got, data) {
			t.Errorf("%s: read %d bytes, put %d (or different ones)", name, len(got), len(data))
		}
		info, err := b.Stat(t.Context(), name)
		if err != nil {
			t.Fatalf("Stat %s: %v", name, err)
		}
		if info.Name != name || info.Size != int64(n) || info.Dir || info.Version == "" || info.ModTime.Before(start) {
			t.Errorf("Stat %s = %+v, want that name, size %d, a version and a recent time", name, info, n)
		}
		f, err := b.Open(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		if oi := f.Info(); oi.Size != info.Size || oi.Name != name || oi.Version != info.Version {
			t.Errorf("Open(%s).Info() = %+v, Stat = %+v", name, oi, info)
		}
		f.Close()
	}
	// An unknown size.
	data := payload(2<<20+5, 9)
	if err := b.Put(t.Context(), "unknown-size", io.MultiReader(bytes.NewReader(data)), -1); err != nil {
		t.Fatalf("Put with size -1: %v", err)
	}
	if got := read(t, b, "unknown-size"); !bytes.Equal(got, data) {
		t.Errorf("Put with size -1: read %d bytes, put %d", len(got), len(data))
	}
}

func testMissing(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	if _, err := b.Open(ctx, "nope.narinfo"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open of a missing file: %v, want fs.ErrNotExist", err)
	}
	if _, err := b.Stat(ctx, "nar/nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat of a missing file: %v, want fs.ErrNotExist", err)
	}
	if err := b.Remove(ctx, "nar/nope"); err != nil {
		t.Errorf("Remove of a missing file: %v, want nil", err)
	}
	for info, err := range b.List(ctx, "no/such/dir") {
		t.Errorf("List of a missing directory yielded %+v, %v", info, err)
	}
}

func testReplace(t *testing.T, b storage.Backend) {
	put(t, b, "x.narinfo", []byte("old content"))
	old, err := b.Stat(t.Context(), "x.narinfo")
	if err != nil {
		t.Fatal(err)
	}
	put(t, b, "x.narinfo", []byte("new"))
	if got := read(t, b, "x.narinfo"); string(got) != "new" {
		t.Errorf("after a replacing Put: %q", got)
	}
	cur, err := b.Stat(t.Context(), "x.narinfo")
	if err != nil {
		t.Fatal(err)
	}
	if cur.Version == old.Version || cur.Size != 3 {
		t.Errorf("after a replacing Put: %+v, before: %+v; want another version, size 3", cur, old)
	}
}

func testSeek(t *testing.T, b storage.Backend) {
	data := payload(1<<20+123, 3)
	put(t, b, "nar/seek.nar", data)
	f, err := b.Open(t.Context(), "nar/seek.nar")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// What http.ServeContent does: find the size, rewind, seek to a
	// range, read it.
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil || end != int64(len(data)) {
		t.Fatalf("Seek(0, End) = %d, %v; want %d", end, err, len(data))
	}
	if pos, err := f.Seek(0, io.SeekStart); err != nil || pos != 0 {
		t.Fatalf("Seek(0, Start) = %d, %v", pos, err)
	}
	head := make([]byte, 10)
	if _, err := io.ReadFull(f, head); err != nil || !bytes.Equal(head, data[:10]) {
		t.Fatalf("read the head: %v", err)
	}
	for _, r := range []struct {
		off    int64
		whence int
		at     int64
		n      int
	}{
		{500_000, io.SeekStart, 500_000, 1000},
		{-100, io.SeekCurrent, 500_900, 50},
		{-10, io.SeekEnd, int64(len(data)) - 10, 10},
		{7, io.SeekStart, 7, 3},
	} {
		pos, err := f.Seek(r.off, r.whence)
		if err != nil || pos != r.at {
			t.Fatalf("Seek(%d, %d) = %d, %v; want %d", r.off, r.whence, pos, err, r.at)
		}
		got := make([]byte, r.n)
		if _, err := io.ReadFull(f, got); err != nil {
			t.Fatalf("read %d bytes at %d: %v", r.n, r.at, err)
		}
		if !bytes.Equal(got, data[r.at:r.at+int64(r.n)]) {
			t.Errorf("%d bytes at %d differ", r.n, r.at)
		}
	}
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		t.Fatal(err)
	}
	if n, err := f.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Errorf("Read at the end = %d, %v; want 0, EOF", n, err)
	}
	if _, err := f.Seek(-1, io.SeekStart); err == nil {
		t.Errorf("Seek to -1: no error")
	}
}

// A reader that ends before the size Put was told is a failed Put: the
// old content stays.
func testShortReader(t *testing.T, b storage.Backend) {
	put(t, b, "short", []byte("old"))
	err := b.Put(t.Context(), "short", strings.NewReader("12345"), 10)
	if err == nil {
		t.Fatalf("Put of 5 bytes announced as 10: no error")
	}
	if got := read(t, b, "short"); string(got) != "old" {
		t.Errorf("after a failed Put: %q, want the old content", got)
	}
	if err := b.Put(t.Context(), "fresh", strings.NewReader("12345"), 10); err == nil {
		t.Fatalf("Put of 5 bytes announced as 10: no error")
	}
	if _, err := b.Stat(t.Context(), "fresh"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after a failed Put of a new file: Stat: %v, want fs.ErrNotExist", err)
	}
}

type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

func testFailingReader(t *testing.T, b storage.Backend) {
	put(t, b, "nar/f", []byte("old"))
	boom := errors.New("disk on fire")
	for _, size := range []int64{-1, 1 << 20} {
		r := &failingReader{r: bytes.NewReader(payload(512<<10, 4)), err: boom}
		if err := b.Put(t.Context(), "nar/f", r, size); err == nil {
			t.Errorf("Put (size %d) from a failing reader: no error", size)
		}
		if got := read(t, b, "nar/f"); string(got) != "old" {
			t.Errorf("after a failed Put (size %d): %d bytes, want the old content", size, len(got))
		}
	}
}

func testCancelled(t *testing.T, b storage.Backend) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := b.Put(ctx, "c", strings.NewReader("data"), 4); err == nil {
		t.Errorf("Put with a cancelled context: no error")
	}
	if _, err := b.Stat(t.Context(), "c"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after a cancelled Put: Stat: %v, want fs.ErrNotExist", err)
	}
	// Cancelled in the middle of a stream.
	ctx, cancel = context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	go func() {
		pw.Write(payload(256<<10, 5))
		cancel()
		time.Sleep(50 * time.Millisecond)
		pw.Write(payload(256<<10, 6))
		pw.Close()
	}()
	if err := b.Put(ctx, "c", pr, -1); err == nil {
		t.Errorf("Put cancelled mid-stream: no error")
	}
	pr.Close()
	if _, err := b.Stat(t.Context(), "c"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after a Put cancelled mid-stream: Stat: %v, want fs.ErrNotExist", err)
	}
}

func testList(t *testing.T, b storage.Backend) {
	files := map[string]string{
		"nix-cache-info":             "StoreDir: /nix/store\n",
		"b.narinfo":                  "b",
		"a.narinfo":                  "aa",
		"a-b":                        "x",
		"nar/2.nar.zst":              "22",
		"nar/1.nar.zst":              "1",
		"nix-airgap/bundles/x.json":  "{}",
		"nix-airgap/bundles/y.json":  "{}",
		"channels/nixos/nixexprs.xz": "c",
	}
	for name, data := range files {
		put(t, b, name, []byte(data))
	}
	type entry struct {
		Name string
		Size int64
		Dir  bool
	}
	list := func(dir string) []entry {
		var out []entry
		for info, err := range b.List(t.Context(), dir) {
			if err != nil {
				t.Fatalf("List(%q): %v", dir, err)
			}
			e := entry{Name: info.Name, Dir: info.Dir}
			if !info.Dir {
				e.Size = info.Size
			}
			out = append(out, e)
		}
		return out
	}
	for _, tt := range []struct {
		dir  string
		want []entry
	}{
		{"", []entry{
			{"a-b", 1, false}, {"a.narinfo", 2, false}, {"b.narinfo", 1, false},
			{"channels", 0, true}, {"nar", 0, true}, {"nix-airgap", 0, true}, {"nix-cache-info", 21, false},
		}},
		{"nar", []entry{{"nar/1.nar.zst", 1, false}, {"nar/2.nar.zst", 2, false}}},
		{"nix-airgap", []entry{{"nix-airgap/bundles", 0, true}}},
		{"nix-airgap/bundles", []entry{{"nix-airgap/bundles/x.json", 2, false}, {"nix-airgap/bundles/y.json", 2, false}}},
		{"channels", []entry{{"channels/nixos", 0, true}}},
	} {
		if diff := cmp.Diff(tt.want, list(tt.dir)); diff != "" {
			t.Errorf("List(%q) (-want +got):\n%s", tt.dir, diff)
		}
	}
	// Stopping early is allowed.
	for range b.List(t.Context(), "") {
		break
	}
}

func testNames(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	for _, name := range []string{
		"", "/abs", "../up", "a/../b", "a//b", "a/", "./a", ".hidden", "nar/.tmp-1", `nar\x`, "a\x00b",
		strings.Repeat("n", storage.MaxNameLen+1),
	} {
		if err := b.Put(ctx, name, strings.NewReader("x"), 1); err == nil {
			t.Errorf("Put(%q): no error", name)
		}
		if _, err := b.Open(ctx, name); err == nil {
			t.Errorf("Open(%q): no error", name)
		}
		if _, err := b.Stat(ctx, name); err == nil {
			t.Errorf("Stat(%q): no error", name)
		}
		if name != "" {
			if err := b.Remove(ctx, name); err == nil {
				t.Errorf("Remove(%q): no error", name)
			}
			for _, err := range b.List(ctx, name) {
				if err == nil {
					t.Errorf("List(%q) yielded an entry", name)
				}
				break
			}
		}
	}
	// Names with every byte Nix and nix-airgap use.
	for _, name := range []string{"log/abc-foo-1.2+3_x=y.drv", "nar/0a1b.nar.xz", "sha256/AbC", "channels/nixos-24.05/nixexprs.tar.xz"} {
		put(t, b, name, []byte(name))
		if got := read(t, b, name); string(got) != name {
			t.Errorf("%s: read %q", name, got)
		}
	}
}

func testDirectoryIsNoFile(t *testing.T, b storage.Backend) {
	put(t, b, "nar/x.nar", []byte("x"))
	if _, err := b.Stat(t.Context(), "nar"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat of a directory: %v, want fs.ErrNotExist", err)
	}
	if _, err := b.Open(t.Context(), "nar"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open of a directory: %v, want fs.ErrNotExist", err)
	}
}

func testRemove(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	put(t, b, "r.narinfo", []byte("r"))
	put(t, b, "nar/r.nar", []byte("rr"))
	for _, name := range []string{"r.narinfo", "nar/r.nar"} {
		if err := b.Remove(ctx, name); err != nil {
			t.Fatalf("Remove %s: %v", name, err)
		}
		if err := b.Remove(ctx, name); err != nil {
			t.Errorf("Remove %s again: %v", name, err)
		}
		if _, err := b.Open(ctx, name); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Open %s after Remove: %v", name, err)
		}
	}
	if err := storage.Sync(ctx, b); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	for info, err := range b.List(ctx, "nar") {
		t.Errorf("List(nar) after Remove: %+v, %v", info, err)
	}
	put(t, b, "r.narinfo", []byte("again"))
	if got := read(t, b, "r.narinfo"); string(got) != "again" {
		t.Errorf("Put after Remove: %q", got)
	}
}

// Concurrent writers of one name: every reader, and the end, sees one
// writer's content whole.
func testConcurrentPuts(t *testing.T, b storage.Backend) {
	const writers = 4
	contents := make([][]byte, writers)
	for i := range contents {
		contents[i] = bytes.Repeat([]byte{byte('a' + i)}, 200<<10)
	}
	put(t, b, "nar/same", contents[0])
	whole := func(data []byte) bool {
		return len(data) == len(contents[0]) && bytes.Count(data, data[:1]) == len(data)
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	for i := range writers {
		wg.Go(func() {
			for range 5 {
				if err := b.Put(t.Context(), "nar/same", bytes.NewReader(contents[i]), int64(len(contents[i]))); err != nil {
					t.Errorf("Put: %v", err)
				}
			}
		})
	}
	var rg sync.WaitGroup
	rg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			if got := read(t, b, "nar/same"); !whole(got) {
				t.Errorf("a reader saw a mix of writers (%d bytes)", len(got))
				return
			}
		}
	})
	wg.Wait()
	close(done)
	rg.Wait()
	if got := read(t, b, "nar/same"); !whole(got) {
		t.Errorf("the end is a mix of writers")
	}
}

func testSwap(t *testing.T, b storage.Backend) {
	s, ok := b.(storage.Swapper)
	if !ok {
		t.Skipf("%T is no Swapper", b)
	}
	ctx := t.Context()
	swap := func(version, data string) error {
		return s.Swap(ctx, "reg.json", version, strings.NewReader(data), int64(len(data)))
	}
	if err := swap("", "1"); err != nil {
		t.Fatalf("Swap creating: %v", err)
	}
	if err := swap("", "2"); !errors.Is(err, storage.ErrChanged) {
		t.Fatalf("Swap creating what exists: %v, want ErrChanged", err)
	}
	info, err := b.Stat(ctx, "reg.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := swap(info.Version, "3"); err != nil {
		t.Fatalf("Swap with the current version: %v", err)
	}
	if err := swap(info.Version, "4"); !errors.Is(err, storage.ErrChanged) {
		t.Fatalf("Swap with a stale version: %v, want ErrChanged", err)
	}
	if got := read(t, b, "reg.json"); string(got) != "3" {
		t.Errorf("after the swaps: %q, want 3", got)
	}
	// Read, change, swap back, retrying on ErrChanged: no increment is
	// lost.
	const workers, rounds = 4, 5
	put(t, b, "count", []byte("0"))
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range rounds {
				for {
					data, info, err := storage.ReadFile(ctx, b, "count", 100)
					if err != nil {
						t.Errorf("read count: %v", err)
						return
					}
					var n int
					fmt.Sscan(string(data), &n)
					next := fmt.Sprint(n + 1)
					err = s.Swap(ctx, "count", info.Version, strings.NewReader(next), int64(len(next)))
					if err == nil {
						break
					}
					if !errors.Is(err, storage.ErrChanged) {
						t.Errorf("Swap count: %v", err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if got := read(t, b, "count"); string(got) != fmt.Sprint(workers*rounds) {
		t.Errorf("count after %d swaps: %s", workers*rounds, got)
	}
}

func testMover(t *testing.T, b storage.Backend) {
	m, ok := b.(storage.Mover)
	if !ok {
		t.Skipf("%T is no Mover", b)
	}
	ctx := t.Context()
	dir, release, err := m.MkdirTemp()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "staged")
	if err := os.WriteFile(p, []byte("staged"), 0o644); err != nil {
		t.Fatal(err)
	}
	for info := range b.List(ctx, "") {
		t.Errorf("List shows the staging directory: %+v", info)
	}
	if err := m.Move(ctx, p, "nar/moved"); err != nil {
		t.Fatalf("Move: %v", err)
	}
	if err := storage.Sync(ctx, b); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if got := read(t, b, "nar/moved"); string(got) != "staged" {
		t.Errorf("after Move: %q", got)
	}
	outside := filepath.Join(t.TempDir(), "outside")
	os.WriteFile(outside, []byte("x"), 0o644)
	if err := m.Move(ctx, outside, "nar/outside"); err == nil {
		t.Errorf("Move of a file outside the staging directory: no error")
	}
	os.WriteFile(filepath.Join(dir, "left"), []byte("x"), 0o644)
	release()
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("staging directory after release: %v", err)
	}
}

func testLocker(t *testing.T, b storage.Backend) {
	l, ok := b.(storage.Locker)
	if !ok {
		t.Skipf("%T is no Locker", b)
	}
	ctx := t.Context()
	lock := func(ctx context.Context, exclusive bool, waiting func(string)) (func() error, error) {
		_, unlock, err := l.Lock(ctx, storage.LockOptions{Exclusive: exclusive, Command: fmt.Sprintf("test exclusive=%v", exclusive), Waiting: waiting})
		return unlock, err
	}
	unlock, err := lock(ctx, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, exclusive := range []bool{true, false} {
		// Long enough for a loaded object store to answer a round.
		short, cancel := context.WithTimeout(ctx, time.Second)
		var heard []string
		if u, err := lock(short, exclusive, func(h string) { heard = append(heard, h) }); err == nil {
			u()
			t.Errorf("Lock(exclusive=%v) while an exclusive lock is held: no error", exclusive)
		}
		cancel()
		if len(heard) != 1 || !strings.HasPrefix(heard[0], "test exclusive=true") {
			t.Errorf("Lock(exclusive=%v) waiting heard %q, want the exclusive holder once", exclusive, heard)
		}
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	u1, err := lock(ctx, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	u2, err := lock(ctx, false, nil)
	if err != nil {
		t.Fatalf("a second shared lock: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var heard []string
	if u, err := lock(short, true, func(h string) { heard = append(heard, h) }); err == nil {
		u()
		t.Errorf("an exclusive lock while shared ones are held: no error")
	}
	// Whoever holds it says who, with its PID, host and start.
	if want := fmt.Sprintf("test exclusive=false (pid %d on ", os.Getpid()); len(heard) != 1 || !strings.HasPrefix(heard[0], want) || !strings.Contains(heard[0], ", since ") {
		t.Errorf("Lock(exclusive) while shared ones are held: waiting heard %q, want %q...", heard, want)
	}
	u1()
	u2()
	u, err := lock(ctx, true, nil)
	if err != nil {
		t.Fatalf("an exclusive lock once all are released: %v", err)
	}
	// A waiter gets the lock once it is released.
	got := make(chan error, 1)
	go func() {
		u, err := lock(ctx, false, nil)
		if err == nil {
			u()
		}
		got <- err
	}()
	time.Sleep(50 * time.Millisecond)
	u()
	select {
	case err := <-got:
		if err != nil {
			t.Errorf("a waiting shared lock: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("a waiting shared lock did not get it after the exclusive one was released")
	}
}
