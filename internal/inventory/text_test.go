package inventory_test

import (
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/inventory"
)

// TestWriteTextForReview: show says how many builds a package's size
// adds up when a cache holds several of one version, names a store path
// target once, and says "none" rather than listing no sources.
func TestWriteTextForReview(t *testing.T) {
	const sys = "/nix/store/1lsdc2c0zcfjzw1kl3m0rgjcspwrvf43-system"
	inv := &inventory.Inventory{
		Kind: inventory.KindCache,
		Bundles: []inventory.Bundle{{Mode: "runtime", Targets: []inventory.Target{
			{Spec: sys, Outputs: map[string]string{"out": sys}},
			{Spec: ".#other", Outputs: map[string]string{"out": "/nix/store/2bzq4pxhf4nb4q8xl4qvq0wq6qr6khm5-other"}},
		}}},
		Packages: []inventory.Package{
			{Name: "hello", Version: "2.13", Outputs: []string{"man", "out"}, Paths: []string{"a", "b"}, NarSize: 2048, Origins: []string{"store"}},
			{Name: "system", Outputs: []string{"out"}, Paths: []string{"c", "d"}, Builds: 2, NarSize: 1024, Origins: []string{"store"}},
		},
	}
	var b strings.Builder
	if err := inv.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"  target:   " + sys + "\n",
		"  target:   .#other → /nix/store/2bzq4pxhf4nb4q8xl4qvq0wq6qr6khm5-other\n",
		"1.0 KiB in 2 builds",
		"\nsources: none\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("show's text lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "2.0 KiB in") {
		t.Errorf("a package's outputs counted as builds:\n%s", out)
	}
}
