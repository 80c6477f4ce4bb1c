package cli_test

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cli"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storage/s3test"
)

// treeOf is dir's tree: each file's and directory's mode, and each file's
// SHA-256; nil if dir is not there.
func treeOf(t *testing.T, dir string) map[string]string {
	t.Helper()
	if _, err := os.Lstat(dir); os.IsNotExist(err) {
		return nil
	}
	tree := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		tree[rel] = fi.Mode().String()
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			tree[rel] += fmt.Sprintf(" %x", sha256.Sum256(data))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

// TestRefusedImportLeavesCache: an import refused for its bundle or for
// the cache leaves the cache as it was, without even a lock file it did
// not have, and makes none where there was none.
func TestRefusedImportLeavesCache(t *testing.T) {
	sk, pk, _ := signing.Generate("refused-1")
	pub := filepath.Join(t.TempDir(), "key.pub")
	writeTestFile(t, pub, pk.String())
	base := "0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello.txt"
	good, _ := writeSignedBundle(t, sk, []string{base})
	stranger, _, _ := signing.Generate("stranger-1")
	untrusted, _ := writeSignedBundle(t, stranger, []string{base})
	dir := t.TempDir()
	unsigned := copyDir(t, good, filepath.Join(dir, "unsigned"), bundle.SigName)
	flipped := copyDir(t, good, filepath.Join(dir, "flipped"))
	nars, _ := filepath.Glob(filepath.Join(flipped, "nar", "*"))
	flipByte(t, nars[0], -1)
	notes := filepath.Join(dir, "notes")
	writeTestFile(t, filepath.Join(notes, "a.txt"), "hello\n")
	cut := filepath.Join(dir, "cut.tar")
	whole := tarBundle(t, sk, 4)
	writeTestFile(t, cut, string(whole[:len(whole)/2]))

	// Caches: one an import made (with its lock file), the same without
	// it (copied, or made by another tool), one for another store, and
	// none at all.
	imported := filepath.Join(t.TempDir(), "cache")
	if code, _, stderr := run(t, "import", other(t, sk), "--cache", imported, "--public-key", pub, "--no-progress"); code != 0 {
		t.Fatalf("import: %s", stderr)
	}
	if _, err := os.Stat(filepath.Join(imported, ".lock")); err != nil {
		t.Fatalf("an import left no lock file: %v", err)
	}
	caches := map[string]func(t *testing.T) string{
		"imported cache": func(t *testing.T) string { return copyTree(t, imported) },
		"imported cache without its lock file": func(t *testing.T) string {
			c := copyTree(t, imported)
			os.Remove(filepath.Join(c, ".lock"))
			return c
		},
		"cache for another store": func(t *testing.T) string { return writeCacheDir(t, "/other/store") },
		"no cache":                func(t *testing.T) string { return filepath.Join(t.TempDir(), "new", "cache") },
	}
	bundles := []struct {
		name, src string
		code      int
	}{
		{"good", good, -1}, // refused only by a cache for another store
		{"untrusted", untrusted, cli.ExitUntrusted},
		{"unsigned", unsigned, cli.ExitUntrusted},
		{"flipped NAR", flipped, cli.ExitCorrupt},
		{"not a bundle", notes, cli.ExitCorrupt},
		{"tar cut short", cut, cli.ExitCorrupt},
	}
	for cname, mk := range caches {
		for _, b := range bundles {
			// A cache for another store is refused before the NAR files
			// are checked, after the signatures.
			want := b.code
			if cname == "cache for another store" && (b.code == -1 || b.name == "flipped NAR") {
				want = cli.ExitUsage // a wrong argument
			} else if b.code == -1 {
				continue
			}
			t.Run(cname+"/"+b.name, func(t *testing.T) {
				cache := mk(t)
				before := treeOf(t, cache)
				code, _, stderr := run(t, "import", b.src, "--cache", cache, "--public-key", pub, "--no-progress")
				if code != want {
					t.Fatalf("import: exit %d, want %d\n%s", code, want, stderr)
				}
				if diff := cmp.Diff(before, treeOf(t, cache)); diff != "" {
					t.Errorf("the refused import changed %s (-before +after):\n%s", cache, diff)
				}
			})
		}
	}
}

// other is a bundle of another path than writeSignedBundle's first test's.
func other(t *testing.T, sk signing.SecretKey) string {
	t.Helper()
	b, _ := writeSignedBundle(t, sk, []string{"1c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-other.txt"})
	return b
}

// copyTree copies the directory tree src to a new directory.
func copyTree(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestRefusedImportLeavesBucket: TestRefusedImportLeavesCache's for an S3
// cache: a refused import leaves no object behind, its lock's included,
// and a bucket it made goes again.
func TestRefusedImportLeavesBucket(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.Bucket(t)
	good, _, pub := writeBundle(t, "0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello.txt")
	other, _, _ := writeBundle(t, "1c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-other.txt")
	if code, _, stderr := run(t, "import", good, "--cache", bucket, "--public-key", pub, "--no-progress"); code != cli.ExitOK {
		t.Fatalf("import: exit %d\n%s", code, stderr)
	}
	b, err := storage.Open(t.Context(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var objects func(dir string) map[string]string
	objects = func(dir string) map[string]string {
		all := map[string]string{}
		for info, err := range b.List(t.Context(), dir) {
			if err != nil {
				t.Fatal(err)
			}
			if info.Dir {
				maps.Copy(all, objects(info.Name))
				continue
			}
			all[info.Name] = info.Version
		}
		return all
	}
	before := objects("")
	dir := t.TempDir()
	flipped := copyDir(t, good, filepath.Join(dir, "flipped"))
	nars, _ := filepath.Glob(filepath.Join(flipped, "nar", "*"))
	flipByte(t, nars[0], -1)
	notes := filepath.Join(dir, "notes")
	writeTestFile(t, filepath.Join(notes, "a.txt"), "hello\n")
	for _, tt := range []struct {
		name, src string
		code      int
	}{
		{"untrusted", other, cli.ExitUntrusted}, // writeBundle's key is its own
		{"flipped NAR", flipped, cli.ExitCorrupt},
		{"not a bundle", notes, cli.ExitCorrupt},
	} {
		code, _, stderr := run(t, "import", tt.src, "--cache", bucket, "--public-key", pub, "--no-progress")
		if code != tt.code {
			t.Errorf("import of a bundle %s: exit %d, want %d\n%s", tt.name, code, tt.code, stderr)
		}
		if diff := cmp.Diff(before, objects("")); diff != "" {
			t.Errorf("the refused import of a bundle %s changed %s (-before +after):\n%s", tt.name, bucket, diff)
		}
	}
	// A bucket the refused import made goes again.
	gone := strings.Replace(bucket, "/b-", "/gone-", 1)
	if code, _, stderr := run(t, "import", notes, "--cache", gone, "--public-key", pub, "--no-progress"); code != cli.ExitCorrupt {
		t.Errorf("import into a new bucket: exit %d\n%s", code, stderr)
	}
	nb, err := storage.Open(t.Context(), gone)
	if err != nil {
		t.Fatal(err)
	}
	defer nb.Close()
	var listErr error
	for _, err := range nb.List(t.Context(), "") {
		listErr = err
		break
	}
	if !errors.Is(listErr, storage.ErrNoBucket) {
		t.Errorf("list %s after a refused import made it: %v, want no such bucket", gone, listErr)
	}
}
