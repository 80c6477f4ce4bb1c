package reliability_test

import (
	"errors"
	iofs "io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/progress"
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
// space free is refused before anything is written, naming what is free
// and what it needs, and the cache is byte for byte as it was; one given
// as a stream, whose manifest comes last, runs out of space and says what
// was free as it began. A bundle whose NAR files fit but not all its
// narinfos (the disk filling meanwhile) stops part-way through publishing
// and leaves every published narinfo with its NAR and its references.
// Once there is room, importing again finishes.
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
	unchanged := func(t *testing.T) {
		t.Helper()
		if nixtest.VisibleTreeHash(t, cacheDir) != before {
			t.Error("a failed import changed the cache")
		}
		if got := free(t, fs); got != freeBefore {
			t.Errorf("free space %d after the failed import, %d before: staging left behind", got, freeBefore)
		}
		if got := checkCache(t, cacheDir); got.narinfos != len(s.paths) || got.dangling != 0 {
			t.Errorf("cache after the failed import: %+v", got)
		}
	}

	// importErr imports src (a stream on stdin for "-") and returns what
	// the refusal said; it fails unless the exit code is 1, the code of
	// any failure without a more specific one.
	importErr := func(t *testing.T, src string, stdin string) string {
		t.Helper()
		cmd := s.cli(t.Context(), "import", src, "--cache", cacheDir, "--public-key", s.pkFile)
		if stdin != "" {
			f, err := os.Open(stdin)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			cmd.Stdin = f
		}
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("import %s onto a full filesystem succeeded:\n%s", src, out)
		}
		if code := cmd.ProcessState.ExitCode(); code != 1 {
			t.Errorf("import %s: exit code %d, want 1:\n%s", src, code, out)
		}
		t.Logf("import said: %s", strings.TrimSpace(string(out)))
		return string(out)
	}

	for _, src := range []string{bigDir, bigTar} {
		t.Run("bigger than the space free/"+filepath.Base(src), func(t *testing.T) {
			msg := importErr(t, src, "")
			// 48 NAR files of 129 KiB, and their narinfos.
			want := regexp.MustCompile(`import \S+: ` + regexp.QuoteMeta(cacheDir) + ` has (\d+(\.\d+)? [KM]iB) free, this import needs about (\d+(\.\d+)? MiB) \(48 paths\): free space or use another --cache`)
			m := want.FindStringSubmatch(msg)
			if m == nil {
				t.Fatalf("the refusal does not say what is free and what is needed; want %s", want)
			}
			if m[1] != progress.IEC(uint64(freeBefore)) {
				t.Errorf("the refusal says %s free, statfs %s", m[1], progress.IEC(uint64(freeBefore)))
			}
			if need, _ := strconv.ParseFloat(strings.TrimSuffix(m[3], " MiB"), 64); need < 48*129.0/1024 || need > 8 {
				t.Errorf("the refusal says %s needed, for 48 files of 129 KiB", m[3])
			}
			if strings.Contains(msg, "no space left on device") {
				t.Error("refused up front, yet it ran out of space")
			}
			unchanged(t)
		})
	}

	t.Run("bigger than the space free/stream", func(t *testing.T) {
		msg := importErr(t, "-", bigTar)
		if !strings.Contains(msg, "no space left on device") {
			t.Errorf("the error does not name ENOSPC")
		}
		want := "the file system of " + cacheDir + " (mounted on " + fs + ") had " + progress.IEC(uint64(freeBefore)) + " free as the import began"
		if !strings.Contains(msg, want) {
			t.Errorf("the error does not say %q", want)
		}
		unchanged(t)
	})

	t.Run("counts only what it adds", func(t *testing.T) {
		// A cache with the first 20 of mid's 40 paths: the import of
		// mid needs room for the other 20 only.
		half := filepath.Join(t.TempDir(), "half")
		s.packPath(t, mid[19], half, "--compression", "none")
		partial := filepath.Join(fs, "partial")
		defer os.RemoveAll(partial)
		s.run(t, "import", half, "--cache", partial, "--public-key", s.pkFile)
		filler := filepath.Join(fs, "filler")
		defer os.Remove(filler)
		if err := os.WriteFile(filler, make([]byte, free(t, fs)-256<<10), 0o644); err != nil {
			t.Fatal(err)
		}
		was := nixtest.VisibleTreeHash(t, partial)
		cmd := s.cli(t.Context(), "import", midDir, "--cache", partial, "--public-key", s.pkFile)
		out, err := cmd.CombinedOutput()
		t.Logf("import said: %s", strings.TrimSpace(string(out)))
		if err == nil || cmd.ProcessState.ExitCode() != 1 {
			t.Fatalf("import into a cache with about 256 KiB free: %v, want exit code 1", err)
		}
		want := regexp.MustCompile(regexp.QuoteMeta(partial) + ` has \d+\.\d KiB free, this import needs about (\d+\.\d) KiB \(20 paths\)`)
		m := want.FindStringSubmatch(string(out))
		if m == nil {
			t.Fatalf("the refusal does not match %s", want)
		}
		// 20 NAR files of 32 KiB and a page, and 20 narinfos.
		if need, _ := strconv.ParseFloat(m[1], 64); need < 20*36 || need > 20*48 {
			t.Errorf("the refusal says %s KiB needed, for 20 paths of 32 KiB", m[1])
		}
		if nixtest.VisibleTreeHash(t, partial) != was {
			t.Error("the refused import changed the cache")
		}
	})

	t.Run("volumes one at a time", func(t *testing.T) {
		// Room for one volume of the set, not the whole: the first
		// volume alone imports, and the set is then refused for what
		// the others add.
		set := filepath.Join(t.TempDir(), "mid.tar")
		s.packPath(t, mid[len(mid)-1], set, "--compression", "none", "--volume-size", "400KiB")
		vols := bundleFiles(t, set)
		if len(vols) < 3 {
			t.Fatalf("want at least 3 volumes, got %v", vols)
		}
		first, err := os.Stat(vols[0])
		if err != nil {
			t.Fatal(err)
		}
		cache := filepath.Join(fs, "vols")
		defer os.RemoveAll(cache)
		filler := filepath.Join(fs, "filler")
		defer os.Remove(filler)
		if err := os.WriteFile(filler, make([]byte, free(t, fs)-first.Size()-256<<10), 0o644); err != nil {
			t.Fatal(err)
		}
		s.run(t, "import", vols[0], "--cache", cache, "--public-key", s.pkFile)
		out, err := s.cli(t.Context(), append(append([]string{"import"}, vols[1:]...), "--cache", cache, "--public-key", s.pkFile)...).CombinedOutput()
		t.Logf("import said: %s", strings.TrimSpace(string(out)))
		if err == nil || !strings.Contains(string(out), "free, this import needs about") {
			t.Errorf("the rest of the set was not refused up front: %v", err)
		}
	})

	// meanwhile imports src into cache, and once it has checked the
	// space and begun staging, stops it while take takes some of the
	// space, as another writer would; it returns what the import said,
	// which must be a failure with exit code 1.
	meanwhile := func(t *testing.T, src, cache string, take func()) string {
		t.Helper()
		cmd := s.cli(t.Context(), "import", src, "--cache", cache, "--public-key", s.pkFile)
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) {
			if nars, _ := filepath.Glob(filepath.Join(cache, ".staging-*", "nar", "*")); len(nars) > 0 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatalf("stop the import: %v", err)
		}
		take()
		cmd.Process.Signal(syscall.SIGCONT)
		err := cmd.Wait()
		t.Logf("import said: %s", strings.TrimSpace(out.String()))
		if err == nil {
			t.Fatal("import onto a disk filled meanwhile succeeded")
		}
		if code := cmd.ProcessState.ExitCode(); code != 1 {
			t.Errorf("exit code %d, want 1", code)
		}
		return out.String()
	}
	filledSays := func(cache string, free int64) *regexp.Regexp {
		return regexp.MustCompile(`no space left on device; the file system of ` + regexp.QuoteMeta(cache) + ` \(mounted on ` + regexp.QuoteMeta(fs) +
			`\) had ` + regexp.QuoteMeta(progress.IEC(uint64(free))) + ` free as the import began, and it needed about \d+(\.\d+)? [KM]iB`)
	}
	filler := filepath.Join(fs, "filler")

	t.Run("filled while staging", func(t *testing.T) {
		// All the space goes: the error says what was free as the
		// import began and what it needed. A cache of its own, which
		// the refused import removes, leaves the next test the space
		// and the cache it had.
		other := filepath.Join(fs, "other")
		freeAtStart := free(t, fs)
		msg := meanwhile(t, midDir, other, func() {
			os.WriteFile(filler, make([]byte, free(t, fs)), 0o644) // ENOSPC at the end: full
		})
		if want := filledSays(other, freeAtStart); !want.MatchString(msg) {
			t.Errorf("the error does not match %s", want)
		}
		if _, err := os.Stat(other); !errors.Is(err, iofs.ErrNotExist) {
			t.Errorf("the cache the refused import made is still there: %v", err)
		}
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("full while publishing", func(t *testing.T) {
		// Room left for the NAR files still to stage, the manifest
		// import keeps while it stages, and ten narinfos, not 40.
		var nars, staged int64
		msg := meanwhile(t, midDir, cacheDir, func() {
			all, _ := filepath.Glob(filepath.Join(midDir, "nar", "*"))
			for _, n := range all {
				fi, err := os.Stat(n)
				if err != nil {
					t.Fatal(err)
				}
				nars += pages(fi.Size())
			}
			in, _ := filepath.Glob(filepath.Join(cacheDir, ".staging-*", "nar", "*"))
			for _, n := range in {
				var st syscall.Stat_t
				if syscall.Stat(n, &st) == nil {
					staged += st.Blocks * 512
				}
			}
			mf, err := os.Stat(filepath.Join(midDir, "manifest.json"))
			if err != nil {
				t.Fatal(err)
			}
			fill := free(t, fs) - (nars - staged) - pages(mf.Size()) - 10*4096
			if fill < 0 {
				t.Fatalf("the NAR files (%d bytes, %d staged) do not fit in %d", nars, staged, free(t, fs))
			}
			if err := os.WriteFile(filler, make([]byte, fill), 0o644); err != nil {
				t.Fatal(err)
			}
		})
		if want := filledSays(cacheDir, freeBefore); !want.MatchString(msg) {
			t.Errorf("the error does not match %s", want)
		}
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
