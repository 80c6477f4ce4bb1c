package plan

import (
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/nixcli"
)

// TestRegistryErrorNamesInput: an input registry cannot pack is named as
// a flake reference, not as Go prints its attributes.
func TestRegistryErrorNamesInput(t *testing.T) {
	flakes := map[string]*flakeInfo{"flake:nixpkgs": {meta: nixcli.FlakeMetadata{
		OriginalURL: "flake:nixpkgs/nixos-24.05",
		Locked:      nixcli.FlakeRef{Attrs: map[string]any{"type": "path", "path": "/tmp/nixpkgs"}}, // no narHash
	}}}
	_, err := registry("/nix/store", flakes)
	if want := "flake input flake:nixpkgs?ref=nixos-24.05: "; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("registry: %v; want an error beginning %q", err, want)
	}
}
