package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/gc"
)

func TestPrintGCReportKeptBundles(t *testing.T) {
	imported := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		targets []string
		want    string
	}{
		{[]string{"/nix/store/a-x", "/nix/store/b-y"}, "keeping what bundle sha256:b1 needs (/nix/store/a-x /nix/store/b-y; runtime mode, imported 2026-12-06 10:00:00, carried 2 paths)\n"},
		{[]string{"a", "b", "c", "d", "e"}, "keeping what bundle sha256:b1 needs (a b c and 2 more; runtime mode, imported 2026-12-06 10:00:00, carried 2 paths)\n"},
		{nil, "keeping what bundle sha256:b1 needs (runtime mode, imported 2026-12-06 10:00:00, carried 2 paths)\n"},
	} {
		rep := &gc.Report{KeptBundles: []gc.BundleRef{{ID: "sha256:b1", Imported: imported, Mode: "runtime", Targets: tt.targets, Paths: 2}}}
		var b strings.Builder
		printGCReport(&b, rep)
		if got, _, _ := strings.Cut(b.String(), ")\n"); got+")\n" != tt.want {
			t.Errorf("targets %q: got %q, want %q", tt.targets, got+")\n", tt.want)
		}
	}
}

func TestPrintGCReportHalfImported(t *testing.T) {
	for _, tt := range []struct {
		ref  gc.HalfImportedRef
		want string
	}{
		{gc.HalfImportedRef{ID: "sha256:s1", Volumes: 5, Imported: []int{2, 4}}, "keeping what the half-imported volume set sha256:s1 needs (2 of 5 volumes imported)\n"},
		// Not "0 of 0 volumes".
		{gc.HalfImportedRef{ID: "sha256:s1", Volumes: 5, Unknown: "no volumes.json: why"}, "keeping what the half-imported volume set sha256:s1 needs (5 volumes; which are imported is unknown: no volumes.json: why)\n"},
		{gc.HalfImportedRef{ID: "sha256:s1"}, "keeping what the half-imported volume set sha256:s1 needs (how many volumes it has is unknown)\n"},
	} {
		var b strings.Builder
		printGCReport(&b, &gc.Report{HalfImported: []gc.HalfImportedRef{tt.ref}})
		if got, _, _ := strings.Cut(b.String(), ")\n"); got+")\n" != tt.want {
			t.Errorf("got %q, want %q", got+")\n", tt.want)
		}
	}
}
