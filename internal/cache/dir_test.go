package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

const testStore storepath.Dir = "/test/store"

// testNAR returns a small valid NAR of one regular file.
func testNAR(t testing.TB, contents string) []byte {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, []byte(contents), 0o644); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := nar.Dump(&buf, p); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func testPath(t testing.TB, name string) storepath.Path {
	t.Helper()
	sum := sha256.Sum256([]byte(name))
	p, err := testStore.Base(mustHash(t, sum[:]).Nix32()[:32] + "-" + name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// addTestNAR stores a NAR in d and returns a narinfo for it.
func addTestNAR(t testing.TB, d *Cache, name, contents, comp string) *narinfo.NarInfo {
	t.Helper()
	f, st, err := d.AddNAR(context.Background(), bytes.NewReader(testNAR(t, contents)), comp, compression.WriterOptions{}, NarStats{})
	if err != nil {
		t.Fatal(err)
	}
	return &narinfo.NarInfo{
		StorePath: testPath(t, name), URL: f.URL, Compression: comp,
		FileHash: f.Hash, FileSize: uint64(f.Size), NarHash: st.NarHash, NarSize: uint64(st.NarSize),
	}
}

func TestDirRoundTrip(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir()
	d, err := CreateDir(path, testStore, 40)
	if err != nil {
		t.Fatal(err)
	}
	for _, comp := range []string{"none", "zstd", "xz", "gzip"} {
		ni := addTestNAR(t, d, "p-"+comp, "hello "+comp, comp)
		if err := d.PutNarInfo(t.Context(), ni); err != nil {
			t.Fatal(err)
		}
		if has, err := d.Has(t.Context(), ni.StorePath.Hash); !has || err != nil {
			t.Errorf("Has(%s) = %v, %v after PutNarInfo", ni.StorePath.Hash, has, err)
		}
		d2, err := OpenDir(path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := d2.NarInfo(ctx, ni.StorePath.Hash)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(ni.String(), got.String()); diff != "" {
			t.Errorf("narinfo (-want +got):\n%s", diff)
		}
		r, err := d2.Open(ctx, got.URL)
		if err != nil {
			t.Fatal(err)
		}
		if err := CheckNAR(r, got); err != nil {
			t.Errorf("CheckNAR %s: %v", comp, err)
		}
		r.Close()
		d2.Close()
	}
}

func newDir(t *testing.T) *Cache {
	t.Helper()
	d, err := CreateDir(t.TempDir(), testStore, 40)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// files lists every file under dir, relative, sorted.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCreateDir(t *testing.T) {
	path := t.TempDir()
	d, err := CreateDir(path, testStore, 30)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(path, "nix-cache-info"))
	if err != nil {
		t.Fatal(err)
	}
	want := "StoreDir: /test/store\nWantMassQuery: 1\nPriority: 30\n"
	if string(got) != want {
		t.Errorf("nix-cache-info = %q, want %q", got, want)
	}
	d.Close()
	// Again, with another priority: the existing cache stays as it is.
	d, err = CreateDir(path, testStore, 10)
	if err != nil {
		t.Fatalf("CreateDir again: %v", err)
	}
	if d.Info().Priority != 30 {
		t.Errorf("priority after second CreateDir = %d, want 30", d.Info().Priority)
	}
	d.Close()
	if _, err := CreateDir(path, "/other/store", 30); err == nil || !strings.Contains(err.Error(), "/other/store") {
		t.Errorf("CreateDir with another store dir: %v, want a refusal naming it", err)
	}
	if _, err := CreateDir(t.TempDir(), "relative", 30); err == nil {
		t.Error("CreateDir with a relative store dir succeeded")
	}
}

func TestOpenDirErrors(t *testing.T) {
	tests := []struct {
		name, info string // info "" means no nix-cache-info
		want       string
	}{
		{"missing", "", ": " + ErrNoCacheInfo.Error()}, // it names the directory
		{"no StoreDir", "WantMassQuery: 1\n", "no StoreDir"},
		{"relative StoreDir", "StoreDir: nix/store\n", "StoreDir"},
		{"bad priority", "StoreDir: /nix/store\nPriority: high\n", `Priority "high"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.info != "" {
				if err := os.WriteFile(filepath.Join(dir, "nix-cache-info"), []byte(tt.info), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_, err := OpenDir(dir)
			if err == nil || !strings.Contains(err.Error(), tt.want) || tt.info != "" && !strings.Contains(err.Error(), filepath.Join(dir, "nix-cache-info")) ||
				tt.info == "" && (err.Error() != dir+tt.want || !errors.Is(err, ErrNotFound)) {
				t.Errorf("OpenDir = %v, want an error naming %s or its nix-cache-info and containing %q", err, dir, tt.want)
			}
		})
	}
	if _, err := OpenDir(filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Error("OpenDir of a missing directory succeeded")
	}
}

func TestNarInfosAndMissing(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	var want []string
	for _, name := range []string{"a", "bb", "ccc"} {
		ni := addTestNAR(t, d, name, name, "zstd")
		if err := d.PutNarInfo(t.Context(), ni); err != nil {
			t.Fatal(err)
		}
		want = append(want, ni.StorePath.String())
	}
	// A temp file left by a crash is not a narinfo.
	if err := os.WriteFile(filepath.Join(d.String(), ".tmp-123.narinfo"), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	var got []string
	for ni, err := range d.NarInfos(t.Context()) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ni.StorePath.String())
	}
	slices.Sort(want)
	slices.Sort(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("NarInfos (-want +got):\n%s", diff)
	}

	missing := strings.Repeat("0", 32)
	if _, err := d.NarInfo(ctx, missing); !errors.Is(err, ErrNotFound) {
		t.Errorf("NarInfo(missing) = %v, want ErrNotFound", err)
	}
	if has, err := d.Has(t.Context(), missing); has || err != nil {
		t.Errorf("Has(missing) = %v, %v; want false, nil", has, err)
	}
	if _, err := d.Open(ctx, "nar/missing.nar.zst"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open(missing) = %v, want ErrNotFound", err)
	}
	for _, bad := range []string{"", "short", strings.Repeat("e", 32), "../../../../../etc/passwd.narinfo"[:32]} {
		if _, err := d.NarInfo(ctx, bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("NarInfo(%q) = %v, want ErrNotFound", bad, err)
		}
		if has, err := d.Has(t.Context(), bad); has || err != nil {
			t.Errorf("Has(%q) = %v, %v; want false, nil", bad, has, err)
		}
	}
}

func TestEscapes(t *testing.T) {
	ctx := context.Background()
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := newDir(t)
	os.Mkdir(filepath.Join(d.String(), "nar"), 0o755)
	for _, name := range []string{"nar/ok", "nar/.tmp-123", ".hidden"} {
		if err := os.WriteFile(filepath.Join(d.String(), name), []byte("ok"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		"nar/abs":    secret,
		"nar/rel":    "../../" + filepath.Base(outside) + "/secret",
		"outlinkdir": outside,
		"nar/inside": "ok", // allowed: stays inside
	}
	// rel only escapes if the cache and outside share a parent; make it
	// escape for sure.
	links["nar/rel"], _ = filepath.Rel(filepath.Join(d.String(), "nar"), secret)
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(d.String(), name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, url := range []string{
		"../secret", "nar/../../secret", "/etc/passwd", secret, "file://" + secret,
		"http://127.0.0.1/x", "nar/abs", "nar/rel", "outlinkdir/secret", "nar/./ok", "nar//ok", "nar",
		`nar\ok`, "nar/.tmp-123", ".hidden",
	} {
		if r, err := d.Open(ctx, url); err == nil {
			data, _ := io.ReadAll(r)
			r.Close()
			t.Errorf("Open(%q) succeeded, read %q", url, data)
		}
	}
	r, err := d.Open(ctx, "nar/inside")
	if err != nil {
		t.Fatalf("Open(nar/inside), a symlink inside the cache: %v", err)
	}
	r.Close()

	for _, name := range []string{"../x", "/tmp/x", "outlinkdir/x", ".hidden", "a/../../x"} {
		if err := d.WriteFile(t.Context(), name, []byte("x")); err == nil {
			t.Errorf("WriteFile(%q) succeeded", name)
		}
	}
	if got := files(t, outside); !slices.Equal(got, []string{"secret"}) {
		t.Errorf("files outside the cache after escape attempts: %v", got)
	}
	if err := d.WriteFile(t.Context(), "nix-airgap/bundles/x.json", []byte("{}")); err != nil {
		t.Errorf("WriteFile into a new subdirectory: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(d.String(), "nix-airgap/bundles/x.json")); string(got) != "{}" {
		t.Errorf("WriteFile wrote %q", got)
	}

	// A narinfo may not name a file outside the cache either.
	ni := addTestNAR(t, d, "esc", "esc", "none")
	for _, url := range []string{"../secret", secret, "nar/abs", "http://example.org/nar/x.nar"} {
		bad := *ni
		bad.URL = url
		if err := d.PutNarInfo(t.Context(), &bad); err == nil {
			t.Errorf("PutNarInfo with URL %q succeeded", url)
		}
	}
}

func TestPutNarInfo(t *testing.T) {
	d := newDir(t)
	ni := addTestNAR(t, d, "put", "put", "zstd")

	before := *ni
	before.URL = "nar/" + strings.Repeat("1", 52) + ".nar.zst"
	if err := d.PutNarInfo(t.Context(), &before); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), before.URL) {
		t.Errorf("PutNarInfo before its file = %v, want ErrNotFound naming %s", err, before.URL)
	}
	short := *ni
	short.FileSize++
	if err := d.PutNarInfo(t.Context(), &short); !errors.Is(err, ErrCorrupt) {
		t.Errorf("PutNarInfo with the wrong FileSize = %v, want ErrCorrupt", err)
	}
	// A size the caller knows that is not FileSize is looked up.
	if err := d.PutNarInfoOf(t.Context(), &before, int64(before.FileSize)+1); !errors.Is(err, ErrNotFound) {
		t.Errorf("PutNarInfoOf before its file, with another size = %v, want ErrNotFound", err)
	}
	if err := d.PutNarInfoOf(t.Context(), &short, int64(ni.FileSize)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("PutNarInfoOf with the wrong FileSize = %v, want ErrCorrupt", err)
	}
	other := *ni
	other.StorePath.Dir = "/other/store"
	if err := d.PutNarInfo(t.Context(), &other); !errors.Is(err, storepath.ErrWrongDir) {
		t.Errorf("PutNarInfo for another store dir = %v, want storepath.ErrWrongDir", err)
	}
	invalid := *ni
	invalid.NarSize = 0
	if err := d.PutNarInfo(t.Context(), &invalid); err == nil {
		t.Error("PutNarInfo of an invalid narinfo succeeded")
	}
	if has, _ := d.Has(t.Context(), ni.StorePath.Hash); has {
		t.Fatal("a refused narinfo was written")
	}
	if err := d.PutNarInfo(t.Context(), ni); err != nil {
		t.Fatal(err)
	}
	want := []string{"nar/" + filepath.Base(ni.URL), ni.StorePath.Hash + ".narinfo", "nix-cache-info"}
	slices.Sort(want)
	if diff := cmp.Diff(want, files(t, d.String())); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
}

func TestAddFileIdempotent(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	data := bytes.Repeat([]byte("data"), 1<<18)
	f1, err := d.AddFile(ctx, bytes.NewReader(data), ".xz")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	want := File{URL: "nar/" + mustHash(t, sum[:]).Nix32() + ".nar.xz", Hash: mustHash(t, sum[:]), Size: int64(len(data))}
	if diff := cmp.Diff(want, f1); diff != "" {
		t.Errorf("AddFile (-want +got):\n%s", diff)
	}
	st1, _ := os.Stat(filepath.Join(d.String(), f1.URL))
	f2, err := d.AddFile(ctx, bytes.NewReader(data), ".xz")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(f1, f2); diff != "" {
		t.Errorf("second AddFile (-first +second):\n%s", diff)
	}
	st2, _ := os.Stat(filepath.Join(d.String(), f1.URL))
	if !os.SameFile(st1, st2) {
		t.Error("second AddFile replaced the existing file")
	}
	if diff := cmp.Diff([]string{f1.URL, "nix-cache-info"}, files(t, d.String())); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	got, _ := os.ReadFile(filepath.Join(d.String(), f1.URL))
	if !bytes.Equal(got, data) {
		t.Error("stored file differs from input")
	}
	for _, ext := range []string{"/x", ".ZST", ".", "zst", ".toolongext"} {
		if _, err := d.AddFile(ctx, bytes.NewReader(data), ext); err == nil {
			t.Errorf("AddFile with ext %q succeeded", ext)
		}
	}
}

func TestAddFileFailureLeavesNothing(t *testing.T) {
	d := newDir(t)
	ctx, cancel := context.WithCancel(context.Background())
	r := io.MultiReader(bytes.NewReader(make([]byte, 3<<20)), readerFunc(func([]byte) (int, error) {
		cancel()
		return 0, nil
	}), bytes.NewReader(make([]byte, 1<<20)))
	if _, err := d.AddFile(ctx, r, ""); !errors.Is(err, context.Canceled) {
		t.Errorf("AddFile cancelled = %v, want context.Canceled", err)
	}
	if _, _, err := d.AddNAR(context.Background(), iotest.ErrReader(errors.New("disk on fire")), "zstd", compression.WriterOptions{}, NarStats{}); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("AddNAR of a failing reader = %v", err)
	}
	nar := testNAR(t, "contents")
	want := NarStats{NarHash: mustHash(t, make([]byte, 32)), NarSize: int64(len(nar))}
	if _, _, err := d.AddNAR(context.Background(), bytes.NewReader(nar), "zstd", compression.WriterOptions{}, want); !errors.Is(err, ErrCorrupt) {
		t.Errorf("AddNAR of a NAR that is not what the store says = %v, want ErrCorrupt", err)
	}
	if diff := cmp.Diff([]string{"nix-cache-info"}, files(t, d.String())); diff != "" {
		t.Errorf("files after failures (-want +got):\n%s", diff)
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func mustHash(t testing.TB, digest []byte) storepath.Hash {
	t.Helper()
	h, err := storepath.NewHash(storepath.SHA256, digest)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
