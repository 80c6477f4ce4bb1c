package reliability_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/nixtest"
)

// smallFS mounts a tmpfs of size bytes for the test. It needs root; where
// there is none it skips, except in CI, which must run it.
func smallFS(t *testing.T, size int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("the disk-full test needs root to mount a tmpfs, and CI must run it")
		}
		t.Skip("the disk-full test needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size="+strconv.Itoa(size)); err != nil {
		t.Fatalf("mount a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// free is the space left on the filesystem holding dir.
func free(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// pages is the space n bytes take on a tmpfs.
func pages(n int64) int64 { return (n + 4095) / 4096 * 4096 }

// TestImportDiskFull imports onto a 4 MiB tmpfs: a bundle bigger than the
// filesystem is refused with ENOSPC named and the cache byte for byte as
// it was; a bundle whose NAR files fit but not all its narinfos stops
// part-way through publishing and leaves every published narinfo with
// its NAR and its references. Once there is room, importing again
// finishes.
func TestImportDiskFull(t *testing.T) {
	nixtest.Require(t)
	fs := smallFS(t, 4<<20)
	s := newSite(t, 8, 16)
	big := s.addPaths(t, "big", 48, 1024) // 48 × 129 KiB of hex
	mid := s.addPaths(t, "mid", 40, 256)  // 40 × 32 KiB
	midDir := filepath.Join(t.TempDir(), "mid")
	s.packPath(t, mid[len(mid)-1], midDir, "--compression", "none")
	small := filepath.Join(t.TempDir(), "small")
	s.pack(t, small)
	bigDir := filepath.Join(t.TempDir(), "big")
	s.packPath(t, big[len(big)-1], bigDir, "--compression", "none")
	bigTar := filepath.Join(t.TempDir(), "big.tar")
	s.packPath(t, big[len(big)-1], bigTar, "--compression", "none")

	cacheDir := filepath.Join(fs, "cache")
	s.run(t, "import", small, "--cache", cacheDir, "--public-key", s.pkFile)
	before, freeBefore := nixtest.VisibleTreeHash(t, cacheDir), free(t, fs)

	importErr := func(t *testing.T, src string) string {
		t.Helper()
		out, err := s.cli(t.Context(), "import", src, "--cache", cacheDir, "--public-key", s.pkFile).CombinedOutput()
		if err == nil {
			t.Fatalf("import %s onto a full filesystem succeeded:\n%s", src, out)
		}
		if !strings.Contains(string(out), "no space left on device") {
			t.Errorf("import %s: the error does not name ENOSPC:\n%s", src, out)
		}
		return string(out)
	}

	for _, src := range []string{bigDir, bigTar} {
		t.Run("bigger than the filesystem/"+filepath.Base(src), func(t *testing.T) {
			msg := importErr(t, src)
			t.Logf("import said: %s", strings.TrimSpace(msg))
			if nixtest.VisibleTreeHash(t, cacheDir) != before {
				t.Error("a failed import changed the cache")
			}
			if got := free(t, fs); got != freeBefore {
				t.Errorf("free space %d after the failed import, %d before: staging left behind", got, freeBefore)
			}
			if got := checkCache(t, cacheDir); got.narinfos != len(s.paths) || got.dangling != 0 {
				t.Errorf("cache after the failed import: %+v", got)
			}
		})
	}

	t.Run("full while publishing", func(t *testing.T) {
		// Room for the staged NAR files and ten narinfos, not 40.
		var need int64
		nars, _ := filepath.Glob(filepath.Join(midDir, "nar", "*"))
		for _, n := range nars {
			fi, err := os.Stat(n)
			if err != nil {
				t.Fatal(err)
			}
			need += pages(fi.Size())
		}
		filler := filepath.Join(fs, "filler")
		fill := free(t, fs) - need - 10*4096
		if fill < 0 {
			t.Fatalf("the NAR files (%d bytes) do not fit in %d", need, free(t, fs))
		}
		if err := os.WriteFile(filler, make([]byte, fill), 0o644); err != nil {
			t.Fatal(err)
		}
		msg := importErr(t, midDir)
		t.Logf("import said: %s", strings.TrimSpace(msg))
		got := checkCache(t, cacheDir)
		if got.dangling != 0 || got.records != 1 {
			t.Errorf("cache after running out of space: %+v", got)
		}
		t.Logf("published %d of %d narinfos before the disk filled", got.narinfos-len(s.paths), len(mid))
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		s.run(t, "import", midDir, "--cache", cacheDir, "--public-key", s.pkFile)
		if got := checkCache(t, cacheDir); got.narinfos != len(s.paths)+len(mid) || got.dangling != 0 || got.records != 2 {
			t.Errorf("cache after importing again with room: %+v", got)
		}
		s.run(t, "verify", cacheDir, "--public-key", s.pkFile)
	})
}
