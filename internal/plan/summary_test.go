package plan_test

import (
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/plan"
)

func TestWriteTableSources(t *testing.T) {
	store := plan.SourceSummary{Source: "store", Count: plan.Count{Paths: 3, NarSize: 3 << 20, FileSize: 1 << 20}}
	upstream := plan.SourceSummary{Source: "https://cache.example", Count: plan.Count{Paths: 2, NarSize: 2 << 20, FileSize: 1 << 19}}
	for _, tt := range []struct {
		name  string
		build plan.Count
		rows  []string // the FROM table's first column, in order
	}{
		{"nothing to build", plan.Count{}, []string{"store", "https://cache.example"}},
		{"builds", plan.Count{Paths: 1, ToBuild: 1}, []string{"store", "https://cache.example", "build"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := plan.Summary{Sources: []plan.SourceSummary{store, upstream, {Source: "build", Count: tt.build}}, ToBuild: tt.build.ToBuild, FileSize: 3 << 19}
			var b strings.Builder
			if err := s.WriteTable(&b); err != nil {
				t.Fatal(err)
			}
			// The estimate is of the NAR files: pack's bundle figure
			// counts every file, so "expected bundle size" was not it.
			if text := b.String(); strings.Contains(text, "bundle size") || !strings.Contains(text, "compressed NAR files expected 1.5 MiB") {
				t.Errorf("the estimate does not say it is of the NAR files:\n%s", text)
			}
			_, table, _ := strings.Cut(b.String(), "FROM ")
			table, _, _ = strings.Cut(table, "\n\n")
			var rows []string
			for _, line := range strings.Split(table, "\n")[1:] {
				rows = append(rows, strings.Fields(line)[0])
			}
			if strings.Join(rows, " ") != strings.Join(tt.rows, " ") {
				t.Errorf("FROM rows = %q, want %q in:\n%s", rows, tt.rows, b.String())
			}
		})
	}
}
