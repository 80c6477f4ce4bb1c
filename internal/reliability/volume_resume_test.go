package reliability_test

import (
	"path/filepath"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/cache/cachetest"
)

// TestVolumePackResumed: a pack of volumes from an upstream, killed
// half-way, leaves its spool beside the output, and the next pack takes it
// up: it fetches again only what was in flight, every volume verifies,
// and no spool is left.
func TestVolumePackResumed(t *testing.T) {
	const n = 2000
	s := newSite(t, 1, 1)
	ch, err := cachetest.WriteChannel(t.Context(), t.TempDir(), s.n.StoreDir, n)
	if err != nil {
		t.Fatal(err)
	}
	upstream, nars := countingUpstream(t, ch.Dir)
	outDir := t.TempDir()
	args := []string{"pack", "--paths-from", ch.PathsFile, "--mode", "runtime", "--substituter", upstream,
		"--public-key", ch.KeyFile, "--no-build", "--no-progress", "--key", s.skFile,
		"--out", filepath.Join(outDir, "set.tar"), "--volume-size", "4MiB"}
	if !s.killWhen(t, func() bool { return nars.Load() >= n/2 }, args...) {
		t.Fatal("pack finished before it was killed, half-way")
	}
	fetched := nars.Load()
	nars.Store(0)
	s.run(t, args...)
	again := fetched + nars.Load() - n
	t.Logf("pack killed after %d of %d NAR files, resumed: %d fetched, %d of them again", fetched, n, nars.Load(), again)
	// pack's 8 downloads, twice.
	if again > 16 {
		t.Errorf("the resumed pack fetched %d NAR files the killed one had fetched, want at most 16", again)
	}
	vols, _ := filepath.Glob(filepath.Join(outDir, "set.*.tar"))
	if len(vols) < 2 {
		t.Fatalf("volumes %q, want a set of several", vols)
	}
	s.run(t, append(append([]string{"verify"}, vols...), "--public-key", s.pkFile)...)
	if left, _ := filepath.Glob(filepath.Join(outDir, "nix-airgap-spool-*")); len(left) != 0 {
		t.Errorf("spools left beside the volumes: %q", left)
	}
}
