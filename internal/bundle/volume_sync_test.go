package bundle_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/signing"
)

// volumeImportEnv makes the test binary a volume import for
// TestVolumeImportSyncsRemovals to trace: VOLUME CACHE KEY.
const volumeImportEnv = "NIX_AIRGAP_TEST_VOLUME_IMPORT"

// TestVolumeImportSyncsRemovals traces imports of a set one volume at a
// time, first to last, and checks that what each removes of what was kept
// (the copies of the paths it published, and at the end everything) is
// durable, its directory fsynced after the removal, before the set's
// volumes.json or the bundle's record is written, and before the import
// returns: a power cut never leaves a record beside kept files that come
// back, or a record of volumes whose files are gone.
func TestVolumeImportSyncsRemovals(t *testing.T) {
	if args := os.Getenv(volumeImportEnv); args != "" {
		f := strings.Split(args, "\n")
		pk, err := signing.ParsePublicKey(f[2])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bundle.Import(context.Background(), f[0], f[1], bundle.ImportOptions{Keys: signing.NewKeyring(pk)}); err != nil {
			t.Fatal(err)
		}
		return
	}
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Skip("no strace")
	}
	sk, pk, _ := signing.Generate("volume-test-1")
	vols := volumeSet(t, sk, 12, 40<<10, "")
	cacheDir := filepath.Join(t.TempDir(), "cache")
	kept := filepath.Join(cacheDir, "nix-airgap", "volumes")
	checked := 0
	for i, v := range vols {
		trace := filepath.Join(t.TempDir(), "trace")
		cmd := exec.Command(strace, "-f", "-y", "-qq", "-o", trace, "-e", "trace=unlinkat,fsync,syncfs,renameat,renameat2",
			os.Args[0], "-test.run=^TestVolumeImportSyncsRemovals$", "-test.count=1")
		cmd.Env = append(os.Environ(), volumeImportEnv+"="+v+"\n"+cacheDir+"\n"+pk.String())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("import volume %d under strace: %v\n%s", i+1, err, out)
		}
		n, problems := unsyncedRemovals(t, trace, kept)
		checked += n
		for _, p := range problems {
			t.Errorf("volume %d: %s", i+1, p)
		}
	}
	if checked == 0 {
		t.Error("no import removed a kept file before writing a record: the test checks nothing")
	}
	if left, _ := filepath.Glob(filepath.Join(kept, "*")); len(left) != 0 {
		t.Errorf("kept files left after the set completed: %q", left)
	}
}

var (
	traceCall   = regexp.MustCompile(`^(\d+) +(\w+)\((.*)$`)
	traceResume = regexp.MustCompile(`^(\d+) +<\.\.\. (\w+) resumed>`)
	traceFD     = regexp.MustCompile(`^-?\w+<([^>]*)>`)
	traceArgs   = regexp.MustCompile(`\w+<([^>]*)>, "([^"]*)"`)
)

// unsyncedRemovals reads an strace -f -y of an import and returns how
// many removals under kept came before a record was written, and a
// problem for each removal not fsynced before the next record, or at
// all.
func unsyncedRemovals(t *testing.T, trace, kept string) (checked int, problems []string) {
	f, err := os.Open(trace)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pending := map[string]string{} // unsynced removal → its directory
	removed := 0                   // since the last record
	started := map[string]string{} // pid → the call's line, while unfinished
	done := func(call, args string) {
		switch call {
		case "syncfs":
			clear(pending)
		case "fsync":
			if m := traceFD.FindStringSubmatch(args); m != nil {
				for name, dir := range pending {
					if dir == m[1] || strings.HasPrefix(dir, m[1]+"/") && m[1] == kept {
						delete(pending, name)
					}
				}
			}
		case "unlinkat", "renameat", "renameat2":
			if strings.Contains(args, "= -1") {
				return
			}
			m := traceArgs.FindAllStringSubmatch(args, -1)
			if len(m) == 0 {
				return
			}
			last := m[len(m)-1]
			name := last[2]
			if !filepath.IsAbs(name) {
				name = filepath.Join(last[1], name)
			}
			if call == "unlinkat" {
				if strings.HasPrefix(name, kept+"/") {
					pending[name] = filepath.Dir(name)
					removed++
				}
				return
			}
			if filepath.Base(name) == "volumes.json" || strings.Contains(name, "/nix-airgap/bundles/") {
				checked, removed = checked+removed, 0
				for removed := range pending {
					problems = append(problems, "removed "+removed+", then wrote "+name+" with no fsync of its directory between")
				}
				clear(pending)
			}
		}
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := traceResume.FindStringSubmatch(line); m != nil {
			done(m[2], started[m[1]]+line)
			continue
		}
		m := traceCall.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if strings.HasSuffix(line, "<unfinished ...>") {
			started[m[1]] = m[3]
			continue
		}
		done(m[2], m[3])
	}
	for removed := range pending {
		problems = append(problems, "removed "+removed+" and never fsynced its directory")
	}
	return checked, problems
}
