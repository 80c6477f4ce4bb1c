package cli_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/progress"
)

// TestBinaryDeltaCommands runs plan, pack, verify and import of binary
// deltas through the command line: a deep change of the test world
// rebuilds its runtime paths with new store paths in their files; plan
// --since says what deltas save, pack makes them and says the same,
// verify --deep --against the site's cache rebuilds them, import does,
// and --binary-deltas=false makes none.
func TestBinaryDeltaCommands(t *testing.T) {
	w, tmp, keyFile, pubFile := newKeyedWorld(t, "cli-test-1")
	target := func(deep string) []string {
		return []string{"--file", w.File, "--attr", "toplevel", "--argstr", "deep", deep, "--mode", "runtime"}
	}
	base, site := filepath.Join(tmp, "base"), filepath.Join(tmp, "site")
	if code, _, stderr := run(t, append([]string{"pack", "--secret-key", keyFile, "--out", base, "--no-progress"}, target("")...)...); code != 0 {
		t.Fatalf("pack the base: exit %d\n%s", code, stderr)
	}
	if code, _, stderr := run(t, "import", base, "--cache", site, "--public-key", pubFile, "--no-progress"); code != 0 {
		t.Fatalf("import the base: exit %d\n%s", code, stderr)
	}

	// pack realises the deep change; plan then sees it in the store.
	delta := filepath.Join(tmp, "delta")
	code, stdout, stderr := run(t, append([]string{"pack", "--json", "--secret-key", keyFile, "--out", delta, "--since", base}, target("x")...)...)
	if code != 0 {
		t.Fatalf("pack --since: exit %d\n%s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	var sum struct {
		Event    string `json:"event"`
		Paths    int    `json:"paths"`
		NarBytes uint64 `json:"narBytes"`
		Deltas   struct {
			Paths int `json:"paths"`
		} `json:"deltas"`
	}
	for _, l := range lines {
		if strings.Contains(l, `"event":"done"`) {
			json.Unmarshal([]byte(l), &sum)
		}
	}
	if sum.Event != "done" || sum.Deltas.Paths == 0 {
		t.Fatalf("pack --since --json: summary %+v; want some paths as binary deltas\n%s", sum, stdout)
	}

	code, stdout, stderr = run(t, append([]string{"plan", "--since", base, "--json"}, target("x")...)...)
	var pl struct {
		Since struct {
			InBases    int `json:"inBases"`
			DeltaPaths int `json:"deltaPaths"`
		} `json:"since"`
	}
	if code != 0 || json.Unmarshal([]byte(stdout), &pl) != nil || pl.Since.DeltaPaths != sum.Deltas.Paths {
		t.Errorf("plan --since --json: exit %d, since %+v; want %d binary deltas, as pack made\n%s", code, pl.Since, sum.Deltas.Paths, stderr)
	}
	checkJSONScheme(t, "plan", stdout)
	code, stdout, _ = run(t, append([]string{"plan", "--since", base}, target("x")...)...)
	if code != 0 || !strings.Contains(stdout, "binary deltas (of paths in the local store): ") || !strings.Contains(stdout, "saved") {
		t.Errorf("plan --since: exit %d, output:\n%s\nwant what binary deltas save", code, stdout)
	}
	// What plan says is left to carry is what pack carried.
	if carry := fmt.Sprintf("; %s to carry (%s NAR)", progress.Plural(sum.Paths, "path"), progress.IEC(sum.NarBytes)); !strings.Contains(stdout, carry) {
		t.Errorf("plan --since: output:\n%s\nwant %q, as pack carried", stdout, carry)
	}

	code, stdout, stderr = run(t, "verify", delta, "--deep", "--against", site, "--public-key", pubFile)
	if code != 0 || !strings.Contains(stdout, " rebuilt from ") {
		t.Errorf("verify --deep --against: exit %d\n%s%s\nwant the NARs rebuilt", code, stdout, stderr)
	}
	code, stdout, stderr = run(t, "verify", delta, "--deep", "--public-key", pubFile)
	if code != 0 || !strings.Contains(stdout, "binary delta") {
		t.Errorf("verify --deep without a cache: exit %d\n%s%s\nwant a warning that deltas were not rebuilt", code, stdout, stderr)
	}
	code, stdout, stderr = run(t, "import", delta, "--cache", site, "--public-key", pubFile, "--no-progress")
	if code != 0 || !strings.Contains(stdout, " rebuilt from ") {
		t.Errorf("import: exit %d\n%s%s\nwant the NARs rebuilt", code, stdout, stderr)
	}
	// gc removes the deltas' bases, which the delta's paths no longer
	// need: the bundle imports, verifies and repairs again without them,
	// as the cache holds what its deltas make (docs/guide.md §10).
	code, stdout, stderr = run(t, "gc", "--cache", site, "--keep-bundles", "1", "--no-progress")
	if code != 0 || !strings.Contains(stdout, "removed ") || strings.Contains(stdout, "removed 0 ") {
		t.Fatalf("gc --keep-bundles 1: exit %d\n%s%s\nwant the base's paths removed", code, stdout, stderr)
	}
	for _, args := range [][]string{
		{"import", delta, "--cache", site, "--public-key", pubFile, "--no-progress"},
		{"verify", delta, "--deep", "--against", site, "--public-key", pubFile},
		{"import", delta, "--cache", site, "--public-key", pubFile, "--no-progress", "--repair"},
	} {
		code, stdout, stderr = run(t, args...)
		if code != 0 || !strings.Contains(stdout, " not rebuilt: the cache holds the NAR") {
			t.Errorf("%s after gc removed the bases: exit %d\n%s%s\nwant the deltas' files checked, not rebuilt", strings.Join(args[:2], " "), code, stdout, stderr)
		}
	}
	code, stdout, _ = run(t, "verify", delta, "--deep", "--against", site, "--public-key", pubFile, "--json")
	var vj struct{ InCache int }
	if code != 0 || json.Unmarshal([]byte(stdout), &vj) != nil || vj.InCache != sum.Deltas.Paths {
		t.Errorf("verify --json after gc: exit %d, inCache %d; want %d\n%s", code, vj.InCache, sum.Deltas.Paths, stdout)
	}
	checkJSONScheme(t, "verify", stdout)

	plain := filepath.Join(tmp, "plain")
	code, stdout, stderr = run(t, append([]string{"pack", "--json", "--secret-key", keyFile, "--out", plain, "--since", base, "--binary-deltas=false"}, target("x")...)...)
	if code != 0 || !strings.Contains(stdout, `"deltas":{"paths":0,"savedBytes":0,"tried":0,"noBase":0}`) {
		t.Errorf("pack --binary-deltas=false: exit %d\n%s%s\nwant no delta tried", code, stdout, stderr)
	}
}
