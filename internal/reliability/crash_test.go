package reliability_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/cache/cachetest"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/signing"
)

// crashStats counts where the kills of a crash test landed.
type crashStats struct {
	rounds, killed, exited int
	// fresh rounds started from nothing; the others resumed what a
	// killed round left.
	fresh int
	// before counts kills that left nothing new visible; partial, kills
	// that left some but not all narinfos.
	before, partial int
	// full is how long an uninterrupted run takes, updated as rounds
	// finish on their own.
	full time.Duration
	// baseNarInfos and baseRecords are what the cache held before the
	// import, for an import into a cache that has a bundle already.
	baseNarInfos, baseRecords int
}

func (c crashStats) String() string {
	return fmt.Sprintf("%d rounds (%d from scratch, %d resuming a killed one; a whole run takes about %s): %d killed (%d before anything appeared, %d with part of the result visible), %d finished before the kill",
		c.rounds, c.fresh, c.rounds-c.fresh, c.full.Round(time.Millisecond), c.killed, c.before, c.partial, c.exited)
}

// delay picks when to kill: even rounds anywhere in a run, odd ones in
// its last 40%, where files move in.
func (c *crashStats) delay(round int) time.Duration {
	f := float64(c.full)
	if round%2 == 0 {
		return time.Duration(rand.Float64() * f * 1.05)
	}
	return time.Duration(f * (0.6 + 0.45*rand.Float64()))
}

// killRound starts args, SIGKILLs it after delay and reports whether the
// kill landed before the child finished, and how long the child ran.
func (s *site) killRound(t *testing.T, delay time.Duration, args ...string) (bool, time.Duration) {
	t.Helper()
	cmd := s.cli(t.Context(), args...)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("nix-airgap %v failed without being killed: %v", args, err)
		}
		return false, time.Since(start)
	case <-time.After(delay):
	}
	cmd.Process.Signal(syscall.SIGKILL)
	err := <-exited
	var ee *exec.ExitError
	if errors.As(err, &ee) && !ee.Exited() {
		return true, time.Since(start)
	}
	if err != nil {
		t.Fatalf("nix-airgap %v failed without being killed: %v", args, err)
	}
	return false, time.Since(start)
}

// round runs one kill round and keeps the stats: a fresh round that
// finished by itself refines the estimate of a whole run.
func (c *crashStats) round(s *site, t *testing.T, fresh bool, args ...string) bool {
	t.Helper()
	if fresh {
		c.fresh++
	}
	killed, took := s.killRound(t, c.delay(c.killed+c.exited), args...)
	if killed {
		c.killed++
	} else {
		c.exited++
		if fresh {
			c.full = (c.full + took) / 2
		}
	}
	return killed
}

// kill runs c.rounds rounds of args(), each SIGKILLed at a random moment.
// A round starts afresh at first and after one that finished the work,
// calling start first if it is not nil. After each round check reports
// what is wrong with t.Errorf, and says whether the work is finished.
func (c *crashStats) kill(s *site, t *testing.T, start func(), args func() []string, check func(killed bool) (finished bool)) {
	t.Helper()
	fresh := true
	for range c.rounds {
		if fresh && start != nil {
			start()
		}
		killed := c.round(s, t, fresh, args()...)
		fresh = check(killed)
		if t.Failed() {
			t.Fatalf("after round %s", c)
		}
	}
}

// checkImport checks the cache at location after a round of an import of
// want paths, counts where a kill landed and reports whether the import
// was complete: every narinfo and the bundle record.
func (c *crashStats) checkImport(t *testing.T, location string, want int, killed bool) (complete bool) {
	t.Helper()
	got := checkCache(t, location)
	switch {
	case killed && got.narinfos == c.baseNarInfos:
		c.before++
	case killed && got.narinfos < want:
		c.partial++
	}
	if got.dangling > 0 {
		t.Errorf("a narinfo published before one it refers to (%d references dangle)", got.dangling)
	}
	recorded := got.records > c.baseRecords
	if recorded && got.narinfos != want {
		t.Errorf("a bundle record with %d of %d narinfos", got.narinfos, want)
	}
	return got.narinfos == want && recorded
}

func timed(t *testing.T, f func()) time.Duration {
	t.Helper()
	start := time.Now()
	f()
	return time.Since(start)
}

// TestImportCrash kills `nix-airgap import` with SIGKILL at random
// moments, directory and tar bundles alike, and checks the cache after
// every kill: each narinfo's NAR complete with the right hash, nothing
// half-visible, a record only after every narinfo; then a last import
// completes, gives the same cache as an uninterrupted one, and stock Nix
// copies the closure from it.
func TestImportCrash(t *testing.T) {
	nixtest.Require(t)
	rounds := envInt(t, "NIX_AIRGAP_CRASH_ROUNDS", 3)
	s := newSite(t, envInt(t, "NIX_AIRGAP_CRASH_PATHS", 50), 16)
	dirBundle := filepath.Join(t.TempDir(), "bundle")
	s.pack(t, dirBundle)
	tarBundle := filepath.Join(t.TempDir(), "bundle.tar")
	s.pack(t, tarBundle)
	want := len(s.paths)

	var lastCache string
	for _, src := range []string{dirBundle, tarBundle} {
		cacheDir := filepath.Join(t.TempDir(), "cache") // outlives the subtest
		t.Run(filepath.Base(src), func(t *testing.T) {
			args := func(cacheDir string) []string {
				return []string{"import", src, "--cache", cacheDir, "--public-key", s.pkFile, "--log-level", "error"}
			}
			probe := filepath.Join(t.TempDir(), "probe")
			st := crashStats{rounds: rounds}
			st.full = timed(t, func() { s.run(t, args(probe)...) })
			if got := checkCache(t, probe); got.narinfos != want || got.dangling != 0 || !got.record {
				t.Fatalf("uninterrupted import: %+v, want %d narinfos", got, want)
			}

			st.kill(s, t, nil, func() []string { return args(cacheDir) }, func(killed bool) bool {
				complete := st.checkImport(t, cacheDir, want, killed)
				// A finished cache has nothing left to crash: start over.
				if complete {
					if err := os.RemoveAll(cacheDir); err != nil {
						t.Fatal(err)
					}
				}
				return complete
			})
			s.finishImport(t, args(cacheDir), cacheDir, probe, want)
			// gc removes the temp files killed imports left, and
			// nothing else of a cache of one bundle.
			left := temps(t, cacheDir)
			s.run(t, "gc", "--cache", cacheDir, "--keep-bundles", "1", "--log-level", "error")
			if again := temps(t, cacheDir); len(again) > 0 {
				t.Errorf("temp files left after gc: %q", again)
			}
			if nixtest.VisibleTreeHash(t, cacheDir) != nixtest.VisibleTreeHash(t, probe) {
				t.Errorf("gc of a cache of one bundle changed it")
			}
			t.Logf("import %s: %s; gc removed %d temp files the kills left", filepath.Base(src), st, len(left))
			lastCache = cacheDir
		})
	}
	if lastCache == "" {
		return
	}
	// Stock Nix takes the closure from the crashed-then-finished cache.
	s.n.Run(t, "nix-collect-garbage")
	if _, err := os.Stat(s.top.String()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after GC, %s: %v; want it gone", s.top, err)
	}
	s.n.Run(t, "nix", "copy", "--option", "trusted-public-keys", s.pk.String(), "--from", "file://"+lastCache, s.top.String())
	s.n.Run(t, "nix-store", "--verify-path", s.top.String())
}

// TestImportKillBetweenBatches imports a bundle of several group commits
// (a directory cache's narinfos appear in batches of 256, or a second's)
// and reads the cache beside it as serve does: every narinfo that appears
// has its NAR whole. Each round SIGKILLs the import as soon as it has
// published more narinfos, so that kills land between batches; after each
// kill the cache keeps its invariants, and a last run completes it as an
// uninterrupted import does.
func TestImportKillBetweenBatches(t *testing.T) {
	nixtest.Require(t)
	s := newSite(t, envInt(t, "NIX_AIRGAP_BATCH_PATHS", 1000), 2)
	src := filepath.Join(t.TempDir(), "bundle")
	s.pack(t, src)
	want := len(s.paths)
	args := func(cacheDir string) []string {
		return []string{"import", src, "--cache", cacheDir, "--public-key", s.pkFile, "--log-level", "error", "--no-progress"}
	}
	probe := filepath.Join(t.TempDir(), "probe")
	s.run(t, args(probe)...)

	cacheDir := filepath.Join(t.TempDir(), "cache")
	seen := map[string]bool{}
	between := 0
	for round := 0; round < 6; round++ {
		before := checkCache(t, cacheDir).narinfos
		if before == want {
			break
		}
		cmd := s.cli(t.Context(), args(cacheDir)...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		killed := false
	watch:
		for {
			select {
			case err := <-exited:
				if err != nil {
					t.Fatalf("round %d: import failed without being killed: %v", round, err)
				}
				break watch
			default:
			}
			if n := watchNarInfos(t, cacheDir, seen); n > before && n < want {
				cmd.Process.Signal(syscall.SIGKILL)
				<-exited
				killed = true
				break watch
			}
			time.Sleep(2 * time.Millisecond)
		}
		got := checkCache(t, cacheDir)
		if got.dangling > 0 {
			t.Errorf("round %d: %d references dangle", round, got.dangling)
		}
		if got.record && got.narinfos != want {
			t.Errorf("round %d: a bundle record with %d of %d narinfos", round, got.narinfos, want)
		}
		if killed && got.narinfos < want {
			between++
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	if between == 0 {
		t.Errorf("no kill landed between two batches of the %d narinfos", want)
	}
	s.finishImport(t, args(cacheDir), cacheDir, probe, want)
	t.Logf("%d paths: %d kills between batches", want, between)
}

// finishImport runs args, an import into cacheDir that kills interrupted,
// once more, and checks that it completes the cache as the uninterrupted
// import into probe did, with want narinfos and no staging left.
func (s *site) finishImport(t *testing.T, args []string, cacheDir, probe string, want int) {
	t.Helper()
	s.run(t, args...)
	if got := checkCache(t, cacheDir); got.narinfos != want || got.dangling != 0 || !got.record {
		t.Errorf("after the kills and a last import: %+v, want %d narinfos, all references, a record", got, want)
	}
	if a, b := nixtest.VisibleTreeHash(t, cacheDir), nixtest.VisibleTreeHash(t, probe); a != b {
		t.Errorf("the cache differs from an uninterrupted import's")
	}
	if stale, _ := filepath.Glob(filepath.Join(cacheDir, ".staging-*")); len(stale) > 0 {
		t.Errorf("staging left after the last import: %q", stale)
	}
	s.run(t, "verify", cacheDir, "--public-key", s.pkFile)
}

// watchNarInfos reads the narinfos in the cache directory dir that are
// not in seen yet, as a reader beside an import would, checks that each
// one's NAR is there and whole, and returns how many narinfos there are.
func watchNarInfos(t *testing.T, dir string, seen map[string]bool) int {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var d *cache.Cache
	n := 0
	for _, e := range ents {
		hashPart, ok := cache.NarInfoHashPart(e.Name())
		if !ok {
			continue
		}
		n++
		if seen[hashPart] {
			continue
		}
		seen[hashPart] = true
		if d == nil {
			if d, err = cache.OpenDir(dir); err != nil {
				t.Fatalf("a narinfo in %s before nix-cache-info: %v", dir, err)
			}
			defer d.Close()
		}
		ni, err := d.NarInfo(t.Context(), hashPart)
		if err != nil {
			t.Errorf("read beside the import: %v", err)
			continue
		}
		r, err := d.Open(t.Context(), ni.URL)
		if err != nil {
			t.Errorf("read beside the import: narinfo %s without its NAR: %v", ni.StorePath, err)
			continue
		}
		if err := cache.CheckNAR(r, ni); err != nil {
			t.Errorf("read beside the import: %v", err)
		}
		r.Close()
	}
	return n
}

// TestVolumeImportCrash imports a volume set one volume at a time, in a
// random order, SIGKILLing `nix-airgap import` of each volume at a random
// moment, then running it again to the end. After every kill and every
// run the cache keeps its invariants (each narinfo's NAR complete, no
// reference dangling, a record only with every narinfo); in the end it is
// what one uninterrupted import of every volume makes, with nothing kept.
// The set is whole NARs, or, packed --since a bundle the cache has, the
// next version of each path as a binary delta, several split across
// volumes.
func TestVolumeImportCrash(t *testing.T) {
	nixtest.Require(t)
	// Paths of about 32 KiB compressed, in volumes of 256 KiB that carry
	// a manifest of about 64 KiB: several per volume, some split.
	n := envInt(t, "NIX_AIRGAP_CRASH_PATHS", 50)/2 + 5
	const lines = 512
	t.Run("whole", func(t *testing.T) {
		s := newSite(t, n, lines)
		set := filepath.Join(t.TempDir(), "set.tar")
		s.pack(t, set, "--volume-size", "256KiB")
		volumeImportCrash(t, s, set, "", len(s.paths))
	})
	t.Run("deltas", func(t *testing.T) {
		s := newSite(t, n, lines)
		old := filepath.Join(t.TempDir(), "old")
		s.pack(t, old)
		base := filepath.Join(t.TempDir(), "base")
		s.run(t, "import", old, "--cache", base, "--public-key", s.pkFile, "--no-progress")
		next := s.addPathsSalted(t, "rel", "v2", n, lines)
		s.top = next[len(next)-1]
		set := filepath.Join(t.TempDir(), "set.tar")
		s.pack(t, set, "--volume-size", "256KiB", "--since", old)
		m := tarManifest(t, filepath.Join(filepath.Dir(set), "set.001.tar"))
		payload, deltas := narFileBytes(m)
		split := 0
		for _, v := range m.Volumes {
			for _, p := range v.Pieces {
				if strings.HasSuffix(p.File, bundle.DeltaExt) && p.Part == 1 {
					split++
				}
			}
		}
		t.Logf("%d of %d paths as deltas, %d of them split across volumes; %d bytes of NAR and delta files in %d volumes", deltas, len(m.Paths), split, payload, len(m.Volumes))
		if deltas < len(m.Paths)/2 || split == 0 {
			t.Fatalf("%d of %d paths as deltas, %d split; want most, some split", deltas, len(m.Paths), split)
		}
		volumeImportCrash(t, s, set, base, len(s.paths)+len(next))
	})
}

// volumeImportCrash is TestVolumeImportCrash's rounds for the set packed
// to set, into copies of the cache base ("" for none), want narinfos in
// the end.
func volumeImportCrash(t *testing.T, s *site, set, base string, want int) {
	rounds := envInt(t, "NIX_AIRGAP_CRASH_ROUNDS", 3)
	vols, _ := filepath.Glob(filepath.Join(filepath.Dir(set), "set.*.tar"))
	if len(vols) < 3 {
		t.Fatalf("%d volumes, want several", len(vols))
	}
	importArgs := func(cacheDir string, vols ...string) []string {
		return append(append([]string{"import"}, vols...), "--cache", cacheDir, "--public-key", s.pkFile, "--log-level", "error", "--no-progress")
	}
	start := func() string {
		if base == "" {
			return filepath.Join(t.TempDir(), "cache")
		}
		return copyTree(t, base)
	}
	st := crashStats{rounds: rounds}
	if base != "" {
		got := checkCache(t, base)
		st.baseNarInfos, st.baseRecords = got.narinfos, got.records
	}
	probe := start()
	// A whole run: importing a middle volume into a cache that has the
	// volumes before it.
	for _, v := range vols[:len(vols)/2] {
		st.full = timed(t, func() { s.run(t, importArgs(probe, v)...) })
	}
	s.run(t, importArgs(probe, vols...)...)
	if got := checkCache(t, probe); got.narinfos != want || got.records != st.baseRecords+1 {
		t.Fatalf("uninterrupted import: %+v, want %d narinfos", got, want)
	}

	for r := range rounds {
		cacheDir := start()
		order := slices.Clone(vols)
		rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, v := range order {
			killed := st.round(s, t, true, importArgs(cacheDir, v)...)
			st.checkImport(t, cacheDir, want, killed)
			if killed {
				s.run(t, importArgs(cacheDir, v)...)
				st.checkImport(t, cacheDir, want, false)
			}
			if t.Failed() {
				t.Fatalf("round %d, after %s", r, st)
			}
		}
		if !st.checkImport(t, cacheDir, want, false) {
			t.Errorf("round %d: every volume in: %+v, want %d narinfos and the record", r, checkCache(t, cacheDir), want)
		}
		if a, b := nixtest.VisibleTreeHash(t, cacheDir), nixtest.VisibleTreeHash(t, probe); a != b {
			t.Errorf("round %d: the cache differs from an uninterrupted import's", r)
		}
		if left, _ := filepath.Glob(filepath.Join(cacheDir, "nix-airgap", "volumes", "*")); len(left) > 0 {
			t.Errorf("round %d: kept files left once the set is in: %q", r, left)
		}
		if err := os.RemoveAll(cacheDir); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("import of %d volumes, one at a time, %d times over: %d kill rounds, %d killed mid-run (%d with part of the set visible), %d finished first; a one-volume import takes about %s",
		len(vols), rounds, st.killed+st.exited, st.killed, st.partial, st.exited, st.full.Round(time.Millisecond))
}

// TestPackCrash kills `nix-airgap pack` with SIGKILL at random moments,
// into a directory and into a .tar, and checks the output after every kill:
// a directory's narinfos each have their complete NAR, a manifest.json there
// always verifies, a .tar exists only complete. A last pack completes and
// reuses what the killed ones wrote.
func TestPackCrash(t *testing.T) {
	nixtest.Require(t)
	rounds := envInt(t, "NIX_AIRGAP_CRASH_ROUNDS", 3)
	s := newSite(t, envInt(t, "NIX_AIRGAP_CRASH_PATHS", 50), 16)
	kr := signing.NewKeyring(s.pk)
	want := len(s.paths)
	verify := func(src string) error {
		rep, err := bundle.Verify(t.Context(), src, bundle.VerifyOptions{Keys: kr})
		if err == nil && rep.Paths != want {
			return fmt.Errorf("%d paths, want %d", rep.Paths, want)
		}
		return err
	}

	t.Run("dir", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "bundle")
		args := []string{"pack", s.top.String(), "--mode", "runtime", "--no-build", "--no-progress", "--key", s.skFile, "--out", out, "--log-level", "error"}
		probe := filepath.Join(t.TempDir(), "probe")
		st := crashStats{rounds: rounds}
		st.full = timed(t, func() { s.pack(t, probe) })
		st.kill(s, t, nil, func() []string { return args }, func(killed bool) bool {
			got := checkCache(t, out)
			switch {
			case killed && got.narinfos == 0:
				st.before++
			case killed && got.narinfos < want:
				st.partial++
			}
			if _, err := os.Stat(filepath.Join(out, bundle.ManifestName)); err != nil {
				return false
			}
			if err := verify(out); err != nil {
				t.Errorf("a killed pack left a manifest.json that does not verify: %v", err)
			}
			// A finished bundle has nothing left to crash: start over.
			if err := os.RemoveAll(out); err != nil {
				t.Fatal(err)
			}
			return true
		})
		s.run(t, args...)
		if err := verify(out); err != nil {
			t.Errorf("after the kills and a last pack: %v", err)
		}
		if a, b := nixtest.VisibleTreeHash(t, filepath.Join(out, "nar")), nixtest.VisibleTreeHash(t, filepath.Join(probe, "nar")); a != b {
			t.Errorf("NAR files differ from an uninterrupted pack's")
		}
		t.Logf("pack to a directory: %s", st)
	})

	t.Run("tar", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "bundle.tar")
		args := []string{"pack", s.top.String(), "--mode", "runtime", "--no-build", "--no-progress", "--key", s.skFile, "--out", out, "--log-level", "error"}
		st := crashStats{rounds: rounds}
		st.full = timed(t, func() { s.run(t, args...) })
		whole := tarPaths(t, out, kr)
		if err := os.Remove(out); err != nil {
			t.Fatal(err)
		}
		// A round resumes the tar the one before left, unless that one
		// finished.
		st.kill(s, t, nil, func() []string { return args }, func(killed bool) bool {
			if _, err := os.Stat(out); err == nil {
				if err := verify(out); err != nil {
					t.Errorf("a killed pack left %s that does not verify: %v", out, err)
				}
				os.Remove(out)
				return true
			}
			if !killed {
				return false
			}
			n := 0
			if temp := tempOf(t, out); temp != "" {
				var err error
				if _, n, err = cachetest.TarNarInfos(temp); err != nil {
					t.Fatal(err)
				}
			}
			switch {
			case n == 0:
				st.before++
			case n < want:
				st.partial++
			}
			return false
		})
		temp := tempOf(t, out)
		inTemp := 0
		if temp != "" {
			var err error
			if _, inTemp, err = cachetest.TarNarInfos(temp); err != nil {
				t.Fatal(err)
			}
		}
		var sum struct {
			Event  string `json:"event"`
			Reused int    `json:"reused"`
		}
		for line := range strings.Lines(s.run(t, append(args, "--json")...)) {
			if json.Unmarshal([]byte(line), &sum); sum.Event == "done" {
				break
			}
		}
		if sum.Event != "done" {
			t.Fatal("the last pack gave no summary")
		}
		if sum.Reused != inTemp {
			t.Errorf("the last pack reused %d paths, want the %d whose narinfos the killed pack's tar held", sum.Reused, inTemp)
		}
		if err := verify(out); err != nil {
			t.Errorf("last pack: %v", err)
		}
		if diff := cmp.Diff(whole, tarPaths(t, out, kr)); diff != "" {
			t.Errorf("the last pack's paths differ from an uninterrupted pack's (-want +got):\n%s", diff)
		}
		if left := tempOf(t, out); left != "" {
			t.Errorf("the last pack left %s", left)
		}
		t.Logf("pack to a tar: %s; the last pack reused %d of %d paths from the killed pack's tar", st, sum.Reused, want)
	})
}

// tempOf is the temp file a killed pack into the tar out left, or "".
func tempOf(t *testing.T, out string) string {
	t.Helper()
	temps, _ := filepath.Glob(filepath.Join(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*"))
	if len(temps) > 1 {
		t.Errorf("killed packs left %d temp files, want at most one: %q", len(temps), temps)
	}
	if len(temps) == 0 {
		return ""
	}
	return temps[0]
}

// tarPaths verifies the tar bundle name and lists its paths.
func tarPaths(t *testing.T, name string, kr *signing.Keyring) []string {
	t.Helper()
	rep, err := bundle.Verify(t.Context(), name, bundle.VerifyOptions{Keys: kr, Deep: true})
	if err != nil {
		t.Fatalf("verify --deep %s: %v", name, err)
	}
	var paths []string
	for _, e := range rep.Manifest.Paths {
		paths = append(paths, e.Path.String())
	}
	return paths
}
