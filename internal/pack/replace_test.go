package pack_test

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/pack"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/role"
)

// TestPackSaysItReplaced: a pack over a finished bundle of other content
// (a delta, packed over by a full bundle) says on stderr which bundle it
// replaced; into a new --out, over the same bundle (the same pack run
// again), or over what a killed pack left (no manifest), it says nothing
// of the kind.
func TestPackSaysItReplaced(t *testing.T) {
	f := newFixture(t)
	opts := plan.Options{Mode: role.ModeRuntime}
	var logged bytes.Buffer
	f.packer.Log = slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelWarn}))
	base := filepath.Join(t.TempDir(), "week1")
	f.pack(t, f.targets(t), pack.Options{Options: opts, Out: base})
	if strings.Contains(logged.String(), "replaced") {
		t.Errorf("pack into a new --out says it replaced something:\n%s", logged.String())
	}

	out := filepath.Join(t.TempDir(), "bundle-7")
	delta := f.pack(t, f.targets(t), pack.Options{Options: opts, Out: out, Since: []string{base}})
	m, id, _, err := bundle.Finished(out, false)
	if err != nil || m == nil {
		t.Fatalf("read the delta's manifest: %v", err)
	}
	if id.String() != delta.ID.String() {
		t.Errorf("Finished(%s): id %s, want the delta's %s", out, id, delta.ID)
	}
	logged.Reset()
	full := f.pack(t, f.targets(t), pack.Options{Options: opts, Out: out})
	want := "replaced bundle " + delta.ID.String() + " (packed " + m.Created.UTC().Format("2006-01-02") + ") at " + out
	if full.ID.String() == delta.ID.String() || !strings.Contains(logged.String(), want) {
		t.Errorf("pack of a full bundle over a delta (%s, now %s): want a warning %q, got:\n%s", delta.ID, full.ID, want, logged.String())
	}

	// The same pack run again, a second later, replaces its bundle by
	// one that differs only in when it was made: nothing to say.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	logged.Reset()
	again := f.pack(t, f.targets(t), pack.Options{Options: opts, Out: out})
	if again.ID.String() == full.ID.String() || strings.Contains(logged.String(), "replaced") {
		t.Errorf("the same pack again (%s, now %s) says it replaced a bundle, or made the same one:\n%s", full.ID, again.ID, logged.String())
	}

	// What a killed pack left is gone on with, not replaced.
	if err := os.Remove(filepath.Join(out, bundle.ManifestName)); err != nil {
		t.Fatal(err)
	}
	logged.Reset()
	f.pack(t, f.targets(t), pack.Options{Options: opts, Out: out})
	if strings.Contains(logged.String(), "replaced") {
		t.Errorf("pack over a bundle without its manifest says it replaced one:\n%s", logged.String())
	}
}
