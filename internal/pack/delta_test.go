package pack_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
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
	// missing is named by store path, with its base and that base's date;
	// the cache, which did not exist, is said to be none.
	empty := filepath.Join(tmp, "empty")
	_, err = bundle.Import(ctx, filepath.Join(tmp, "delta-"+filepath.Base(repackTar)+".tar"), empty, bundle.ImportOptions{Keys: keys})
	var ve *bundle.VerifyError
	if !errors.As(err, &ve) || !errors.Is(err, bundle.ErrMissing) {
		t.Fatalf("import into an empty cache = %v, want a VerifyError for missing paths", err)
	}
	b := bases[repackTar]
	if len(ve.Problems) != 2 || ve.Problems[1].File != empty || !strings.Contains(ve.Problems[1].Problem, "no such cache") {
		t.Fatalf("problems %q, want two: %s missing, and %s no such cache", ve.Problems, hello, empty)
	}
	p := ve.Problems[0]
	want := "carried by base " + b.ID.String() + " (packed " + b.Created.Format("2006-01-02") + ")"
	if p.Kind != bundle.KindMissing || p.File != hello || !strings.Contains(p.Problem, want) {
		t.Errorf("problem %s: %s: %s; want %s missing, %s)", p.File, p.Kind, p.Problem, hello, want)
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
