package pack

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/derivation"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// BenchmarkKeyInFlakes searches a local flake's source for the key:
// 2,000 small files made here, or the source at $KEYSCAN_SOURCE (a
// directory named as a store path, such as a nixpkgs checkout of 40,000
// files).
func BenchmarkKeyInFlakes(b *testing.B) {
	sk, _, err := signing.Generate("pack.site-1")
	if err != nil {
		b.Fatal(err)
	}
	src := os.Getenv("KEYSCAN_SOURCE")
	if src == "" {
		src = filepath.Join(b.TempDir(), "0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-source")
		for i := range 2000 {
			file := filepath.Join(src, fmt.Sprintf("pkgs/d%d/f%d.nix", i%50, i))
			os.MkdirAll(filepath.Dir(file), 0o755)
			if err := os.WriteFile(file, []byte(strings.Repeat("{ stdenv, lib }: stdenv.mkDerivation { }\n", 1+i%100)), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	p, err := storepath.Dir(filepath.Dir(src)).Parse(src)
	if err != nil {
		b.Fatal(err)
	}
	items := []*plan.Item{{Path: p, Roles: role.FlakeInput, Fetch: &derivation.Fetch{URLs: []string{"path:/home/site"}}}}
	b.ResetTimer()
	for b.Loop() {
		if err := keyInFlakes(b.Context(), items, &sk); err != nil {
			b.Fatal(err)
		}
	}
}
