package cli_test

import (
	"bytes"
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// documentedKeys reads docs/design.md's "JSON output": each command's
// top-level keys, those that may be left out marked optional.
func documentedKeys(t *testing.T) map[string]map[string]bool {
	t.Helper()
	data, err := os.ReadFile("../../docs/design.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, _ := strings.Cut(string(data), "\n## JSON output\n")
	sec, _, _ = strings.Cut(sec, "\n## ")
	line := regexp.MustCompile("(?m)^- ([a-z]+)[^:]*: (`.*)$")
	keys := map[string]map[string]bool{}
	for _, m := range line.FindAllStringSubmatch(sec, -1) {
		keys[m[1]] = map[string]bool{}
		for k := range strings.SplitSeq(m[2], ", ") {
			k = strings.Trim(k, "`")
			name, optional := strings.CutSuffix(k, "?")
			keys[m[1]][name] = optional
		}
	}
	return keys
}

// badKey is a key the scheme rules out: a duration not in seconds, a
// rate, a size not ending in Bytes.
var badKey = regexp.MustCompile(`^(elapsed|duration|rate|size)|(Ns|Ms|Elapsed|Duration|PerSecond|Rate|Delta)$`)

// schemeProblems lists where out, command's --json output, departs from
// docs/design.md's "JSON output".
func schemeProblems(documented map[string]map[string]bool, command string, out []byte) []string {
	var top map[string]any
	if err := json.Unmarshal(out, &top); err != nil {
		return []string{err.Error()}
	}
	want, ok := documented[command]
	if !ok {
		return []string{command + ": not documented"}
	}
	var problems []string
	for k := range top {
		if _, ok := want[k]; !ok {
			problems = append(problems, command+": key "+k+" not documented")
		}
	}
	for k, optional := range want {
		if _, ok := top[k]; !ok && !optional {
			problems = append(problems, command+": documented key "+k+" missing")
		}
	}
	var walk func(at string, v any)
	walk = func(at string, v any) {
		switch v := v.(type) {
		case map[string]any:
			_, onePath := v["path"]
			for k, e := range v {
				// One path's sizes are Nix's narSize and fileSize.
				if badKey.MatchString(k) || strings.HasSuffix(k, "Size") && !(onePath && (k == "narSize" || k == "fileSize")) {
					problems = append(problems, command+": key "+at+"."+k+" departs from the scheme")
				}
				walk(at+"."+k, e)
			}
		case []any:
			for _, e := range v {
				walk(at+"[]", e)
			}
		}
	}
	walk(command, top)
	// Strings as they are: an s3:// URL's & is &.
	for _, esc := range []string{`\u0026`, `\u003c`, `\u003e`} {
		if bytes.Contains(out, []byte(esc)) {
			problems = append(problems, command+": "+esc+" where the character itself belongs")
		}
	}
	slices.Sort(problems)
	return problems
}

// checkJSONScheme fails t when out departs from the documented scheme.
func checkJSONScheme(t *testing.T, command string, out string) {
	t.Helper()
	for _, p := range schemeProblems(documentedKeys(t), command, []byte(out)) {
		t.Errorf("--json output: %s", p)
	}
}

func TestJSONScheme(t *testing.T) {
	documented := documentedKeys(t)
	for _, c := range []string{"plan", "pack", "verify", "import", "gc", "check", "show", "diff"} {
		if len(documented[c]) == 0 {
			t.Errorf("docs/design.md's JSON output names no keys of %s", c)
		}
	}
	for _, tt := range []struct {
		name, out string
		want      int
	}{
		{"good", `{"cache": "c", "dryRun": false, "roots": "r", "keptBundles": [], "kept": {"paths": 1, "bytes": 2}, "removed": {}, "removedPaths": [], "warnings": [], "seconds": 0.5}`, 0},
		{"nanoseconds", `{"cache": "c", "dryRun": false, "roots": "r", "keptBundles": [], "kept": {}, "removed": {}, "removedPaths": [], "warnings": [], "seconds": 1, "elapsedNs": 5}`, 2},
		{"a rate, a total size", `{"cache": "c", "dryRun": false, "roots": "r", "keptBundles": [{"mbPerSecond": 1, "narSize": 2}], "kept": {}, "removed": {}, "removedPaths": [], "warnings": [], "seconds": 1}`, 2},
		{"one path's sizes", `{"cache": "c", "dryRun": false, "roots": "r", "keptBundles": [{"path": "/nix/store/x", "narSize": 2, "fileSize": 1}], "kept": {}, "removed": {}, "removedPaths": [], "warnings": [], "seconds": 1}`, 0},
		{"undocumented, missing", `{"cache": "c", "other": 1}`, 9},
		{"HTML escapes", `{"cache": "s3://c?endpoint=h\u0026scheme=http", "dryRun": false, "roots": "r", "keptBundles": [], "kept": {}, "removed": {}, "removedPaths": [], "warnings": [], "seconds": 0.5}`, 1},
	} {
		if got := schemeProblems(documented, "gc", []byte(tt.out)); len(got) != tt.want {
			t.Errorf("%s: %d problems %q, want %d", tt.name, len(got), got, tt.want)
		}
	}
}
