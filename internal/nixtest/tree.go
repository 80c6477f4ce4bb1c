package nixtest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TreeHash hashes every name, mode and content under dir, so that a test
// can tell that what it ran left a directory as it was. A cache's lock
// file (.lock), which records who took the lock last, does not count.
func TreeHash(t testing.TB, dir string) string {
	t.Helper()
	return treeHash(t, dir, func(rel string) bool { return rel == ".lock" })
}

// VisibleTreeHash is TreeHash of what readers of dir see: nothing whose
// name starts with a dot (the lock file, temp files, staging
// directories) counts.
func VisibleTreeHash(t testing.TB, dir string) string {
	t.Helper()
	return treeHash(t, dir, func(rel string) bool { return strings.HasPrefix(filepath.Base(rel), ".") })
}

func treeHash(t testing.TB, dir string, skip func(rel string) bool) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel != "." && skip(rel) {
			if de.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		fi, err := de.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %v\n", rel, fi.Mode())
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "%x\n", sha256.Sum256(data))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
