package pack_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/gc"
	"github.com/nix-airgap/nix-airgap/internal/pack"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
)

// TestDeltaByContent is issue 14's first done-when: a site imported a
// base; the connected side re-packed the base (a new id) and packs an
// updated system (a new toplevel over the base's hello) --since that
// copy, its tar, its manifest alone, or the site's cache inventory. Each delta imports into the site's cache, which never
// saw the copy; into an empty cache it is refused, naming each missing
// store path with the base that carried it and its date. Served from the
// cache, stock Nix substitutes the updated system with nothing built.
func TestDeltaByContent(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	tmp := t.TempDir()
	keys := signing.NewKeyring(f.key.Public())
	opts := plan.Options{Mode: role.ModeSources}

	base, site := f.importedBase(t, tmp, opts)
	inv, err := bundle.InventoryCache(ctx, site, "test")
	if err != nil {
		t.Fatal(err)
	}
	invData, err := inv.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	invFile := filepath.Join(tmp, "site-inventory.json")
	if err := os.WriteFile(invFile, invData, 0o644); err != nil {
		t.Fatal(err)
	}

	// The same closure re-packed uncompressed: other files, another id.
	repack, repackTar := filepath.Join(tmp, "repack"), filepath.Join(tmp, "repack.tar")
	f.pack(t, f.targets(t), pack.Options{Options: opts, Out: repack, Compression: "none"})
	f.pack(t, f.targets(t), pack.Options{Options: opts, Out: repackTar, Compression: "none"})
	manifestOnly := filepath.Join(t.TempDir(), bundle.ManifestName)
	if err := os.WriteFile(manifestOnly, mustReadFile(t, filepath.Join(repack, bundle.ManifestName)), 0o644); err != nil {
		t.Fatal(err)
	}
	if bundle.ID(mustReadFile(t, filepath.Join(repack, bundle.ManifestName))).Equal(bundle.ID(mustReadFile(t, filepath.Join(base, bundle.ManifestName)))) {
		t.Fatal("the re-packed base has the base's id")
	}

	update := f.w.Args("v2", "")
	newTop := f.w.OutPaths(t, update...)["toplevel"]
	hello := f.outs["hello"]
	baseManifest, err := bundle.ParseManifest(mustReadFile(t, filepath.Join(base, bundle.ManifestName)))
	if err != nil {
		t.Fatal(err)
	}
	var wantProvides []string
	for _, e := range baseManifest.Paths {
		if e.Path.String() != f.outs["toplevel"] {
			wantProvides = append(wantProvides, e.Path.String())
		}
	}
	if !slices.Contains(wantProvides, hello) || len(wantProvides) < 5 {
		t.Fatalf("the base holds %q: want hello and the sources", wantProvides)
	}
	var last string
	bases := map[string]bundle.Base{}
	for _, since := range []string{repack, repackTar, manifestOnly, invFile} {
		name := filepath.Base(since)
		delta := filepath.Join(tmp, "delta-"+name+".tar")
		res := f.pack(t, f.targets(t, update...), pack.Options{Options: opts, Out: delta, Since: []string{since}})
		if got := resultPaths(res); len(got) != 1 || got[0] != newTop {
			t.Errorf("since %s: packed %v, want only the new toplevel", name, got)
		}
		// The base provides everything the update needs but its new
		// toplevel: hello, which it refers to, and the sources, which
		// nothing refers to and which a sources-mode bundle is for.
		if bs := res.Manifest.Bases; len(bs) != 1 || !slices.Equal(provided(bs[0]), wantProvides) {
			t.Fatalf("since %s: bases %+v; want one, providing %q", name, bs, wantProvides)
		}
		bases[since] = res.Manifest.Bases[0]
		cacheDir := copyTree(t, site)
		rep, err := bundle.Import(ctx, delta, cacheDir, bundle.ImportOptions{Keys: keys})
		if err != nil {
			t.Fatalf("import the delta since %s into the site's cache: %v", name, err)
		}
		if rep.Added != len(res.Paths) {
			t.Errorf("since %s: %d paths added, the delta has %d", name, rep.Added, len(res.Paths))
		}
		last = cacheDir
	}

	// Into a cache without the base, the delta is refused, and what is
	// missing is named by store path, with its base and that base's date:
	// hello, which the system refers to, and what the base provides that
	// nothing in the delta refers to (its build-mode sources and build
	// outputs); the cache, which did not exist, is said to be none.
	empty := filepath.Join(tmp, "empty")
	_, err = bundle.Import(ctx, filepath.Join(tmp, "delta-"+filepath.Base(repackTar)+".tar"), empty, bundle.ImportOptions{Keys: keys})
	var ve *bundle.VerifyError
	if !errors.As(err, &ve) || !errors.Is(err, bundle.ErrMissing) {
		t.Fatalf("import into an empty cache = %v, want a VerifyError for missing paths", err)
	}
	b := bases[repackTar]
	n := len(ve.Problems) - 1
	if n < 1 || ve.Problems[n].File != empty || !strings.Contains(ve.Problems[n].Problem, "no such cache") {
		t.Fatalf("problems %q, want %s missing and more, then %s no such cache", ve.Problems, hello, empty)
	}
	want := "provided by base " + b.ID.String() + " (packed " + b.Created.Format("2006-01-02") + "), never imported into this cache"
	var named []string
	for _, p := range ve.Problems[:n] {
		named = append(named, p.File)
		if p.Kind != bundle.KindMissing || !slices.Contains(provided(b), p.File) || !strings.Contains(p.Problem, want) {
			t.Errorf("problem %s: %s: %s; want a path the base provides missing, %s", p.File, p.Kind, p.Problem, want)
		}
	}
	if !slices.Contains(named, hello) {
		t.Errorf("missing %q, want %s among them", named, hello)
	}
	if _, statErr := os.Stat(empty); statErr == nil {
		t.Errorf("a refused import left %s behind", empty)
	}

	// Stock Nix, offline, substitutes the updated system from serve.
	client, url := f.offline(t, last)
	f.substitutes(t, client, url, "the updated system", newTop, f.w.Greeting("v2", ""), update...)
}

func provided(b bundle.Base) []string {
	var out []string
	for _, p := range b.Provides {
		out = append(out, p.String())
	}
	return out
}

func mustReadFile(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// copyTree copies a directory tree, keeping modes.
func copyTree(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	return dst
}

// TestDeltaOfDelta packs B1 whole, B2 (a new toplevel) --since B1 and B3
// (another toplevel) --since B2 alone, in build mode. A site that imported
// B2 holds what B1 brought too (B2's paths refer to it, and B2's manifest
// says B1 provided its build inputs), so B3 carries only its toplevel and
// nothing B1 carried: not cc, the libraries or the sources again. B1, B2
// and B3 imported in order into one cache, gc keeping B3 alone keeps all
// of those, and stock Nix substitutes B3's system from it.
func TestDeltaOfDelta(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	tmp := t.TempDir()
	opts := plan.Options{Mode: role.ModeBuild}
	b1, b2, b3 := filepath.Join(tmp, "b1"), filepath.Join(tmp, "b2.tar"), filepath.Join(tmp, "b3")
	r1 := f.pack(t, f.targets(t), pack.Options{Options: opts, Out: b1})
	v2, v3 := f.w.Args("v2", ""), f.w.Args("v3", "")
	r2 := f.pack(t, f.targets(t, v2...), pack.Options{Options: opts, Out: b2, Since: []string{b1}})
	if got, want := resultPaths(r2), []string{f.w.OutPaths(t, v2...)["toplevel"]}; !slices.Equal(got, want) {
		t.Fatalf("B2 carries %q, want only %q", got, want)
	}
	top3 := f.w.OutPaths(t, v3...)["toplevel"]
	r3 := f.pack(t, f.targets(t, v3...), pack.Options{Options: opts, Out: b3, Since: []string{b2}})
	if got := resultPaths(r3); !slices.Equal(got, []string{top3}) {
		t.Errorf("B3 carries %q, want only its toplevel %s", got, top3)
	}
	inB1 := map[string]bool{}
	for _, p := range resultPaths(r1) {
		inB1[p] = true
	}
	for _, p := range resultPaths(r3) {
		if inB1[p] {
			t.Errorf("B3 carries %s again, which B1 carried", p)
		}
	}
	// What B3 leaves out, B2 is named as providing, though B2 carries
	// only its own toplevel: gc keeps those paths for B3.
	cc := f.outs["cc"]
	if bs := r3.Manifest.Bases; len(bs) != 1 || !slices.Contains(provided(bs[0]), cc) || !slices.Contains(provided(bs[0]), f.outs["hello"]) {
		t.Errorf("B3's bases %+v: want B2, providing cc %s and hello", bs, cc)
	}
	// B1's paths but its toplevel, none of which B2 carries.
	if want := len(r1.Paths) - 1; r3.InBases != want || r3.InBasesNotCarried != want {
		t.Errorf("B3 left out %d paths, %d not carried by B2; want %d, all of them", r3.InBases, r3.InBasesNotCarried, want)
	}

	keys := signing.NewKeyring(f.key.Public())
	cacheDir := filepath.Join(tmp, "site")
	for _, b := range []string{b1, b2, b3} {
		if _, err := bundle.Import(ctx, b, cacheDir, bundle.ImportOptions{Keys: keys}); err != nil {
			t.Fatalf("import %s after the bundles before it: %v", filepath.Base(b), err)
		}
	}
	// gc keeping B3 alone keeps what B3's manifest says B2 provides, B1's
	// build inputs too: only the two older toplevels go.
	rep, err := gc.Collect(ctx, cacheDir, gc.Options{Roots: gc.Roots{KeepBundles: 1}, Grace: -1})
	if err != nil {
		t.Fatal(err)
	}
	if want := sorted([]string{f.top, resultPaths(r2)[0]}); !slices.Equal(rep.RemovedPaths, want) {
		t.Errorf("gc keeping B3 removed %q, want only the older toplevels %q", rep.RemovedPaths, want)
	}
	client, url := f.offline(t, cacheDir)
	f.substitutes(t, client, url, "B3's system", top3, f.w.Greeting("v3", ""), v3...)
}

// TestSkippedCrossing packs B1 whole, B2 (the v2 system) --since B1, and
// B3 (the v2 and v3 systems) --since B2, which leaves out the v2 system
// B2 carries, though nothing in B3 refers to it (the v3 system travels as
// a binary delta against it). A site that imported B1 and never B2
// refuses B3, naming the v2 system and B2 as never imported, and the
// delta's missing base. B3 packed --since that site's inventory and B2
// (for its NAR files) goes by the inventory, carries the v2 system, and
// imports.
func TestSkippedCrossing(t *testing.T) {
	f, tmp := newFixture(t), t.TempDir()
	v2, v3 := f.w.Args("v2", ""), f.w.Args("v3", "")
	top2 := f.w.OutPaths(t, v2...)["toplevel"]
	ctx, opts := t.Context(), plan.Options{Mode: role.ModeBuild}
	b1, b2, b3 := filepath.Join(tmp, "b1"), filepath.Join(tmp, "b2"), filepath.Join(tmp, "b3")
	f.pack(t, f.targets(t), pack.Options{Options: opts, Out: b1})
	f.pack(t, f.targets(t, v2...), pack.Options{Options: opts, Out: b2, Since: []string{b1}})
	both := append(f.targets(t, v2...), f.targets(t, v3...)...)
	r3 := f.pack(t, both, pack.Options{Options: opts, Out: b3, Since: []string{b2}})
	if slices.Contains(resultPaths(r3), top2) {
		t.Fatalf("B3 --since B2 carries %s, which B2 carries", top2)
	}

	keys := signing.NewKeyring(f.key.Public())
	site := filepath.Join(tmp, "site")
	if _, err := bundle.Import(ctx, b1, site, bundle.ImportOptions{Keys: keys}); err != nil {
		t.Fatal(err)
	}
	_, err := bundle.Import(ctx, b3, site, bundle.ImportOptions{Keys: keys})
	var ve *bundle.VerifyError
	if !errors.As(err, &ve) {
		t.Fatalf("import of B3 at a site that never imported B2 = %v, want refused", err)
	}
	b2Base := r3.Manifest.Bases[0]
	want := []bundle.Problem{{File: top2, Kind: bundle.KindMissing, Problem: "not in the bundle or the cache; nothing in the bundle refers to it, but its targets need it; provided by base " +
		b2Base.ID.String() + " (packed " + b2Base.Created.Format("2006-01-02") + "), never imported into this cache"}}
	if len(ve.Problems) != 2 {
		t.Fatalf("problems %q, want two: %s missing, and B3's v3 system's binary delta against it", ve.Problems, top2)
	}
	if diff := cmp.Diff(want, ve.Problems[:1]); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
	// The v3 system travels as a binary delta against the v2 system,
	// which the site lacks too.
	if p := ve.Problems[1]; p.Kind != bundle.KindMissing || !strings.HasSuffix(p.File, ".nar.delta") || !strings.Contains(p.Problem, "its delta is against "+top2) {
		t.Errorf("problem %s: %s: %s; want the v3 system's delta missing its base %s", p.File, p.Kind, p.Problem, top2)
	}

	// The site's cache given as it is is inventoried, as an inventory
	// file it sent back would be (internal/bundle tests both are read
	// alike).
	again := filepath.Join(tmp, "b3-again")
	r := f.pack(t, both, pack.Options{Options: opts, Out: again, Since: []string{site, b2}})
	if !slices.Contains(resultPaths(r), top2) {
		t.Errorf("B3 --since the inventory and B2 carries %q, want %s among them", resultPaths(r), top2)
	}
	if _, err := bundle.Import(ctx, again, site, bundle.ImportOptions{Keys: keys}); err != nil {
		t.Errorf("import of B3 packed --since the site's inventory: %v", err)
	}
}
