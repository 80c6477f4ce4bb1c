package storepath_test

import (
	"crypto/rand"
	"fmt"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// TestMakeFixedOutputMatchesNix compares fixed-output paths for random
// digests of every algorithm and method with Nix's own, in a default and
// a custom store dir.
func TestMakeFixedOutputMatchesNix(t *testing.T) {
	for _, dir := range []storepath.Dir{storepath.DefaultDir, "/opt/nix/store"} {
		n := nixtest.New(t, nixtest.Options{StoreDir: dir})
		for _, algo := range storepath.Algos {
			for _, m := range []storepath.Method{storepath.Flat, storepath.Recursive} {
				digest := make([]byte, algo.Size())
				rand.Read(digest)
				h, err := storepath.NewHash(algo, digest)
				if err != nil {
					t.Fatal(err)
				}
				name := fmt.Sprintf("x-%s-%d", algo, m)
				args := []string{"--print-fixed-path", algo.String(), h.Nix32(), name}
				if m == storepath.Recursive {
					args = append([]string{"--print-fixed-path", "--recursive"}, args[1:]...)
				}
				want := n.Run(t, "nix-store", args...)
				got, err := dir.MakeFixedOutput(m, h, name)
				if err != nil {
					t.Fatal(err)
				}
				if got.String() != want {
					t.Errorf("MakeFixedOutput(%d, %s, %q) in %s = %s, Nix says %s", m, h, name, dir, got, want)
				}
			}
		}
	}
}
