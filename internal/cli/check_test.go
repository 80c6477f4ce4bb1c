package cli_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/cli"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
)

// TestCheckCommand runs check on the test world through the command
// line: usage errors, an output path target (whose build closure comes
// from its deriver), --against-local-store and the text report.
func TestCheckCommand(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	inet := nixtest.StartInternet(t)
	w := nixtest.NewWorld(t, n, inet, nixtest.WorldOptions{})
	n.Setenv(t)
	top := w.Build(t)
	outs := w.OutPaths(t)

	for _, tt := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no source", []string{"check", top}, cli.ExitUsage, "--against"},
		{"no target", []string{"check", "--against-local-store"}, cli.ExitUsage, "invalid target"},
		{"missing source", []string{"check", top, "--against", filepath.Join(t.TempDir(), "gone")}, cli.ExitMissing, "gone"},
		{"bad scheme", []string{"check", top, "--against", "ftp://x"}, cli.ExitUsage, "unsupported scheme"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := run(t, tt.args...)
			if code != tt.code || !strings.Contains(stderr, tt.stderr) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, stderr, tt.code, tt.stderr)
			}
		})
	}

	// The output path: its deriver gives the build closure, all local.
	code, stdout, stderr := run(t, "check", top, "--against-local-store", "--json")
	if code != 0 {
		t.Fatalf("check %s: exit %d: %s", top, code, stderr)
	}
	checkJSONScheme(t, "check", stdout)
	var got struct {
		OK      bool `json:"ok"`
		Summary struct {
			Available int `json:"available"`
			Local     int `json:"local"`
			ToBuild   int `json:"toBuild"`
			NotNeeded int `json:"notNeeded"`
		} `json:"summary"`
		Paths []struct {
			Path   string `json:"path"`
			Class  string `json:"class"`
			Needed bool   `json:"needed"`
		} `json:"paths"`
	}
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("check --json: %v\n%s", err, stdout)
	}
	classes := map[string]string{}
	for _, p := range got.Paths {
		classes[p.Path] = p.Class
	}
	if !got.OK || got.Summary.ToBuild != 0 || got.Summary.Available != len(w.RuntimeAttrs()) || got.Summary.Local != got.Summary.Available {
		t.Errorf("check %s: %+v; want the %d runtime paths available locally", top, got.Summary, len(w.RuntimeAttrs()))
	}
	if classes[outs["cc"]] != "available" {
		t.Errorf("check %s: cc %s is %q, want the deriver's closure walked and cc available", top, outs["cc"], classes[outs["cc"]])
	}

	// A deep change: the runtime attributes are to build, from local
	// sources and cc.
	args := append([]string{"check", "--file", w.File, "--attr", "toplevel", "--against-local-store"}, w.Args("", "deep2")...)
	code, stdout, stderr = run(t, args...)
	if code != 0 {
		t.Fatalf("check deep: exit %d: %s", code, stderr)
	}
	for _, want := range []string{"to build", "target --file", ": buildable"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("check report lacks %q:\n%s", want, stdout)
		}
	}
	t.Logf("report:\n%s", stdout)
}
