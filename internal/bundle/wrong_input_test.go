package bundle_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// TestWrongInputsTellTheRightStory: what is not a bundle says so, and a
// directory a pack left unfinished says to run the pack again.
func TestWrongInputsTellTheRightStory(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "passwd")
	os.WriteFile(text, bytes.Repeat([]byte("root:x:0:0:root:/root:/bin/bash\n"), 40), 0o644)
	unfinished := filepath.Join(dir, "unfinished")
	os.MkdirAll(filepath.Join(unfinished, "nar"), 0o755)
	os.WriteFile(filepath.Join(unfinished, bundle.CacheInfo), []byte("StoreDir: /nix/store\n"), 0o644)
	empty := filepath.Join(dir, "empty")
	os.MkdirAll(empty, 0o755)
	// A directory of other things is no bundle at all, as a tar of them.
	notes := filepath.Join(dir, "notes")
	os.MkdirAll(notes, 0o755)
	os.WriteFile(filepath.Join(notes, "a.txt"), []byte("hello\n"), 0o644)
	// A cache's nar/ given for the cache: its parent is what is meant.
	narDir := filepath.Join(dir, "cache", "nar")
	os.MkdirAll(narDir, 0o755)
	os.WriteFile(filepath.Join(narDir, "1ggp1l25z36n81sz8f4dzs5pl9ryhwka75c81871f7vigbxpnm58.nar.xz"), []byte("x"), 0o644)
	// Shorter than one tar header, and nothing at all: not "cut short".
	short := filepath.Join(dir, "hello.txt")
	os.WriteFile(short, []byte("hello\n"), 0o644)
	emptyFile := filepath.Join(dir, "empty.tar")
	os.WriteFile(emptyFile, nil, 0o644)
	// A tar cut inside its first header is cut short, not "not a bundle".
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	tw.WriteHeader(&tar.Header{Name: bundle.CacheInfo, Mode: 0o644, Size: 6, Typeflag: tar.TypeReg})
	tw.Write([]byte("hello\n"))
	tw.Close()
	cutHeader := filepath.Join(dir, "cut.tar")
	os.WriteFile(cutHeader, tarBuf.Bytes()[:100], 0o644)
	// A tar of other things: said once, not once per entry.
	var otherBuf bytes.Buffer
	tw = tar.NewWriter(&otherBuf)
	tw.WriteHeader(&tar.Header{Name: "notes/", Mode: 0o755, Typeflag: tar.TypeDir})
	tw.WriteHeader(&tar.Header{Name: "notes/a.txt", Mode: 0o644, Size: 6, Typeflag: tar.TypeReg})
	tw.Write([]byte("hello\n"))
	tw.WriteHeader(&tar.Header{Name: "notes/b", Linkname: "a.txt", Typeflag: tar.TypeSymlink})
	tw.Close()
	otherTar := filepath.Join(dir, "notes.tar")
	os.WriteFile(otherTar, otherBuf.Bytes(), 0o644)
	tests := []struct {
		src  string
		kind bundle.Kind
		want string
		err  error
	}{
		{text, bundle.KindCorrupt, "not a bundle: not a tar stream", bundle.ErrCorrupt},
		{unfinished, bundle.KindMissing, "a bundle whose pack did not finish (it has no manifest.json yet); run that pack again to finish it", bundle.ErrMissing},
		{empty, bundle.KindMissing, "an empty directory", bundle.ErrMissing},
		{notes, bundle.KindCorrupt, "not a bundle: a directory without manifest.json, nix-cache-info, narinfos or NAR files", bundle.ErrCorrupt},
		{narDir, bundle.KindCorrupt, "not a bundle: this looks like the nar/ directory of a cache or bundle (it holds NAR files): give its parent, " + filepath.Join(dir, "cache"), bundle.ErrCorrupt},
		{short, bundle.KindCorrupt, "not a bundle: not a tar stream (6 bytes, less than one tar header)", bundle.ErrCorrupt},
		{emptyFile, bundle.KindCorrupt, "not a bundle: empty", bundle.ErrCorrupt},
		{otherTar, bundle.KindCorrupt, "not a bundle: a tar without manifest.json", bundle.ErrCorrupt},
	}
	for _, tt := range tests {
		rep, err := bundle.Verify(t.Context(), tt.src, bundle.VerifyOptions{AllowUnsigned: true})
		if !errors.Is(err, tt.err) || rep == nil {
			t.Fatalf("Verify %s: %v, want %v", tt.src, err, tt.err)
		}
		if len(rep.Problems) != 1 || rep.Problems[0].Kind != tt.kind || !strings.Contains(rep.Problems[0].Problem, tt.want) {
			t.Errorf("Verify %s: problems %v, want just one %s saying %q", tt.src, rep.Problems, tt.kind, tt.want)
		}
		// A file that is no tar is named, not "(start of stream)".
		if fi, _ := os.Stat(tt.src); fi.Mode().IsRegular() && len(rep.Problems) > 0 && rep.Problems[0].File != filepath.Base(tt.src) {
			t.Errorf("Verify %s: the problem is of %q, want the file's name", tt.src, rep.Problems[0].File)
		}
	}
	const cut = "tar stream cut short inside its first header, after 100 bytes"
	rep, err := bundle.Verify(t.Context(), cutHeader, bundle.VerifyOptions{AllowUnsigned: true})
	if !errors.Is(err, bundle.ErrCorrupt) || rep == nil || len(rep.Problems) == 0 || rep.Problems[0].Kind != bundle.KindCorrupt || !strings.Contains(rep.Problems[0].Problem, cut) ||
		rep.Problems[0].File != "cut.tar" {
		t.Errorf("Verify of a tar cut in its first header: %v, problems %v; want corrupt, first saying %q of cut.tar", err, rep, cut)
	}
	// Standard input has no name: what is wrong at its start is said of
	// the stream.
	data, _ := os.ReadFile(text)
	rep, err = bundle.Verify(t.Context(), "-", bundle.VerifyOptions{AllowUnsigned: true, Stdin: bytes.NewReader(data)})
	if !errors.Is(err, bundle.ErrCorrupt) || rep == nil || len(rep.Problems) != 1 || rep.Problems[0].File != "(start of stream)" {
		t.Errorf("Verify - of a text: %v, problems %v; want one, of (start of stream)", err, rep)
	}
}

// TestRefusedImportLeavesNoCache: an import that is refused leaves no
// trace of the cache directory it would have created, lock file included.
func TestRefusedImportLeavesNoCache(t *testing.T) {
	tarFile := filepath.Join(t.TempDir(), "b.tar")
	os.WriteFile(tarFile, tinyTar(t, 3, "zstd"), 0o644)
	_, other, _ := signing.Generate("other-1")
	cacheDir := filepath.Join(t.TempDir(), "new-cache")
	_, err := bundle.Import(t.Context(), tarFile, cacheDir, bundle.ImportOptions{Keys: signing.NewKeyring(other)})
	if !errors.Is(err, bundle.ErrUntrusted) {
		t.Fatalf("Import with the wrong key: %v, want ErrUntrusted", err)
	}
	if _, err := os.Stat(cacheDir); !errors.Is(err, os.ErrNotExist) {
		ents, _ := os.ReadDir(cacheDir)
		t.Errorf("a refused import left %s behind, holding %v", cacheDir, ents)
	}
	// An existing cache stays, of course.
	os.MkdirAll(cacheDir, 0o755)
	bundle.Import(t.Context(), tarFile, cacheDir, bundle.ImportOptions{Keys: signing.NewKeyring(other)})
	if _, err := os.Stat(cacheDir); err != nil {
		t.Errorf("a refused import removed the cache that was there: %v", err)
	}
}

// TestImportWaitsSayingWho: imports share the cache's lock, so a second
// import runs while the first is under way; an import waits while a
// process holds the lock exclusively (as gc does), saying who, and then
// imports.
func TestImportWaitsSayingWho(t *testing.T) {
	tarFile := filepath.Join(t.TempDir(), "b.tar")
	os.WriteFile(tarFile, tinyTar(t, 3, "zstd"), 0o644)
	keys := signing.NewKeyring(fuzzSeedKey.Public())
	cacheDir := filepath.Join(t.TempDir(), "cache")

	// The first import, stopped while it holds its shared lock: its
	// progress blocks. A second import does not wait for it.
	hold, release := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		_, err := bundle.Import(context.Background(), tarFile, cacheDir, bundle.ImportOptions{Keys: keys, Progress: &blockOnce{hold: hold, release: release}})
		first <- err
	}()
	<-hold
	if _, err := bundle.Import(t.Context(), tarFile, cacheDir, bundle.ImportOptions{Keys: keys}); err != nil {
		t.Fatalf("an import alongside another: %v", err)
	}
	// gc, wanting the lock to itself, hears which import holds it.
	host, _ := os.Hostname()
	b, err := storage.OpenDir(cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var heard string
	short, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	if _, _, err := b.Lock(short, storage.LockOptions{Exclusive: true, Command: "gc", Waiting: func(h string) { heard = h }}); err == nil {
		t.Fatal("an exclusive lock while an import holds it: no error")
	}
	cancel()
	if want := fmt.Sprintf("import %s (pid %d on %s, since ", tarFile, os.Getpid(), host); !strings.HasPrefix(heard, want) {
		t.Errorf("a waiting gc heard %q, want %q...", heard, want)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if record, err := os.ReadFile(filepath.Join(cacheDir, ".lock")); err != nil || len(record) != 0 {
		t.Errorf("the lock file once every holder left: %q, %v; want it empty", record, err)
	}

	// An exclusive holder makes an import wait, and it says who.
	_, unlock, err := b.Lock(t.Context(), storage.LockOptions{Exclusive: true, Command: "gc"})
	if err != nil {
		t.Fatal(err)
	}
	var log nixtest.SyncBuffer
	var rec recorder
	second := make(chan error, 1)
	go func() {
		_, err := bundle.Import(context.Background(), tarFile, cacheDir, bundle.ImportOptions{Keys: keys, Log: slog.New(slog.NewTextHandler(&log, nil)), Progress: &rec})
		second <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(log.String(), "waiting") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got, want := log.String(), fmt.Sprintf("waiting for gc (pid %d on %s, since ", os.Getpid(), host); !strings.Contains(got, want) || !strings.Contains(got, "to release the lock on "+cacheDir) {
		t.Errorf("the waiting import said %q, want who holds the lock", got)
	}
	select {
	case err := <-second:
		t.Fatalf("the import did not wait: %v", err)
	default:
	}
	unlock()
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	// Its progress shows the wait, as a phase of its own.
	if len(rec.phases) == 0 || rec.phases[0] != bundle.PhaseLock {
		t.Errorf("the waiting import's progress heard phases %q, want %q first", rec.phases, bundle.PhaseLock)
	}
}

// blockOnce is a Progress that blocks its first Phase until released.
type blockOnce struct {
	once          sync.Once
	hold, release chan struct{}
}

func (b *blockOnce) Phase(string, int, int64) {
	b.once.Do(func() {
		close(b.hold)
		<-b.release
	})
}
func (b *blockOnce) Step(string, string, int64) {}

// TestSpoolRemoved: an aborted tar writer removes its spool, and the next
// writer removes killed ones', new or old, but not a live writer's or a
// live upload spool's (an import into S3 stages its files in one).
func TestSpoolRemoved(t *testing.T) {
	tmp := t.TempDir()
	opts := bundle.WriterOptions{TempDir: tmp}
	live, err := bundle.NewTarWriter(&bytes.Buffer{}, storepath.DefaultDir, opts)
	if err != nil {
		t.Fatal(err)
	}
	killed := filepath.Join(tmp, "nix-airgap-spool-killed")
	os.MkdirAll(filepath.Join(killed, "nar"), 0o755)
	os.WriteFile(filepath.Join(killed, "nar", "x.nar.zst"), []byte("half a NAR"), 0o644)
	old := time.Now().Add(-time.Hour)
	os.Chtimes(killed, old, old)
	// Killed before it locked it, or no one's yet: its maker, which
	// checks after locking, makes another.
	young := filepath.Join(tmp, "nix-airgap-spool-young")
	os.Mkdir(young, 0o755)
	dir, err := storage.CreateDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	upload, err := storage.NewSpool(struct{ storage.Backend }{dir}, tmp) // no Mover, as S3
	if err != nil {
		t.Fatal(err)
	}
	defer upload.Close()

	w, err := bundle.NewTarWriter(&bytes.Buffer{}, storepath.DefaultDir, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{killed, young} {
		if _, err := os.Stat(s); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still there: %v", s, err)
		}
	}
	if spools, _ := filepath.Glob(filepath.Join(tmp, "nix-airgap-spool-*")); len(spools) != 3 {
		t.Errorf("spools %v, want the live writer's, the upload's and the new writer's", spools)
	}
	w.Abort()
	live.Abort()
	upload.Close()
	if spools, _ := filepath.Glob(filepath.Join(tmp, "nix-airgap-spool-*")); len(spools) != 0 {
		t.Errorf("aborted writers left spools %v", spools)
	}
}

// TestVerifyProgress: verify tells its Progress how many bytes it will
// read, then the bytes as it reads them, which add up to that, and each
// NAR file as it is checked: for a tar, a bundle directory and a cache.
func TestVerifyProgress(t *testing.T) {
	tarFile := filepath.Join(t.TempDir(), "b.tar")
	os.WriteFile(tarFile, tinyTar(t, 5, "zstd"), 0o644)
	keys := signing.NewKeyring(fuzzSeedKey.Public())
	cacheDir := filepath.Join(t.TempDir(), "cache")
	if _, err := bundle.Import(t.Context(), tarFile, cacheDir, bundle.ImportOptions{Keys: keys}); err != nil {
		t.Fatal(err)
	}
	bundleDir := filepath.Join(t.TempDir(), "b")
	bw, err := bundle.NewDirWriter(bundleDir, storepath.DefaultDir, bundle.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir, paths := fakePaths(t)
	if dir != storepath.DefaultDir {
		t.Fatal("fakePaths moved")
	}
	writeFake(t, bw, paths)
	for _, tt := range []struct {
		src          string
		expect, done int // NAR files expected at the start, and checked
	}{
		{tarFile, 5, 5}, // its manifest, last, is found by seeking first
		{cacheDir, 5, 5},
		{bundleDir, 2, 2}, // three paths, two of them sharing a NAR file
	} {
		var rec recorder
		if _, err := bundle.Verify(t.Context(), tt.src, bundle.VerifyOptions{Keys: keys, AllowUnsigned: true, Progress: &rec}); err != nil {
			t.Fatal(err)
		}
		if rec.phases[0] != bundle.PhaseVerify || rec.total == 0 || rec.bytes != rec.total || rec.want != tt.expect || rec.paths != tt.done {
			t.Errorf("verify %s: progress heard phases %v, %d bytes of %d, %d NAR files of %d; want verify, all bytes, %d of %d",
				tt.src, rec.phases, rec.bytes, rec.total, rec.paths, rec.want, tt.done, tt.expect)
		}
	}
}

type recorder struct {
	mu     sync.Mutex
	phases []string
	bytes  int64
	paths  int
	total  int64 // the last phase's
	want   int
}

func (r *recorder) Phase(name string, paths int, bytes int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.phases = append(r.phases, name)
	r.bytes, r.paths, r.total, r.want = 0, 0, bytes, paths
}

func (r *recorder) Step(path, _ string, n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bytes += n
	if path != "" {
		r.paths++
	}
}

// A tar given as a named pipe (`verify <(cat b.tar)`, `import <(…)`) is
// read once, as a stream: scanning it for volumes first would consume it.
func TestVerifyPipe(t *testing.T) {
	data := tinyTar(t, 3, "zstd")
	keys := signing.NewKeyring(fuzzSeedKey.Public())
	for _, name := range []string{"verify", "import"} {
		t.Run(name, func(t *testing.T) {
			fifo := filepath.Join(t.TempDir(), "b.tar")
			if err := syscall.Mkfifo(fifo, 0o600); err != nil {
				t.Skip(err)
			}
			go func() {
				f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
				if err != nil {
					return
				}
				defer f.Close()
				f.Write(data)
			}()
			var err error
			if name == "verify" {
				_, err = bundle.Verify(t.Context(), fifo, bundle.VerifyOptions{Keys: keys})
			} else {
				_, err = bundle.Import(t.Context(), fifo, filepath.Join(t.TempDir(), "cache"), bundle.ImportOptions{Keys: keys})
			}
			if err != nil {
				t.Errorf("%s of a tar through a pipe: %v", name, err)
			}
		})
	}
}

// A cache inventory on standard input is told as one given by name is,
// from its first bytes, whether shorter than a tar header or not: it goes
// to the connected side. import refuses it and makes no cache. A
// manifest.json alone is told as one given by name is, too.
func TestStdinInventoryTellsTheRightStory(t *testing.T) {
	c := newChain(t, 3)
	full := filepath.Join(t.TempDir(), "cache")
	if _, err := bundle.Import(t.Context(), c.dir(0, 3, nil), full, bundle.ImportOptions{Keys: signing.NewKeyring(c.sk.Public())}); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	os.MkdirAll(empty, 0o755)
	os.WriteFile(filepath.Join(empty, bundle.CacheInfo), []byte("StoreDir: /nix/store\n"), 0o644)
	const want = "not a bundle: a cache inventory (nix-airgap inventory --out): it goes to the connected side, for pack --since"
	for _, cacheDir := range []string{full, empty} {
		data := mustReadFile(t, inventoryFile(t, cacheDir))
		rep, err := bundle.Verify(t.Context(), "-", bundle.VerifyOptions{AllowUnsigned: true, Stdin: bytes.NewReader(data)})
		if !errors.Is(err, bundle.ErrCorrupt) || rep == nil || len(rep.Problems) != 1 || rep.Problems[0].Problem != want {
			t.Errorf("verify - of an inventory of %d bytes: %v, report %+v; want one problem saying %q", len(data), err, rep, want)
		}
		into := filepath.Join(t.TempDir(), "cache")
		_, err = bundle.Import(t.Context(), "-", into, bundle.ImportOptions{AllowUnsigned: true, Stdin: bytes.NewReader(data)})
		if !errors.Is(err, bundle.ErrCorrupt) || !strings.Contains(err.Error(), want) {
			t.Errorf("import - of an inventory of %d bytes: %v; want corrupt, saying %q", len(data), err, want)
		}
		if _, err := os.Stat(into); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("import - of an inventory left %s: %v", into, err)
		}
	}
	// A bundle's manifest.json alone is told as one given by name is.
	const wantManifest = "not a bundle: a bundle's manifest.json alone, which show and diff read: give the bundle directory or tar it belongs to"
	data := mustReadFile(t, filepath.Join(c.dir(0, 3, nil), bundle.ManifestName))
	rep, err := bundle.Verify(t.Context(), "-", bundle.VerifyOptions{AllowUnsigned: true, Stdin: bytes.NewReader(data)})
	if !errors.Is(err, bundle.ErrCorrupt) || rep == nil || len(rep.Problems) != 1 || rep.Problems[0].Problem != wantManifest {
		t.Errorf("verify - of a manifest.json: %v, report %+v; want one problem saying %q", err, rep, wantManifest)
	}
}
