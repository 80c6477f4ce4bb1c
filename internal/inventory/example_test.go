package inventory_test

import (
	"os"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/inventory"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// ExampleCompare compares two manifests the way `nix-airgap diff` does.
func ExampleCompare() {
	dir := storepath.Dir("/nix/store")
	path := func(hash, name string, size uint64) bundle.PathEntry {
		p, _ := dir.Base(hash + "-" + name)
		h, _ := storepath.ParseHash("sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s")
		return bundle.PathEntry{Path: p, NarHash: h, NarSize: size, URL: "nar/" + hash + ".nar", FileHash: h, FileSize: size, Compression: "none", Roles: role.Runtime}
	}
	manifest := func(paths ...bundle.PathEntry) *bundle.Manifest {
		return &bundle.Manifest{StoreDir: dir, Created: time.Unix(0, 0), Paths: paths}
	}
	old := inventory.FromManifest("old", manifest(
		path("0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk", "hello-2.12", 50<<10),
		path("1a7bjbqy2xhvqzk0h7q4wn8xg0mjrw9m", "glibc-2.40", 30<<20),
	))
	new := inventory.FromManifest("new", manifest(
		path("2bzq4pxhf4nb4q8xl4qvq0wq6qr6khm5", "hello-2.13", 52<<10),
		path("3cbc0a3dg45ifh9kd3g3sqnfqfprv0gg", "glibc-2.40", 30<<20),
	))
	inventory.Compare(old, new).WriteText(os.Stdout)
	// Output:
	// glibc: 2.40 rebuilt
	// hello: 2.12 → 2.13, +2.0 KiB
	//
	// packages: version changed 1, rebuilt 1; 2 paths added (30.1 MiB NAR, 30.1 MiB compressed); 2 paths removed (30.0 MiB NAR, 30.0 MiB compressed)
}
