package bundle_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// chain writes bundles of tiny paths p0, p1, … where each refers to the
// one before, in dir's store: a "base" of the first n, and whatever the
// caller writes next.
type chain struct {
	t     *testing.T
	sk    signing.SecretKey
	paths []storepath.Path
}

func newChain(t *testing.T, n int) *chain {
	c := &chain{t: t, sk: fuzzSeedKey}
	for i := range n {
		p, err := storepath.DefaultDir.Base(fmt.Sprintf("%032d-p%d", i, i))
		if err != nil {
			t.Fatal(err)
		}
		c.paths = append(c.paths, p)
	}
	return c
}

// write writes paths [from, to) into w, each referring to the one before.
func (c *chain) write(w *bundle.Writer, from, to int, bases []bundle.Base) {
	c.t.Helper()
	for i := from; i < to; i++ {
		buf := fileNAR(c.t, fmt.Appendf(nil, "content %d\n", i))
		meta := bundle.PathMeta{Roles: role.Runtime}
		if i > 0 {
			meta.References = []storepath.Path{c.paths[i-1]}
		}
		if err := w.AddNAR(context.Background(), c.paths[i], buf, meta); err != nil {
			c.t.Fatal(err)
		}
	}
	hdr := bundle.ManifestHeader{Tool: "test", Created: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), Mode: role.ModeRuntime, Bases: bases}
	if err := w.Close(context.Background(), hdr); err != nil {
		c.t.Fatal(err)
	}
}

func (c *chain) dir(from, to int, bases []bundle.Base) string {
	c.t.Helper()
	dir := filepath.Join(c.t.TempDir(), "bundle")
	w, err := bundle.NewDirWriter(dir, storepath.DefaultDir, bundle.WriterOptions{Key: &c.sk})
	if err != nil {
		c.t.Fatal(err)
	}
	c.write(w, from, to, bases)
	return dir
}

func (c *chain) tar(from, to int, bases []bundle.Base) string {
	c.t.Helper()
	name := filepath.Join(c.t.TempDir(), "bundle.tar")
	f, err := os.Create(name)
	if err != nil {
		c.t.Fatal(err)
	}
	w, err := bundle.NewTarWriter(f, storepath.DefaultDir, bundle.WriterOptions{Key: &c.sk, TempDir: c.t.TempDir(), Compression: "none"})
	if err != nil {
		c.t.Fatal(err)
	}
	c.write(w, from, to, bases)
	if err := f.Close(); err != nil {
		c.t.Fatal(err)
	}
	return name
}

// TestOpenBases reads every kind of base pack --since takes, and checks
// what a delta over them provides.
func TestOpenBases(t *testing.T) {
	ctx := context.Background()
	c := newChain(t, 5)
	dir := c.dir(0, 3, nil)
	tarFile := c.tar(0, 3, nil) // uncompressed: another id, the same paths
	manifest := filepath.Join(t.TempDir(), bundle.ManifestName)
	os.WriteFile(manifest, mustRead(t, dir, bundle.ManifestName), 0o644)
	cacheDir := filepath.Join(t.TempDir(), "cache")
	keys := signing.NewKeyring(c.sk.Public())
	if _, err := bundle.Import(ctx, dir, cacheDir, bundle.ImportOptions{Keys: keys}); err != nil {
		t.Fatal(err)
	}
	invFile := inventoryFile(t, cacheDir)

	// The delta: p3 and p4, where p3 refers to the base's p2.
	delta := []bundle.PathEntry{{Path: c.paths[3], References: []storepath.Path{c.paths[2]}}, {Path: c.paths[4], References: []storepath.Path{c.paths[3]}}}
	// Any volume of a set, which carries the whole manifest.
	out := filepath.Join(t.TempDir(), "set.tar")
	vw, err := bundle.NewVolumeWriter(out, 16<<10, storepath.DefaultDir, bundle.WriterOptions{Key: &c.sk})
	if err != nil {
		t.Fatal(err)
	}
	c.write(vw, 0, 3, nil)
	volume := vw.Volumes()[len(vw.Volumes())-1]
	// out, the NAME.tar of the set's --out, is not there: it names the
	// set, as its first volume.
	for _, src := range []string{dir, tarFile, manifest, invFile, cacheDir, volume, out} {
		t.Run(filepath.Base(src), func(t *testing.T) {
			b, err := bundle.OpenBases(ctx, []string{src, src})
			if err != nil {
				t.Fatal(err)
			}
			for i, p := range c.paths {
				if got := b.Has(p); got != (i < 3) {
					t.Errorf("Has(%s) = %v, want %v", p.Name, got, i < 3)
				}
			}
			bases := b.Known(nil).For(delta, nil, nil)
			if len(bases) != 1 || bases[0].Paths != 3 {
				t.Fatalf("For = %+v, want one base of 3 paths (named twice, counted once)", bases)
			}
			// show tells a cache inventory, whose id no command prints.
			if want := map[bool]string{false: bundle.BaseBundle, true: bundle.BaseInventory}[src == invFile || src == cacheDir]; bases[0].Kind != want {
				t.Errorf("Kind = %q, want %q", bases[0].Kind, want)
			}
			if diff := cmp.Diff([]storepath.Path{c.paths[2]}, bases[0].Provides); diff != "" {
				t.Errorf("Provides (-want +got):\n%s", diff)
			}
			ni, err := b.NarInfo(ctx, c.paths[1].Hash)
			if err != nil || ni.StorePath != c.paths[1] || ni.NarSize == 0 {
				t.Errorf("NarInfo(p1) = %+v, %v", ni, err)
			}
		})
	}

	t.Run("needed", func(t *testing.T) {
		// A source nothing refers to, which the targets need: provided.
		b, err := bundle.OpenBases(ctx, []string{dir})
		if err != nil {
			t.Fatal(err)
		}
		bases := b.Known(nil).For(delta, []storepath.Path{c.paths[0], c.paths[3]}, nil)
		want := []storepath.Path{c.paths[0], c.paths[2]}
		slices.SortFunc(want, storepath.Compare)
		if diff := cmp.Diff(want, bases[0].Provides); diff != "" {
			t.Errorf("Provides (-want +got):\n%s", diff)
		}
	})
	t.Run("several", func(t *testing.T) {
		b, err := bundle.OpenBases(ctx, []string{dir, tarFile})
		if err != nil {
			t.Fatal(err)
		}
		bases := b.Known(nil).For(delta, nil, nil)
		if len(bases) != 2 || !slices.Equal(bases[0].Provides, bases[1].Provides) || len(bases[0].Provides) != 1 {
			t.Errorf("For = %+v, want both bases providing p2", bases)
		}
	})
	t.Run("not a base", func(t *testing.T) {
		junk := filepath.Join(t.TempDir(), "junk")
		os.WriteFile(junk, []byte("hello"), 0o644)
		if _, err := bundle.OpenBases(ctx, []string{junk}); !errors.Is(err, bundle.ErrNotBundle) || !strings.Contains(err.Error(), junk) {
			t.Errorf("OpenBases(junk) = %v, want ErrNotBundle naming it", err)
		}
		// A JSON file that is neither manifest.json nor an inventory is
		// not called a corrupt manifest.json.
		for content, want := range map[string]string{
			`{"format":"tarball"}`: `JSON of format "tarball", neither a bundle's manifest.json`,
			`{"version":1}`:        "JSON with no format, neither",
			"{ a = 1; }":           "neither a bundle tar, a manifest.json nor a cache inventory",
		} {
			os.WriteFile(junk, []byte(content), 0o644)
			_, err := bundle.OpenBases(ctx, []string{junk})
			if !errors.Is(err, bundle.ErrNotBundle) || errors.Is(err, bundle.ErrCorrupt) || !strings.Contains(err.Error(), junk) || !strings.Contains(err.Error(), want) {
				t.Errorf("OpenBases(%s) = %v, want ErrNotBundle naming it, saying %q", content, err, want)
			}
		}
		// An empty directory is a bundle with every file missing, as
		// verify says: a medium not mounted.
		if _, err := bundle.OpenBases(ctx, []string{t.TempDir()}); !errors.Is(err, bundle.ErrMissing) {
			t.Errorf("OpenBases(empty dir) = %v, want ErrMissing", err)
		}
		// A tar cut short before its manifest (which comes last) is
		// damaged, naming it: not an unclassified failure.
		data, err := os.ReadFile(c.tar(0, 3, nil))
		if err != nil {
			t.Fatal(err)
		}
		cut := filepath.Join(t.TempDir(), "cut.tar")
		os.WriteFile(cut, data[:len(data)/2], 0o644)
		if _, err := bundle.OpenBases(ctx, []string{cut}); !errors.Is(err, bundle.ErrCorrupt) || !strings.Contains(err.Error(), cut) || !strings.Contains(err.Error(), "no manifest.json") {
			t.Errorf("OpenBases(cut tar) = %v, want corrupt, naming it and the missing manifest", err)
		}
	})
}

// TestImportDeltaByContent imports a delta whose base was never imported
// but whose paths the cache holds, and names what an empty cache lacks.
func TestImportDeltaByContent(t *testing.T) {
	ctx := context.Background()
	c := newChain(t, 5)
	keys := signing.NewKeyring(c.sk.Public())
	base, repack := c.dir(0, 3, nil), c.tar(0, 3, nil)
	b, err := bundle.OpenBases(ctx, []string{repack})
	if err != nil {
		t.Fatal(err)
	}
	bases := b.Known(nil).For([]bundle.PathEntry{{Path: c.paths[3], References: []storepath.Path{c.paths[2]}}}, nil, nil)
	delta := c.dir(3, 5, bases)

	cacheDir := filepath.Join(t.TempDir(), "cache")
	if _, err := bundle.Import(ctx, base, cacheDir, bundle.ImportOptions{Keys: keys}); err != nil {
		t.Fatal(err)
	}
	// Refused where the cache lacks the base's paths: the cache is left
	// as it was, and each missing path is named with its base and date.
	empty := filepath.Join(t.TempDir(), "empty")
	_, err = bundle.Import(ctx, delta, empty, bundle.ImportOptions{Keys: keys})
	var ve *bundle.VerifyError
	if !errors.As(err, &ve) || !errors.Is(err, bundle.ErrMissing) {
		t.Fatalf("Import into an empty cache = %v, want one missing path", err)
	}
	// The cache did not exist: said too, as a mistyped --cache would
	// otherwise read as a cache that lost the path.
	want := []bundle.Problem{{
		File: c.paths[2].String(), Kind: bundle.KindMissing,
		Problem: fmt.Sprintf("not in the bundle or the cache; needed by %s; provided by base %s (packed 2026-03-01), never imported into this cache", c.paths[3].Base(), bases[0].ID),
	}, {
		File: empty, Kind: bundle.KindMissing,
		Problem: "no such cache: this import would have made it, so nothing a base bundle carried is in it; is --cache the cache the bases went into?",
	}}
	if diff := cmp.Diff(want, ve.Problems); diff != "" {
		t.Errorf("problem (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(empty); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused import left %s: %v", empty, err)
	}

	rep, err := bundle.Import(ctx, delta, cacheDir, bundle.ImportOptions{Keys: keys})
	if err != nil {
		t.Fatalf("Import delta of a base never imported: %v", err)
	}
	if rep.Added != 2 {
		t.Errorf("added %d paths, want 2", rep.Added)
	}

	// A path gone from the cache is named with the bundle that brought it.
	os.Remove(filepath.Join(cacheDir, c.paths[2].Hash+".narinfo"))
	rec := filepath.Join(cacheDir, bundle.RecordDir, bundle.RecordName(bundle.ID(mustRead(t, base, bundle.ManifestName))))
	if _, err := os.Stat(rec); err != nil {
		t.Fatal(err)
	}
	again := c.dir(3, 4, bases)
	_, err = bundle.Import(ctx, again, cacheDir, bundle.ImportOptions{Keys: keys})
	if !errors.As(err, &ve) || len(ve.Problems) != 1 || !strings.Contains(ve.Problems[0].Problem, "imported with "+bundle.ID(mustRead(t, base, bundle.ManifestName)).String()) {
		t.Errorf("Import after p2 vanished = %v, want only it, named as imported with the base", err)
	}
}

func TestCacheInventoryGolden(t *testing.T) {
	dir := storepath.DefaultDir
	p := func(base string) storepath.Path {
		sp, err := dir.Base(base)
		if err != nil {
			t.Fatal(err)
		}
		return sp
	}
	h := bundle.ID([]byte("nar"))
	inv := &bundle.CacheInventory{
		Tool: "nix-airgap test", Created: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), StoreDir: dir,
		Bundles: []bundle.Base{{ID: bundle.ID([]byte("b1")), Created: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), Paths: 2}},
		Paths: []bundle.InventoryPath{
			{Path: p("0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello-1.0"), NarHash: h, NarSize: 1234, Bundles: []int{0}},
			{Path: p("1a7bjbqy2xhvqzk0h7q4wn8xg0mjrw9m-glibc-2.40"), NarHash: h, NarSize: 5678},
		},
		Channels: []bundle.InventoryChannel{{Name: "nixpkgs", SHA256: h.Digest, Size: 4096}},
	}
	got, err := inv.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "inventory.golden.json")
	if u := flag.Lookup("update"); u != nil && u.Value.String() == "true" {
		os.WriteFile(golden, got, 0o644)
	}
	if diff := cmp.Diff(string(mustReadFile(t, golden)), string(got)); diff != "" {
		t.Errorf("Marshal (-golden +got):\n%s", diff)
	}
	back, err := bundle.ParseCacheInventory(got)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(inv, back, cmp.Comparer(func(a, b storepath.Hash) bool { return a.Equal(b) })); diff != "" {
		t.Errorf("Parse(Marshal) (-want +got):\n%s", diff)
	}

	for _, tt := range []struct {
		name, old, new string
		want           error
	}{
		{"manifest", `"nix-airgap-inventory"`, `"nix-airgap-bundle"`, bundle.ErrNotInventory},
		{"newer", `"version": 1`, `"version": 2`, bundle.ErrUnsupportedVersion},
		{"bad bundle index", `"bundles": [
        0
      ]`, `"bundles": [3]`, bundle.ErrCorrupt},
		{"unsorted", `0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk`, `zc9mczn41dk6sd2q2w3k4q3z5sqd8jyk`, bundle.ErrCorrupt},
		{"negative channel size", `"size": 4096`, `"size": -1`, bundle.ErrCorrupt},
	} {
		bad := strings.Replace(string(got), tt.old, tt.new, 1)
		if bad == string(got) {
			t.Fatalf("%s: the golden file lacks %q", tt.name, tt.old)
		}
		if _, err := bundle.ParseCacheInventory([]byte(bad)); !errors.Is(err, tt.want) {
			t.Errorf("%s: ParseCacheInventory = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func mustReadFile(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func FuzzParseCacheInventory(f *testing.F) {
	f.Add([]byte(`{"format":"nix-airgap-inventory","version":1,"storeDir":"/nix/store","bundles":[],"paths":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		inv, err := bundle.ParseCacheInventory(data)
		if err != nil {
			return
		}
		out, err := inv.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed inventory: %v", err)
		}
		back, err := bundle.ParseCacheInventory(out)
		if err != nil {
			t.Fatalf("Parse(Marshal): %v\n%s", err, out)
		}
		out2, _ := back.Marshal()
		if !bytes.Equal(out, out2) {
			t.Fatalf("Marshal not stable:\n%s\n%s", out, out2)
		}
	})
}

// TestSimilarPrefersNewest: of two builds of a package the bases carry,
// a binary delta is made against the one the newer bundle carried, from
// manifests and from a cache's inventory alike, whatever their hashes;
// a site's inventory holds every build gc has not removed.
func TestSimilarPrefersNewest(t *testing.T) {
	ctx := context.Background()
	sk := fuzzSeedKey
	keys := signing.NewKeyring(sk.Public())
	older := mustPath(t, strings.Repeat("z", 32)+"-foo-1.0") // the greater hash
	newer := mustPath(t, strings.Repeat("0", 32)+"-foo-1.0")
	next := mustPath(t, strings.Repeat("1", 32)+"-foo-1.0")
	write := func(p storepath.Path, created time.Time) string {
		dir := filepath.Join(t.TempDir(), "bundle")
		w, err := bundle.NewDirWriter(dir, storepath.DefaultDir, bundle.WriterOptions{Key: &sk})
		if err != nil {
			t.Fatal(err)
		}
		buf := fileNAR(t, []byte(p.Hash[:3]))
		if err := w.AddNAR(ctx, p, buf, bundle.PathMeta{Roles: role.Runtime}); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(ctx, bundle.ManifestHeader{Tool: "test", Created: created, Mode: role.ModeRuntime}); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	jan := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a, b := write(older, jan), write(newer, jan.AddDate(0, 1, 0))
	cacheDir := filepath.Join(t.TempDir(), "cache")
	for _, dir := range []string{a, b} {
		if _, err := bundle.Import(ctx, dir, cacheDir, bundle.ImportOptions{Keys: keys}); err != nil {
			t.Fatal(err)
		}
	}
	invFile := inventoryFile(t, cacheDir)
	for name, srcs := range map[string][]string{"manifests": {b, a}, "manifests, older last": {a, b}, "inventory": {invFile}} {
		bases, err := bundle.OpenBases(ctx, srcs)
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := bases.Similar(next); !ok || got.Path != newer {
			t.Errorf("%s: Similar(%s) = %s, %v; want %s, the newer bundle's", name, next, got.Path, ok, newer)
		}
	}
}

// inventoryFile writes the inventory of the cache in cacheDir to a file,
// as nix-airgap inventory does, and returns its name.
func inventoryFile(t *testing.T, cacheDir string) string {
	t.Helper()
	inv, err := bundle.InventoryCache(context.Background(), cacheDir, "test")
	if err != nil {
		t.Fatal(err)
	}
	data, err := inv.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	invFile := filepath.Join(t.TempDir(), "inventory.json")
	if err := os.WriteFile(invFile, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return invFile
}

// An import says of a bundle it extends that was never imported here
// that it was not, and nothing of a cache inventory it was packed
// against, which is never imported anywhere; of a base of a manifest that
// predates kinds, that it is either.
func TestImportLogsBasesNeverImported(t *testing.T) {
	ctx := context.Background()
	c := newChain(t, 5)
	keys := signing.NewKeyring(c.sk.Public())
	cacheDir := filepath.Join(t.TempDir(), "cache")
	if _, err := bundle.Import(ctx, c.dir(0, 3, nil), cacheDir, bundle.ImportOptions{Keys: keys}); err != nil {
		t.Fatal(err)
	}
	need := []bundle.PathEntry{{Path: c.paths[3], References: []storepath.Path{c.paths[2]}}}
	basesOf := func(src string) []bundle.Base {
		b, err := bundle.OpenBases(ctx, []string{src})
		if err != nil {
			t.Fatal(err)
		}
		return b.Known(nil).For(need, nil, nil)
	}
	fromBundle := basesOf(c.tar(0, 3, nil)) // another id than the one imported
	fromInventory := basesOf(inventoryFile(t, cacheDir))
	unknown := slices.Clone(fromBundle)
	unknown[0].Kind = ""
	for _, tt := range []struct {
		name  string
		bases []bundle.Base
		want  string
	}{
		{"bundle", fromBundle, "a base of the bundle was never imported here"},
		{"inventory", fromInventory, ""},
		{"unknown kind", unknown, "a bundle never imported here, or a cache inventory"},
	} {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, nil))
		if _, err := bundle.Import(ctx, c.dir(3, 4, tt.bases), copyDir(t, cacheDir), bundle.ImportOptions{Keys: keys, Log: log}); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		got := buf.String()
		if tt.want == "" && (strings.Contains(got, "never imported") || strings.Contains(got, "no record")) || tt.want != "" && !strings.Contains(got, tt.want) {
			t.Errorf("import of a bundle with a base of kind %s logged:\n%s\nwant %q", tt.name, got, tt.want)
		}
	}
}

// TestVerifyDeltaOutside verifies a delta alone: what it refers to but
// leaves to its bases is one warning, however many paths that is.
func TestVerifyDeltaOutside(t *testing.T) {
	ctx := context.Background()
	c := newChain(t, 5)
	b, err := bundle.OpenBases(ctx, []string{c.tar(0, 3, nil)})
	if err != nil {
		t.Fatal(err)
	}
	bases := b.Known(nil).For([]bundle.PathEntry{{Path: c.paths[3], References: c.paths[:3]}}, nil, nil)
	dir := filepath.Join(t.TempDir(), "bundle")
	w, err := bundle.NewDirWriter(dir, storepath.DefaultDir, bundle.WriterOptions{Key: &c.sk})
	if err != nil {
		t.Fatal(err)
	}
	for i, refs := range [][]storepath.Path{c.paths[:1], c.paths[:3]} {
		meta := bundle.PathMeta{Roles: role.Runtime, References: refs}
		if err := w.AddNAR(ctx, c.paths[3+i], fileNAR(t, fmt.Appendf(nil, "delta %d\n", i)), meta); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(ctx, bundle.ManifestHeader{Tool: "test", Mode: role.ModeRuntime, Bases: bases}); err != nil {
		t.Fatal(err)
	}
	rep, err := bundle.Verify(ctx, dir, bundle.VerifyOptions{Keys: signing.NewKeyring(c.sk.Public())})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{fmt.Sprintf("%s (referred to by %s) and 2 more store paths: not in this delta bundle, which refers to them; the cache it is imported into must have them (checked on import)", c.paths[0].Base(), c.paths[3].Base())}
	if diff := cmp.Diff(want, rep.Warnings); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
}

// TestOpenBasesRedacts: a base given as a URL with a password, which is
// no file, is named without it.
func TestOpenBasesRedacts(t *testing.T) {
	_, err := bundle.OpenBases(t.Context(), []string{"http://site:s3cret@cache.site/bundle.tar"})
	if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "site:xxxxx@cache.site") {
		t.Errorf("OpenBases = %v; want an error naming the base without its password", err)
	}
}

// TestImportSwapped: a cache given as the bundle and a bundle as --cache
// is refused as a bundle where the cache belongs, saying the two are
// swapped; the bundle is left as it was.
func TestImportSwapped(t *testing.T) {
	ctx := context.Background()
	c := newChain(t, 1)
	keys := signing.NewKeyring(c.sk.Public())
	b := c.dir(0, 1, nil)
	cacheDir := filepath.Join(t.TempDir(), "cache")
	if _, err := bundle.Import(ctx, b, cacheDir, bundle.ImportOptions{Keys: keys}); err != nil {
		t.Fatal(err)
	}
	before := nixtest.TreeHash(t, b)
	_, err := bundle.Import(ctx, cacheDir, b, bundle.ImportOptions{Keys: keys})
	if !errors.Is(err, bundle.ErrNotCache) || !strings.Contains(err.Error(), "the two are swapped") {
		t.Errorf("import CACHE --cache BUNDLE = %v; want not a cache, saying the two are swapped", err)
	}
	if nixtest.TreeHash(t, b) != before {
		t.Error("the refused import changed the bundle")
	}
}

// TestImportSkippedBase imports B3, a delta of B2, itself a delta of B1,
// into a cache that imported B1 and never B2 (a week's crossing
// skipped). It is refused, naming each path B2 provides that the cache
// lacks: those B3 refers to, and those nothing in B3 refers to (a target
// B2 carried), which the import would otherwise leave out silently.
func TestImportSkippedBase(t *testing.T) {
	ctx := context.Background()
	c := newChain(t, 6)
	keys := signing.NewKeyring(c.sk.Public())
	b1 := c.dir(0, 2, nil)
	basesOf := func(src string, paths []bundle.PathEntry, needed []storepath.Path) []bundle.Base {
		b, err := bundle.OpenBases(ctx, []string{src})
		if err != nil {
			t.Fatal(err)
		}
		return b.Known(nil).For(paths, needed, nil)
	}
	b2 := c.dir(2, 4, basesOf(b1, []bundle.PathEntry{{Path: c.paths[2], References: c.paths[1:2]}}, nil))
	b2ID := bundle.ID(mustRead(t, b2, bundle.ManifestName))
	cacheDir := filepath.Join(t.TempDir(), "cache")
	if _, err := bundle.Import(ctx, b1, cacheDir, bundle.ImportOptions{Keys: keys}); err != nil {
		t.Fatal(err)
	}
	provided := func(p storepath.Path, by string) bundle.Problem {
		return bundle.Problem{File: p.String(), Kind: bundle.KindMissing, Problem: fmt.Sprintf(
			"not in the bundle or the cache; %s; provided by base %s (packed 2026-03-01), never imported into this cache", by, b2ID)}
	}
	const unreferred = "nothing in the bundle refers to it, but its targets need it"
	for _, tt := range []struct {
		name string
		// B3 carries p5 alone, referring to refs; needed are the
		// paths its targets need that it leaves out, beyond those.
		refs, needed []storepath.Path
		want         []bundle.Problem
	}{
		{"referred to", c.paths[3:4], nil, []bundle.Problem{provided(c.paths[3], "needed by "+c.paths[5].Base())}},
		{"referred to by nothing", nil, c.paths[2:4], []bundle.Problem{provided(c.paths[2], unreferred), provided(c.paths[3], unreferred)}},
		{"both", c.paths[3:4], c.paths[2:3], []bundle.Problem{provided(c.paths[2], unreferred), provided(c.paths[3], "needed by "+c.paths[5].Base())}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			entry := bundle.PathEntry{Path: c.paths[5], References: tt.refs}
			b3 := filepath.Join(t.TempDir(), "b3")
			w, err := bundle.NewDirWriter(b3, storepath.DefaultDir, bundle.WriterOptions{Key: &c.sk})
			if err != nil {
				t.Fatal(err)
			}
			if err := w.AddNAR(ctx, entry.Path, fileNAR(t, []byte("b3\n")), bundle.PathMeta{Roles: role.Runtime, References: tt.refs}); err != nil {
				t.Fatal(err)
			}
			hdr := bundle.ManifestHeader{Tool: "test", Mode: role.ModeRuntime, Bases: basesOf(b2, []bundle.PathEntry{entry}, tt.needed)}
			if err := w.Close(ctx, hdr); err != nil {
				t.Fatal(err)
			}
			site := copyDir(t, cacheDir)
			_, err = bundle.Import(ctx, b3, site, bundle.ImportOptions{Keys: keys})
			var ve *bundle.VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("Import of B3 skipping B2 = %v, want it refused naming what B2 provides", err)
			}
			if diff := cmp.Diff(tt.want, ve.Problems); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
			if _, err := os.Stat(filepath.Join(site, c.paths[5].Hash+".narinfo")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused import added %s: %v", c.paths[5], err)
			}
			// With B2 imported, B3 imports.
			if _, err := bundle.Import(ctx, b2, site, bundle.ImportOptions{Keys: keys}); err != nil {
				t.Fatal(err)
			}
			if _, err := bundle.Import(ctx, b3, site, bundle.ImportOptions{Keys: keys}); err != nil {
				t.Errorf("Import of B3 after B2: %v", err)
			}
		})
	}
}
