package pack

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/role"
)

// TestOutCheckReuse: Pack takes what CheckOut found at --out, without
// reading the bundle there again, only for the same options and while
// the manifest it read is unchanged; else it looks again.
func TestOutCheckReuse(t *testing.T) {
	writeBundle := func(t *testing.T, dir, tool string) {
		t.Helper()
		m := &bundle.Manifest{Tool: tool, StoreDir: "/nix/store", Mode: role.ModeRuntime}
		data, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, content := range map[string][]byte{bundle.ManifestName: data, bundle.CacheInfo: []byte("StoreDir: /nix/store\n")} {
			if err := os.WriteFile(filepath.Join(dir, name), content, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tt := range []struct {
		name   string
		bundle bool                                          // a finished bundle at --out
		change func(t *testing.T, out string, opts *Options) // after CheckOut
		reused bool
	}{
		{"unchanged", true, func(*testing.T, string, *Options) {}, true},
		{"manifest rewritten", true, func(t *testing.T, out string, _ *Options) { writeBundle(t, out, "another pack, longer name") }, false},
		{"manifest gone", true, func(t *testing.T, out string, _ *Options) { os.Remove(filepath.Join(out, bundle.ManifestName)) }, false},
		{"other --out", true, func(t *testing.T, _ string, o *Options) { o.Out = filepath.Join(t.TempDir(), "b") }, false},
		{"other --since", true, func(t *testing.T, _ string, o *Options) { o.Since = []string{filepath.Join(t.TempDir(), "base")} }, false},
		{"nothing there: no manifest to read again", false, func(*testing.T, string, *Options) {}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "bundle")
			if tt.bundle {
				writeBundle(t, out, "test")
			}
			opts := Options{Out: out}
			c, err := CheckOut(opts)
			if err != nil {
				t.Fatal(err)
			}
			tt.change(t, out, &opts)
			resolved, olds, ok := c.reuse(opts)
			if ok != tt.reused {
				t.Fatalf("reuse = %v, want %v", ok, tt.reused)
			}
			if ok && (resolved != out || len(olds) != 1 || olds[0].m.Tool != "test") {
				t.Errorf("reuse = %s, %+v; want %s and its bundle", resolved, olds, out)
			}
		})
	}
	var c *OutCheck
	if _, _, ok := c.reuse(Options{Out: "x"}); ok {
		t.Error("reuse of no OutCheck = true")
	}
}
