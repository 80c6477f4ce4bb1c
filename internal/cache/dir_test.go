package cache

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
	p, err := testStore.Base("0123456789abcdfghijklmnpqrsvwxyz"[:32-len(name)%5] + strings.Repeat("a", len(name)%5) + "-" + name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// addTestNAR stores a NAR in d and returns a narinfo for it.
func addTestNAR(t testing.TB, d *Dir, name, contents, comp string) *narinfo.NarInfo {
	t.Helper()
	f, st, err := d.AddNAR(context.Background(), bytes.NewReader(testNAR(t, contents)), comp, compression.WriterOptions{})
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
		if err := d.PutNarInfo(ni); err != nil {
			t.Fatal(err)
		}
		if !d.Has(ni.StorePath.Hash) {
			t.Errorf("Has(%s) = false after PutNarInfo", ni.StorePath.Hash)
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
