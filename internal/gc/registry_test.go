package gc_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/gc"
	"github.com/nix-airgap/nix-airgap/internal/signing"
)

// TestRegistry: gc drops the flake registry's entries that lock a path
// it removes and keeps the rest; a registry that is not version 2 it
// leaves as it is, saying so as import does.
func TestRegistry(t *testing.T) {
	ctx := t.Context()
	sk, pk, _ := signing.Generate("gc-registry-1")
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	cacheDir := filepath.Join(t.TempDir(), "cache")
	for i, salt := range []string{"old", "newer"} {
		b := channelBundle(t, sk, salt, t0.Add(time.Duration(i)*time.Hour), nil)
		if _, err := bundle.Import(ctx, b, cacheDir, bundle.ImportOptions{Keys: signing.NewKeyring(pk)}); err != nil {
			t.Fatal(err)
		}
	}
	// channelBundle's first path of a bundle named salt.
	entry := func(id, salt, below string) string {
		return fmt.Sprintf(`{"from":{"type":"indirect","id":%q},"to":{"type":"path","path":"/nix/store/%031d%d-%s%s"}}`, id, 0, len(salt), salt, below)
	}
	remote := `{"from":{"type":"indirect","id":"remote"},"to":{"type":"github","owner":"o","repo":"r"}}`
	file := filepath.Join(cacheDir, bundle.RegistryName)
	reg := func(entries ...string) string {
		s := `{"version":2,"flakes":[`
		for i, e := range entries {
			if i > 0 {
				s += ","
			}
			s += e
		}
		return s + "]}\n"
	}
	os.WriteFile(file, []byte(reg(entry("old", "old", ""), entry("sub", "old", "/sub"), entry("new", "newer", ""), remote)), 0o644)
	rep, err := gc.Collect(ctx, cacheDir, gc.Options{Roots: gc.Roots{KeepBundles: 1}, Grace: -1})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(file)
	if want := reg(entry("new", "newer", ""), remote); string(got) != want || rep.Removed.RegistryEntries != 2 {
		t.Errorf("gc removed %d registry entries, leaving\n%s\nwant 2, leaving\n%s", rep.Removed.RegistryEntries, got, want)
	}

	const v1 = `{"version":1,"flakes":[]}`
	os.WriteFile(file, []byte(v1), 0o644)
	rep, err = gc.Collect(ctx, cacheDir, gc.Options{Roots: gc.Roots{KeepBundles: 1}, Grace: -1})
	if err != nil {
		t.Fatal(err)
	}
	want := file + ": not a version 2 flake registry: version 1: left as it is"
	if got, _ := os.ReadFile(file); string(got) != v1 || !slices.Contains(rep.Warnings, want) {
		t.Errorf("gc of a cache whose registry is version 1: warnings %q, registry %s; want %q, and the file as it was", rep.Warnings, got, want)
	}
}
