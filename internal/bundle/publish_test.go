package bundle

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/cache"
)

// TestMergeRegistry merges a bundle's flake registry into the one a cache
// holds, as import does: a merge that fails leaves the cache's file as it
// was and names it.
func TestMergeRegistry(t *testing.T) {
	c, err := cache.CreateDir(filepath.Join(t.TempDir(), "cache"), "/nix/store", 40)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	file := filepath.Join(c.String(), RegistryName)
	a := `{"from":{"type":"indirect","id":"a"},"to":{"type":"path","path":"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-source"}}`
	b := `{"from":{"type":"indirect","id":"b"},"to":{"type":"github","owner":"o","repo":"r"}}`
	reg := func(entries ...string) string { return `{"version":2,"flakes":[` + strings.Join(entries, ",") + "]}\n" }
	tests := []struct {
		old    string // "" for none
		in     string
		want   string // the file after, or the error
		failed bool
	}{
		{"", reg(a), reg(a), false},
		{reg(b), reg(a), reg(b, a), false},
		{`{"version": 2, "flakes": [` + a + "]}", reg(a), reg(a), false},
		{reg(a, b), reg(a), reg(a, b), false},
		{`{"version":1,"flakes":[]}`, reg(a), file + ": not a version 2 flake registry: version 1", true},
		{`{"version":2,"flakes":[`, reg(a), file + ": not a version 2 flake registry: unexpected end of JSON input", true},
		{reg(b), `{"version":3}`, RegistryName + " in the bundle: corrupt: not a version 2 flake registry: version 3", true},
	}
	for _, tt := range tests {
		os.Remove(file)
		if tt.old != "" {
			if err := os.WriteFile(file, []byte(tt.old), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		err := mergeRegistry(t.Context(), c, []byte(tt.in))
		got, _ := os.ReadFile(file)
		switch {
		case tt.failed && (err == nil || err.Error() != tt.want):
			t.Errorf("merge %s into %s: %v, want %s", tt.in, tt.old, err, tt.want)
		case tt.failed && string(got) != tt.old:
			t.Errorf("a failed merge of %s changed the cache's registry %s to %s", tt.in, tt.old, got)
		case !tt.failed && (err != nil || string(got) != tt.want):
			t.Errorf("merge %s into %s: %v, registry %s; want %s", tt.in, tt.old, err, got, tt.want)
		}
	}
}
