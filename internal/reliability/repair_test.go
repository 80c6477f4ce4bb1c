package reliability_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/cli"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
)

// files hashes every visible file under dir (dot files and directories
// skipped), by relative name.
func files(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel != "." && strings.HasPrefix(filepath.Base(rel), ".") {
			if de.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !de.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		out[filepath.ToSlash(rel)] = hex.EncodeToString(sum[:])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.RemoveAll(to); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", from, to).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s %s: %v\n%s", from, to, err, out)
	}
}

// narinfosOf reads every narinfo of a healthy cache.
func narinfosOf(t *testing.T, dir string) []*narinfo.NarInfo {
	t.Helper()
	d, err := cache.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var out []*narinfo.NarInfo
	for ni, err := range d.NarInfos(t.Context()) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ni)
	}
	return out
}

// damage flips a byte in the middle of the NAR files of the first n
// narinfos, removes the NAR file of the next, and garbles the narinfo
// after it. It returns the store paths damaged.
func damage(t *testing.T, dir string, n int) []string {
	t.Helper()
	infos := narinfosOf(t, dir)
	if len(infos) < n+2 {
		t.Fatalf("a cache of %d paths cannot take %d damages", len(infos), n+2)
	}
	var hurt []string
	for _, ni := range infos[:n] {
		name := filepath.Join(dir, ni.URL)
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		data[len(data)/2] ^= 0x40
		if err := os.WriteFile(name, data, 0o644); err != nil {
			t.Fatal(err)
		}
		hurt = append(hurt, ni.StorePath.String())
	}
	gone := infos[n]
	if err := os.Remove(filepath.Join(dir, gone.URL)); err != nil {
		t.Fatal(err)
	}
	garbled := infos[n+1]
	if err := os.WriteFile(filepath.Join(dir, cache.NarInfoFile(garbled.StorePath.Hash)), []byte("StorePath: nonsense\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hurt = append(hurt, gone.StorePath.String(), garbled.StorePath.String())
	slices.Sort(hurt)
	return hurt
}

// verifyReport is what verify --json says of a cache, as far as these
// tests read it.
type verifyReport struct {
	OK       bool     `json:"ok"`
	Damaged  []string `json:"damaged"`
	Problems []struct {
		File  string   `json:"file"`
		Kind  string   `json:"kind"`
		Paths []string `json:"paths"`
	} `json:"problems"`
	Repair *struct {
		Command string `json:"command"`
		Bundles []struct {
			ID string `json:"id"`
		} `json:"bundles"`
	} `json:"repair"`
}

// TestRepair damages a cache (a flipped byte in NAR files, a NAR file
// gone, a garbled narinfo): verify exits 4 naming each damaged store path
// and saying how to repair; a plain import of the bundle changes nothing;
// import --repair mends it; verify is clean; stock Nix substitutes the
// mended paths.
func TestRepair(t *testing.T) {
	nixtest.Require(t)
	s := newSite(t, 20, 16)
	bundleDir := filepath.Join(t.TempDir(), "bundle")
	s.pack(t, bundleDir)
	cacheDir := filepath.Join(t.TempDir(), "cache")
	s.run(t, "import", bundleDir, "--cache", cacheDir, "--public-key", s.pkFile)
	good := files(t, cacheDir)
	hurt := damage(t, cacheDir, 3)

	out, err := s.cli(t.Context(), "verify", cacheDir, "--public-key", s.pkFile, "--json").Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != cli.ExitCorrupt {
		t.Fatalf("verify of a damaged cache: %v, want exit code %d\n%s", err, cli.ExitCorrupt, out)
	}
	var rep verifyReport
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("verify --json: %v\n%s", err, out)
	}
	if !slices.Equal(rep.Damaged, hurt) {
		t.Errorf("verify names damaged paths %q, want %q", rep.Damaged, hurt)
	}
	if rep.Repair == nil || !strings.Contains(rep.Repair.Command, "--repair") || len(rep.Repair.Bundles) != 1 {
		t.Errorf("verify's repair advice: %+v, want import --repair and the one bundle that carried the paths", rep.Repair)
	}
	text, _ := s.cli(t.Context(), "verify", cacheDir, "--public-key", s.pkFile).Output()
	for _, p := range hurt {
		if !strings.Contains(string(text), p) {
			t.Errorf("verify's report does not name %s:\n%s", p, text)
		}
	}

	// Importing the good bundle again is not enough: its paths are there.
	damaged := files(t, cacheDir)
	s.run(t, "import", bundleDir, "--cache", cacheDir, "--public-key", s.pkFile)
	if !sameFiles(damaged, files(t, cacheDir)) {
		t.Errorf("a plain import changed a damaged cache")
	}
	s.run(t, "import", bundleDir, "--cache", cacheDir, "--public-key", s.pkFile, "--repair")
	if !sameFiles(good, files(t, cacheDir)) {
		t.Errorf("after import --repair the cache differs from the undamaged one")
	}
	s.run(t, "verify", cacheDir, "--public-key", s.pkFile)

	s.n.Run(t, "nix-collect-garbage")
	if _, err := os.Stat(s.top.String()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after Nix's GC, %s: %v; want it gone", s.top, err)
	}
	s.n.Run(t, "nix", "copy", "--option", "trusted-public-keys", s.pk.String(), "--from", "file://"+cacheDir, s.top.String())
	for _, p := range hurt {
		s.n.Run(t, "nix-store", "--verify-path", p)
	}
}

func sameFiles(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestRepairCrash kills `import --repair` with SIGKILL at random moments.
// After every kill each file of the cache is either as the damage left it
// or as a good import makes it, and every narinfo mended is served by its
// NAR, mended first; a last run leaves the good cache.
func TestRepairCrash(t *testing.T) {
	nixtest.Require(t)
	rounds := envInt(t, "NIX_AIRGAP_CRASH_ROUNDS", 3)
	s := newSite(t, envInt(t, "NIX_AIRGAP_CRASH_PATHS", 50), 16)
	bundleDir := filepath.Join(t.TempDir(), "bundle")
	s.pack(t, bundleDir)
	goodDir := filepath.Join(t.TempDir(), "good")
	s.run(t, "import", bundleDir, "--cache", goodDir, "--public-key", s.pkFile)
	good := files(t, goodDir)
	damagedDir := filepath.Join(t.TempDir(), "damaged")
	copyDir(t, goodDir, damagedDir)
	damage(t, damagedDir, len(narinfosOf(t, goodDir))/3)
	damaged := files(t, damagedDir)
	args := []string{"import", bundleDir, "--cache", "", "--public-key", s.pkFile, "--repair", "--log-level", "error"}
	at := func(dir string) []string { a := slices.Clone(args); a[3] = dir; return a }

	probe := filepath.Join(t.TempDir(), "probe")
	copyDir(t, damagedDir, probe)
	st := crashStats{rounds: rounds}
	st.full = timed(t, func() { s.run(t, at(probe)...) })
	if !sameFiles(good, files(t, probe)) {
		t.Fatalf("an uninterrupted import --repair leaves another cache than a good import")
	}

	cacheDir := filepath.Join(t.TempDir(), "cache")
	st.kill(s, t, func() { copyDir(t, damagedDir, cacheDir) }, func() []string { return at(cacheDir) }, func(killed bool) bool {
		now := files(t, cacheDir)
		mended := 0
		for name, sum := range now {
			switch {
			case sum == good[name] && sum != damaged[name]:
				mended++
			case sum == good[name], sum == damaged[name]:
			default:
				t.Errorf("%s is neither as damaged nor as good", name)
			}
		}
		// A narinfo mended names a NAR file that is good.
		for name, sum := range now {
			h, ok := cache.NarInfoHashPart(name)
			if !ok || sum != good[name] || sum == damaged[name] {
				continue
			}
			ni, err := cache.OpenDir(cacheDir)
			if err != nil {
				t.Fatal(err)
			}
			info, err := ni.NarInfo(t.Context(), h)
			ni.Close()
			if err != nil {
				t.Fatal(err)
			}
			if now[info.URL] != good[info.URL] {
				t.Errorf("%s is mended but its NAR file %s is not", name, info.URL)
			}
		}
		switch {
		case killed && mended == 0:
			st.before++
		case killed:
			st.partial++
		}
		if !killed && !sameFiles(good, now) {
			t.Errorf("an import --repair that ran to its end after killed ones left another cache than a good import")
		}
		return !killed
	})
	s.run(t, at(cacheDir)...)
	if !sameFiles(good, files(t, cacheDir)) {
		t.Errorf("after the kills and a last import --repair the cache differs from a good one")
	}
	s.run(t, "verify", cacheDir, "--public-key", s.pkFile)
	t.Logf("import --repair: %s", st)
}
