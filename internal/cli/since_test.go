package cli_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestSinceDeltaOfDelta: plan --since and pack --since a delta (B2, a
// delta of B1) agree on what they leave out, and that is what a site that
// imported B2 holds, B1's paths too: pack carries only the new toplevel
// and says how many of the paths it left out B2 does not carry itself;
// pack --check finds everything the targets need there.
func TestSinceDeltaOfDelta(t *testing.T) {
	w, tmp, keyFile, _ := newKeyedWorld(t, "since-test-1")
	target := func(variant string) []string {
		return append([]string{"--file", w.File, "--attr", "toplevel", "--mode", "build"}, w.Args(variant, "")...)
	}
	b1, b2, b3 := filepath.Join(tmp, "b1"), filepath.Join(tmp, "b2.tar"), filepath.Join(tmp, "b3")
	for _, p := range []struct{ out, variant, since string }{{b1, "", ""}, {b2, "v2", b1}} {
		args := append([]string{"pack", "--no-progress", "--secret-key", keyFile, "--out", p.out}, target(p.variant)...)
		if p.since != "" {
			args = append(args, "--since", p.since)
		}
		if code, _, stderr := run(t, args...); code != 0 {
			t.Fatalf("pack %s: exit %d\n%s", p.out, code, stderr)
		}
	}

	code, stdout, stderr := run(t, append([]string{"plan", "--json", "--since", b2}, target("v3")...)...)
	var pl struct {
		Paths []json.RawMessage `json:"paths"`
		Since struct {
			InBases           int `json:"inBases"`
			InBasesNotCarried int `json:"inBasesNotCarried"`
		} `json:"since"`
	}
	if code != 0 || json.Unmarshal([]byte(stdout), &pl) != nil {
		t.Fatalf("plan --since --json: exit %d\n%s", code, stderr)
	}
	checkJSONScheme(t, "plan", stdout)
	// Every path but the new toplevel; B2 carries none of them.
	if want := len(pl.Paths) - 1; pl.Since.InBases != want || pl.Since.InBasesNotCarried != want {
		t.Errorf("plan --since B2: %+v; want all %d paths but the new toplevel left out, none carried by B2", pl.Since, want)
	}

	code, stdout, stderr = run(t, append([]string{"pack", "--json", "--secret-key", keyFile, "--out", b3, "--since", b2}, target("v3")...)...)
	if code != 0 {
		t.Fatalf("pack --since B2: exit %d\n%s", code, stderr)
	}
	var sum struct {
		Event             string `json:"event"`
		Paths             int    `json:"paths"`
		InBases           int    `json:"inBases"`
		InBasesNotCarried int    `json:"inBasesNotCarried"`
	}
	for l := range strings.SplitSeq(strings.TrimSpace(stdout), "\n") {
		if strings.Contains(l, `"event":"done"`) {
			json.Unmarshal([]byte(l), &sum)
			checkJSONScheme(t, "pack", l)
		}
	}
	if sum.Event != "done" || sum.Paths != 1 || sum.InBases != pl.Since.InBases || sum.InBasesNotCarried != pl.Since.InBasesNotCarried {
		t.Errorf("pack --since B2: %+v; want 1 path, and left out what plan --since said, %+v\n%s", sum, pl.Since, stdout)
	}

	code, stdout, _ = run(t, append([]string{"plan", "--since", b2}, target("v3")...)...)
	if code != 0 || !strings.Contains(stdout, " not carried by the bases themselves") {
		t.Errorf("plan --since B2: exit %d, output:\n%s\nwant how many left out paths B2 does not carry", code, stdout)
	}
	// --check counts what B2 holds without carrying it as there.
	code, _, stderr = run(t, append([]string{"pack", "--check", "--secret-key", keyFile, "--out", filepath.Join(tmp, "b3-text"), "--since", b2}, target("v3")...)...)
	if code != 0 || !strings.Contains(stderr, "a site that imported the bases holds (") || !strings.Contains(stderr, "OLD is a delta of bundles (") || !strings.Contains(stderr, ": everything the targets need is in it or buildable from it") {
		t.Errorf("pack --check --since B2: exit %d, output:\n%s\nwant what it left out, that B2's bases hold what B2 does not carry, and the check passed", code, stderr)
	}
}
