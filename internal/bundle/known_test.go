package bundle_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// TestKnown checks what pack --since leaves out of a delta of a delta,
// for every form of base: B1 carries p0 p1 p2 (each referring to the one
// before), B2 is a delta of B1 carrying p3 (-> p2) and p4 (-> p3), whose
// manifest says B1 provided p2 and the source p7, which nothing refers
// to. A site that imported B2 holds p0 … p4 and p7; with no reference
// graph, only what B2's manifest says.
func TestKnown(t *testing.T) {
	ctx := context.Background()
	c := newChain(t, 8)
	b1 := c.dir(0, 3, nil)
	b1Bases, err := bundle.OpenBases(ctx, []string{b1})
	if err != nil {
		t.Fatal(err)
	}
	src := c.paths[7]
	provided := b1Bases.Known(nil).For([]bundle.PathEntry{{Path: c.paths[3], References: []storepath.Path{c.paths[2]}}}, []storepath.Path{src}, nil)
	if diff := cmp.Diff([]storepath.Path{c.paths[2]}, provided[0].Provides); diff != "" {
		t.Fatalf("B1 provides (-want +got):\n%s", diff) // B1 does not hold p7
	}
	honest := c.dir(3, 5, provided)                          // B2 as packed against this B1
	provided[0].Provides = append(provided[0].Provides, src) // as pack writes it when B1 carries the source
	b2 := c.dir(3, 5, provided)
	b2Tar := c.tar(3, 5, provided)
	set := filepath.Join(t.TempDir(), "set.tar") // a volume set, named as its --out
	vw, err := bundle.NewVolumeWriter(set, 16<<10, storepath.DefaultDir, bundle.WriterOptions{Key: &c.sk})
	if err != nil {
		t.Fatal(err)
	}
	c.write(vw, 3, 5, provided)
	manifest := filepath.Join(t.TempDir(), bundle.ManifestName)
	os.WriteFile(manifest, mustRead(t, b2, bundle.ManifestName), 0o644)
	cacheDir := filepath.Join(t.TempDir(), "cache")
	keys := signing.NewKeyring(c.sk.Public())
	if _, err := bundle.Import(ctx, b1, cacheDir, bundle.ImportOptions{Keys: keys}); err != nil {
		t.Fatal(err)
	}
	// This B1 never carried p7: the B2 that says it did is refused, and
	// the cache imports the B2 packed against it.
	if _, err := bundle.Import(ctx, b2, cacheDir, bundle.ImportOptions{Keys: keys}); !errors.Is(err, bundle.ErrMissing) {
		t.Fatalf("import of a B2 whose base provides p7, which the cache lacks = %v, want refused", err)
	}
	if _, err := bundle.Import(ctx, honest, cacheDir, bundle.ImportOptions{Keys: keys}); err != nil {
		t.Fatal(err)
	}

	// The plan's reference graph: p1 … p5 each refer to the one before;
	// the source p7 refers to nothing.
	graph := func(p storepath.Path) []storepath.Path {
		if i := slices.Index(c.paths, p); i > 0 && i <= 5 {
			return []storepath.Path{c.paths[i-1]}
		}
		return nil
	}
	p := c.paths
	for _, tc := range []struct {
		name    string
		src     string
		refs    func(storepath.Path) []storepath.Path
		known   []storepath.Path // of p0 … p7
		carried []storepath.Path
	}{
		{"bundle dir", b2, graph, []storepath.Path{p[0], p[1], p[2], p[3], p[4], p[7]}, []storepath.Path{p[3], p[4]}},
		{"no graph", b2, nil, []storepath.Path{p[2], p[3], p[4], p[7]}, []storepath.Path{p[3], p[4]}},
		{"tar", b2Tar, graph, []storepath.Path{p[0], p[1], p[2], p[3], p[4], p[7]}, []storepath.Path{p[3], p[4]}},
		{"volume set", set, graph, []storepath.Path{p[0], p[1], p[2], p[3], p[4], p[7]}, []storepath.Path{p[3], p[4]}},
		{"manifest.json", manifest, graph, []storepath.Path{p[0], p[1], p[2], p[3], p[4], p[7]}, []storepath.Path{p[3], p[4]}},
		// A cache holds its closures whole; p7 never came.
		{"cache", cacheDir, nil, []storepath.Path{p[0], p[1], p[2], p[3], p[4]}, []storepath.Path{p[0], p[1], p[2], p[3], p[4]}},
		{"inventory", inventoryFile(t, cacheDir), graph, []storepath.Path{p[0], p[1], p[2], p[3], p[4]}, []storepath.Path{p[0], p[1], p[2], p[3], p[4]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := bundle.OpenBases(ctx, []string{tc.src})
			if err != nil {
				t.Fatal(err)
			}
			k := b.Known(tc.refs)
			var known, carried []storepath.Path
			for _, q := range c.paths {
				if k.Has(q) {
					known = append(known, q)
				}
				if k.Carried(q) {
					carried = append(carried, q)
				}
			}
			if diff := cmp.Diff(tc.known, known); diff != "" {
				t.Errorf("Has (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.carried, carried); diff != "" {
				t.Errorf("Carried (-want +got):\n%s", diff)
			}
		})
	}

	// B3, a delta of B2 carrying p5 (-> p4) whose targets also need p0
	// and p7 (say a build output and a source nothing refers to): B2
	// provides all three, though it carries only p4.
	b, err := bundle.OpenBases(ctx, []string{b2})
	if err != nil {
		t.Fatal(err)
	}
	bases := b.Known(graph).For([]bundle.PathEntry{{Path: p[5], References: []storepath.Path{p[4]}}}, []storepath.Path{p[0], p[7]}, nil)
	want := []storepath.Path{p[0], p[4], p[7]}
	slices.SortFunc(want, storepath.Compare)
	if diff := cmp.Diff(want, bases[0].Provides); diff != "" {
		t.Errorf("B3's base B2 provides (-want +got):\n%s", diff)
	}

	// Of two bases, each provides what it holds: B1 p0, B2 p0 too
	// (through p2 its p3 refers to, whose closure the graph gives).
	b, err = bundle.OpenBases(ctx, []string{b1, b2})
	if err != nil {
		t.Fatal(err)
	}
	bases = b.Known(graph).For([]bundle.PathEntry{{Path: p[5], References: []storepath.Path{p[4]}}}, []storepath.Path{p[0]}, nil)
	if diff := cmp.Diff([][]storepath.Path{{p[0]}, {p[0], p[4]}}, [][]storepath.Path{bases[0].Provides, sorted(bases[1].Provides)}); diff != "" {
		t.Errorf("Provides of B1, B2 (-want +got):\n%s", diff)
	}
}

func sorted(ps []storepath.Path) []storepath.Path {
	ps = slices.Clone(ps)
	slices.SortFunc(ps, storepath.Compare)
	return ps
}

// TestKnownPrefersInventory: given a cache inventory and a bundle the
// site never imported (B2, a crossing skipped), pack --since goes by the
// inventory, which says exactly what the site holds: B2's paths are not
// taken as held, B2 provides nothing, and no binary delta is made against
// a path only B2 carries. B2 alone is taken at its word.
func TestKnownPrefersInventory(t *testing.T) {
	ctx := context.Background()
	c := newChain(t, 5)
	keys := signing.NewKeyring(c.sk.Public())
	b1 := c.dir(0, 2, nil)
	cacheDir := filepath.Join(t.TempDir(), "cache")
	if _, err := bundle.Import(ctx, b1, cacheDir, bundle.ImportOptions{Keys: keys}); err != nil {
		t.Fatal(err)
	}
	inv := inventoryFile(t, cacheDir)
	b2 := c.dir(2, 4, nil)
	p := c.paths
	rebuilt := p[3]
	rebuilt.Hash = "1" + rebuilt.Hash[1:] // p3 built again: another hash
	for _, tc := range []struct {
		name     string
		since    []string
		known    []storepath.Path // of p0 … p4
		provides [][]storepath.Path
		similar  bool // a binary delta of rebuilt is made against p3
	}{
		{"inventory and bundle", []string{inv, b2}, p[:2], [][]storepath.Path{{p[1]}, {}}, false},
		{"bundle and inventory", []string{b2, inv}, p[:2], [][]storepath.Path{{}, {p[1]}}, false},
		{"bundle alone", []string{b2}, p[1:4], [][]storepath.Path{{p[1], p[3]}}, true}, // p2 refers to p1
		{"inventory alone", []string{inv}, p[:2], [][]storepath.Path{{p[1]}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := bundle.OpenBases(ctx, tc.since)
			if err != nil {
				t.Fatal(err)
			}
			k := b.Known(nil)
			var known []storepath.Path
			for _, q := range p {
				if k.Has(q) {
					known = append(known, q)
				}
			}
			if diff := cmp.Diff(tc.known, known); diff != "" {
				t.Errorf("Has (-want +got):\n%s", diff)
			}
			// p4 refers to p3 and p1.
			var provides [][]storepath.Path
			for _, base := range k.For([]bundle.PathEntry{{Path: p[4], References: []storepath.Path{p[1], p[3]}}}, nil, nil) {
				provides = append(provides, base.Provides)
			}
			if diff := cmp.Diff(tc.provides, provides); diff != "" {
				t.Errorf("Provides (-want +got):\n%s", diff)
			}
			if _, ok := b.Similar(rebuilt); ok != tc.similar {
				t.Errorf("Similar(p3 rebuilt) found = %v, want %v", ok, tc.similar)
			}
		})
	}
}
