package nar_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
)

var update = flag.Bool("update", false, "rewrite golden files from real Nix")

// nixDump runs nix-store --dump, keeping stdout's bytes exact.
func nixDump(t *testing.T, n *nixtest.Nix, path string) []byte {
	t.Helper()
	cmd := n.Command(t.Context(), "nix-store", "--dump", path)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("nix-store --dump %s: %v\n%s", path, err, stderr.Bytes())
	}
	return stdout.Bytes()
}

func nixRestore(t *testing.T, n *nixtest.Nix, narBytes []byte, path string) {
	t.Helper()
	cmd := n.Command(t.Context(), "nix-store", "--restore", path)
	cmd.Stdin = bytes.NewReader(narBytes)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nix-store --restore %s: %v\n%s", path, err, out)
	}
}

func dump(t *testing.T, path string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := nar.Dump(&buf, path); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// roots are the trees the real-Nix tests run on: a directory, and each
// kind of object as the NAR's root.
func roots(t *testing.T) map[string]string {
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	makeTree(t, tree)
	return map[string]string{
		"tree":       tree,
		"file":       filepath.Join(tree, "big"),
		"emptyfile":  filepath.Join(tree, "empty"),
		"executable": filepath.Join(tree, "exe"),
		"symlink":    filepath.Join(tree, "dangling"),
		"emptydir":   filepath.Join(tree, "emptydir"),
	}
}

func TestDumpMatchesNix(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	for name, path := range roots(t) {
		t.Run(name, func(t *testing.T) {
			want := nixDump(t, n, path)
			got := dump(t, path)
			if !bytes.Equal(got, want) {
				t.Fatalf("Dump(%s) differs from nix-store --dump: %d vs %d bytes, first difference at %d", path, len(got), len(want), firstDiff(got, want))
			}

			h, size, err := nar.DumpHash(io.Discard, path)
			if err != nil {
				t.Fatal(err)
			}
			if size != int64(len(want)) {
				t.Errorf("DumpHash size = %d, want %d", size, len(want))
			}
			nixHash := n.Run(t, "nix-hash", "--type", "sha256", "--base32", path)
			if h.Nix32() != nixHash {
				t.Errorf("DumpHash = %s, nix-hash says %s", h.Nix32(), nixHash)
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// walk lists a tree as NAR headers, independently of the Reader, with
// each regular file's contents.
func walk(t *testing.T, root string) ([]nar.Header, map[string]string) {
	t.Helper()
	var hdrs []nar.Header
	contents := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := "/" + strings.TrimPrefix(strings.TrimPrefix(p, root), "/")
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		h := nar.Header{Path: rel}
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Type, h.Size, h.Executable = nar.TypeRegular, fi.Size(), fi.Mode()&0o100 != 0
			contents[rel] = string(b)
		case fi.IsDir():
			h.Type = nar.TypeDirectory
		default:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			h.Type, h.LinkTarget = nar.TypeSymlink, target
		}
		hdrs = append(hdrs, h)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hdrs, contents
}

func TestReaderOnNixDump(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	tree := roots(t)["tree"]
	wantHdrs, wantContents := walk(t, tree)

	nr := nar.NewReader(bytes.NewReader(nixDump(t, n, tree)))
	var gotHdrs []nar.Header
	gotContents := map[string]string{}
	for {
		hdr, err := nr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Type == nar.TypeRegular && hdr.Offset <= 0 {
			t.Errorf("%s: Offset = %d, want > 0", hdr.Path, hdr.Offset)
		}
		hdr.Offset = 0
		gotHdrs = append(gotHdrs, *hdr)
		if hdr.Type == nar.TypeRegular {
			b, err := io.ReadAll(nr)
			if err != nil {
				t.Fatal(err)
			}
			gotContents[hdr.Path] = string(b)
		}
	}
	// WalkDir also visits in bytewise order, so the lists compare as is.
	if diff := cmp.Diff(wantHdrs, gotHdrs); diff != "" {
		t.Errorf("headers (-walk +reader):\n%s", diff)
	}
	if diff := cmp.Diff(wantContents, gotContents); diff != "" {
		t.Errorf("contents (-walk +reader):\n%s", diff)
	}
}

func TestRestoreRoundTrip(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	for name, path := range roots(t) {
		t.Run(name, func(t *testing.T) {
			want := nixDump(t, n, path)

			ours := filepath.Join(t.TempDir(), "ours")
			if err := nar.Restore(bytes.NewReader(want), ours); err != nil {
				t.Fatal(err)
			}
			if got := nixDump(t, n, ours); !bytes.Equal(got, want) {
				t.Errorf("nix-store --dump after Restore differs at byte %d", firstDiff(got, want))
			}
			if got := dump(t, ours); !bytes.Equal(got, want) {
				t.Errorf("Dump after Restore differs at byte %d", firstDiff(got, want))
			}

			theirs := filepath.Join(t.TempDir(), "theirs")
			nixRestore(t, n, dump(t, path), theirs)
			if got := nixDump(t, n, theirs); !bytes.Equal(got, want) {
				t.Errorf("nix-store --dump after nix-store --restore of Dump differs at byte %d", firstDiff(got, want))
			}
		})
	}
}

// TestListingGolden checks WriteListing against the .ls file Nix 2.8
// wrote for the same tree (TestListingMatchesNix keeps it current).
func TestListingGolden(t *testing.T) {
	tree := roots(t)["tree"]
	entry, err := nar.List(bytes.NewReader(dump(t, tree)))
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if err := nar.WriteListing(&got, entry); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(listingGolden)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), got.String()); diff != "" {
		t.Errorf("WriteListing (-nix +ours):\n%s", diff)
	}
}

const listingGolden = "testdata/listing.golden.json"

// TestListingMatchesNix checks that the golden listing is what nix copy
// writes with write-nar-listing=true; -update rewrites it from Nix.
func TestListingMatchesNix(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	tree := roots(t)["tree"]
	storePath := n.Run(t, "nix-store", "--add", tree)
	cache := filepath.Join(t.TempDir(), "cache")
	n.Run(t, "nix", "copy", "--to", "file://"+cache+"?write-nar-listing=true&compression=none", storePath)
	hashPart, _, _ := strings.Cut(filepath.Base(storePath), "-")
	got, err := os.ReadFile(filepath.Join(cache, hashPart+".ls"))
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(listingGolden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(listingGolden)
	if err != nil {
		t.Fatal(err)
	}
	// Nix 2.8 wrote the golden file, keys in the order of its listNar;
	// later Nix writes the same JSON with its keys sorted.
	if v, _ := nixtest.Version(); v.Major == 2 && v.Minor == 8 {
		if diff := cmp.Diff(string(want), string(got)); diff != "" {
			t.Errorf("nix copy's .ls differs from %s (-golden +nix):\n%s", listingGolden, diff)
		}
	}
	var wantJSON, gotJSON any
	if err := json.Unmarshal(want, &wantJSON); err != nil {
		t.Fatalf("%s: %v", listingGolden, err)
	}
	if err := json.Unmarshal(got, &gotJSON); err != nil {
		t.Fatalf("nix copy's .ls: %v", err)
	}
	if diff := cmp.Diff(wantJSON, gotJSON); diff != "" {
		t.Errorf("nix copy's .ls differs from %s as JSON (-golden +nix):\n%s", listingGolden, diff)
	}
}

// TestDumpLongNamesMatchesNix covers what one system call of the dumper
// does not hold: a directory whose entries fill several getdents buffers
// and symlink targets longer than the first readlink buffer.
func TestDumpLongNamesMatchesNix(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	root := filepath.Join(t.TempDir(), "many")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 700 {
		name := fmt.Sprintf("%03d-%s", i, strings.Repeat("n", 40))
		if err := os.WriteFile(filepath.Join(root, name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, size := range []int{255, 256, 257, 4000} {
		if err := os.Symlink(strings.Repeat("t", size), filepath.Join(root, fmt.Sprintf("link-%d", size))); err != nil {
			t.Fatal(err)
		}
	}
	want := nixDump(t, n, root)
	if got := dump(t, root); !bytes.Equal(got, want) {
		t.Fatalf("Dump(%s) differs from nix-store --dump: %d vs %d bytes, first difference at %d", root, len(got), len(want), firstDiff(got, want))
	}
}
