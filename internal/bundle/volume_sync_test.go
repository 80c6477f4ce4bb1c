package bundle_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/synctrace"
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
	isRecord := func(p string) bool {
		return filepath.Base(p) == "volumes.json" || strings.HasPrefix(p, filepath.Join(cacheDir, bundle.RecordDir)+"/")
	}
	checked := 0
	for i, v := range vols {
		trace := filepath.Join(t.TempDir(), "trace")
		args := append(append(slices.Clone(synctrace.StraceArgs), "-o", trace, os.Args[0]), "-test.run=^TestVolumeImportSyncsRemovals$", "-test.count=1")
		cmd := exec.Command(strace, args...)
		cmd.Env = append(os.Environ(), volumeImportEnv+"="+v+"\n"+cacheDir+"\n"+pk.String())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("import volume %d under strace: %v\n%s", i+1, err, out)
		}
		f, err := os.Open(trace)
		if err != nil {
			t.Fatal(err)
		}
		events, err := synctrace.Parse(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range synctrace.Check(events, synctrace.Rules{Root: cacheDir, Record: isRecord}) {
			t.Errorf("volume %d: %s", i+1, v)
		}
		checked += removalsBeforeRecord(events, kept, isRecord)
	}
	if checked == 0 {
		t.Error("no import removed a kept file before writing a record: the test checks nothing")
	}
	if left, _ := filepath.Glob(filepath.Join(kept, "*")); len(left) != 0 {
		t.Errorf("kept files left after the set completed: %q", left)
	}
}

// removalsBeforeRecord counts the removals under kept that come before a
// record appears.
func removalsBeforeRecord(events []synctrace.Event, kept string, isRecord func(string) bool) (n int) {
	removed := 0
	for _, e := range events {
		switch {
		case e.Kind == synctrace.Remove && strings.HasPrefix(e.Path, kept+"/"):
			removed++
		case e.Kind == synctrace.Rename && isRecord(e.NewPath):
			n, removed = n+removed, 0
		}
	}
	return n
}
