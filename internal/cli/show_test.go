package cli_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/cli"
	"github.com/nix-airgap/nix-airgap/internal/sbom"
	"github.com/nix-airgap/nix-airgap/internal/sbom/sbomtest"
)

// TestShowAndDiff packs the test world, a variant of its toplevel and a
// deep change as deltas of it, and checks that show and diff name the
// right packages, versions and sources, for bundles, tars and a cache.
func TestShowAndDiff(t *testing.T) {
	w, tmp, keyFile, pubFile := newKeyedWorld(t, "show-test-1")
	pack := func(out string, variant, deep string, extra ...string) string {
		t.Helper()
		args := append([]string{"pack", "--no-progress", "--key", keyFile, "--out", out, "--file", w.File, "--attr", "toplevel"}, w.Args(variant, deep)...)
		code, _, stderr := run(t, append(args, extra...)...)
		if code != 0 {
			t.Fatalf("pack %s: exit %d\n%s", out, code, stderr)
		}
		return stderr
	}
	base, variant, deep := filepath.Join(tmp, "base"), filepath.Join(tmp, "variant"), filepath.Join(tmp, "deep.tar")
	pack(base, "", "", "--sbom")
	variantSummary := pack(variant, "v2", "", "--since", base)
	pack(deep, "", "d2", "--since", base)

	// show: every package with its version, every source with its URL.
	code, stdout, stderr := run(t, "show", "--json", "--public-key", pubFile, base)
	if code != 0 {
		t.Fatalf("show: exit %d\n%s", code, stderr)
	}
	checkJSONScheme(t, "show", stdout)
	var inv struct {
		Bundles []struct {
			Tool      string
			Mode      string
			Targets   []struct{ Spec string }
			Signature struct{ Trusted string }
		}
		Packages []struct {
			Name, Version string
			Origins       []string
		}
		Sources []struct {
			Name string
			URLs []string
			Hash string
		}
	}
	if err := json.Unmarshal([]byte(stdout), &inv); err != nil {
		t.Fatalf("show --json: %v\n%s", err, stdout)
	}
	var pkgs []string
	for _, p := range inv.Packages {
		pkgs = append(pkgs, p.Name+" "+p.Version)
		if !slices.Equal(p.Origins, []string{"store"}) && !slices.Equal(p.Origins, []string{"build"}) {
			t.Errorf("package %s came from %v, want the store or a build", p.Name, p.Origins)
		}
	}
	if diff := cmp.Diff([]string{"cc 1.0", "demo-system ", "hello 1.0", "libbase 1.0", "libgreet 1.0"}, pkgs); diff != "" {
		t.Errorf("show: packages (-want +got):\n%s", diff)
	}
	wantSources := map[string]string{}
	for _, f := range w.FODs() {
		wantSources[f.Name] = w.URL(f)
	}
	gotSources := map[string]string{}
	for _, s := range inv.Sources {
		gotSources[s.Name] = strings.Join(s.URLs, " ")
		if !strings.HasPrefix(s.Hash, "fixed:") {
			t.Errorf("source %s: hash %q", s.Name, s.Hash)
		}
	}
	if diff := cmp.Diff(wantSources, gotSources); diff != "" {
		t.Errorf("show: source URLs (-want +got):\n%s", diff)
	}
	if b := inv.Bundles; len(b) != 1 || b[0].Mode != "build" || b[0].Signature.Trusted != "show-test-1" || !strings.HasPrefix(b[0].Tool, "nix-airgap") || len(b[0].Targets) != 1 {
		t.Errorf("show: bundle %+v", b)
	}
	code, stdout, _ = run(t, "show", base)
	if code != 0 || !regexp.MustCompile(`\n  libgreet +1\.0 +out `).MatchString(stdout) || !strings.Contains(stdout, w.URL(w.FOD(t, "src"))) || !strings.Contains(stdout, "not checked") {
		t.Errorf("show (text): exit %d\n%s", code, stdout)
	}
	// The SBOM: show's, and the one in the bundle, which the manifest
	// covers.
	code, stdout, stderr = run(t, "show", "--format", "cyclonedx", base)
	if code != 0 {
		t.Fatalf("show --format cyclonedx: exit %d\n%s", code, stderr)
	}
	sbomtest.Validate(t, []byte(stdout))
	if !strings.Contains(stdout, `"purl": "pkg:nix/libgreet@1.0"`) || !strings.Contains(stdout, w.URL(w.FOD(t, "patch"))) {
		t.Errorf("show --format cyclonedx lacks libgreet's purl or the patch's URL:\n%s", stdout)
	}
	inBundle, err := os.ReadFile(filepath.Join(base, sbom.FileName))
	if err != nil {
		t.Fatal(err)
	}
	sbomtest.Validate(t, inBundle)
	if !strings.Contains(string(inBundle), `"name": "libgreet"`) {
		t.Errorf("the bundle's SBOM lacks libgreet:\n%s", inBundle)
	}
	// A key that did not sign it: exit 3.
	otherPub := filepath.Join(tmp, "other.pub")
	run(t, "keygen", "--name", "other-1", "--secret-key", filepath.Join(tmp, "other.sec"), "--public-key", otherPub)
	// It says who signed, and which key file to give, as verify does.
	const hint = ": not signed by a trusted key: signed by show-test-1\nTo trust it, give its public key with --public-key: the packing key's .pub file, not the cache key's.\n"
	if code, _, stderr := run(t, "show", "--public-key", otherPub, base); code != cli.ExitUntrusted || !strings.HasSuffix(stderr, hint) {
		t.Errorf("show with a key that did not sign: exit %d, want %d and a stderr ending %q:\n%s", code, cli.ExitUntrusted, hint, stderr)
	}

	// diff's --public-key is show's: each side's signer, checked.
	code, stdout, stderr = run(t, "diff", base, variant, "--public-key", pubFile)
	if code != 0 || !strings.HasPrefix(stdout, "OLD signature: by show-test-1 (verified)\nNEW signature: by show-test-1 (verified)\n") {
		t.Errorf("diff --public-key: exit %d\n%s%s\nwant both sides verified", code, stdout, stderr)
	}
	code, stdout, stderr = run(t, "diff", base, variant, "--public-key", otherPub)
	if code != cli.ExitUntrusted || !strings.Contains(stdout, "NEW signature: by show-test-1 (NOT a trusted key, or a bad signature)\n") ||
		!strings.Contains(stderr, "diff "+base+": bundle sha256:") || !strings.HasSuffix(stderr, hint) {
		t.Errorf("diff --public-key with a key that did not sign: exit %d, want %d\n%s%s", code, cli.ExitUntrusted, stdout, stderr)
	}

	type change struct {
		Name, Change string
		NewPaths     []string
	}
	diff := func(old, new string) (changes []change, sourcesAdded int) {
		t.Helper()
		code, stdout, stderr := run(t, "diff", "--json", old, new)
		if code != 0 {
			t.Fatalf("diff %s %s: exit %d\n%s", old, new, code, stderr)
		}
		checkJSONScheme(t, "diff", stdout)
		var d struct {
			Packages     []change
			SourcesAdded []struct{ Name string }
		}
		if err := json.Unmarshal([]byte(stdout), &d); err != nil {
			t.Fatal(err)
		}
		return d.Packages, len(d.SourcesAdded)
	}
	outs := w.OutPaths(t, w.Args("v2", "")...)
	// A variant changes the toplevel only: one changed path.
	got, srcs := diff(base, variant)
	if want := []change{{"demo-system", "rebuild", []string{outs["toplevel"]}}}; !cmp.Equal(want, got) || srcs != 0 {
		t.Errorf("diff base variant: %+v, %d sources added; want %+v", got, srcs, want)
	}
	if !strings.Contains(variantSummary, "demo-system: ε rebuilt") {
		t.Errorf("pack --since printed no diff:\n%s", variantSummary)
	}
	// A deep change rebuilds every runtime package, and no source.
	got, srcs = diff(base, deep)
	var names []string
	for _, c := range got {
		if c.Change != "rebuild" || len(c.NewPaths) != 1 {
			t.Errorf("diff base deep: %+v, want a rebuild of one path", c)
		}
		names = append(names, c.Name)
	}
	if want := []string{"demo-system", "hello", "libbase", "libgreet"}; !slices.Equal(want, names) || srcs != 0 {
		t.Errorf("diff base deep: packages %v, %d sources added; want %v and none", names, srcs, want)
	}

	// A changed SBOM fails verify, naming it.
	if code, _, stderr := run(t, "verify", "--public-key", pubFile, base); code != 0 {
		t.Fatalf("verify %s: exit %d\n%s", base, code, stderr)
	}
	tampered := filepath.Join(tmp, "tampered")
	if err := os.CopyFS(tampered, os.DirFS(base)); err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(inBundle), `"name": "libgreet"`, `"name": "libgreat"`, 1)
	if err := os.WriteFile(filepath.Join(tampered, sbom.FileName), []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, _ = run(t, "verify", "--public-key", pubFile, tampered)
	if code != cli.ExitCorrupt || !strings.Contains(stdout, sbom.FileName) {
		t.Errorf("verify of a bundle with a changed SBOM: exit %d, want %d naming %s\n%s", code, cli.ExitCorrupt, sbom.FileName, stdout)
	}

	// A cache holding the base and the variant: both toplevels.
	cache := filepath.Join(tmp, "cache")
	for _, b := range []string{base, variant} {
		if code, _, stderr := run(t, "import", b, "--cache", cache, "--public-key", pubFile); code != 0 {
			t.Fatalf("import %s: %s", b, stderr)
		}
	}
	code, stdout, _ = run(t, "show", "--public-key", pubFile, cache)
	if code != 0 || strings.Count(stdout, "imported bundle ") != 2 || !strings.Contains(stdout, "demo-system  ε") {
		t.Errorf("show cache: exit %d\n%s", code, stdout)
	}
	// The cache keeps the base's toplevel beside the variant's: a second
	// build, not a rebuild.
	got, _ = diff(base, cache)
	if want := []change{{"demo-system", "builds", []string{outs["toplevel"]}}}; !cmp.Equal(want, got) {
		t.Errorf("diff base cache: %+v, want %+v", got, want)
	}
}

// TestDiffDeltaOfCache: a site imported a bundle and a deep change of it,
// and the next deep change was packed against the cache's inventory with
// binary deltas. Against the inventory, and against the cache itself,
// diff reads the delta as what it stands for: nothing its base provides
// (the sources, the compiler) shows as removed, and what the cache holds
// beyond it (the two earlier builds of each runtime package) shows as no
// longer needed. An inventory records no signature: --public-key
// checks NEW's.
func TestDiffDeltaOfCache(t *testing.T) {
	w, tmp, keyFile, pubFile := newKeyedWorld(t, "diff-test-1")
	pack := func(out, deep, since string) {
		t.Helper()
		args := append([]string{"pack", "--no-progress", "--secret-key", keyFile, "--out", out, "--file", w.File, "--attr", "toplevel"}, w.Args("", deep)...)
		if since != "" {
			args = append(args, "--since", since)
		}
		if code, _, stderr := run(t, args...); code != 0 {
			t.Fatalf("pack %s: exit %d\n%s", out, code, stderr)
		}
	}
	base, d1, d2, cache, inv := filepath.Join(tmp, "base"), filepath.Join(tmp, "d1"), filepath.Join(tmp, "d2"), filepath.Join(tmp, "cache"), filepath.Join(tmp, "inventory.json")
	pack(base, "", "")
	pack(d1, "d1", base)
	for _, b := range []string{base, d1} {
		if code, _, stderr := run(t, "import", b, "--cache", cache, "--public-key", pubFile, "--no-progress"); code != 0 {
			t.Fatalf("import %s: exit %d\n%s", b, code, stderr)
		}
	}
	if code, _, stderr := run(t, "inventory", "--cache", cache, "--out", inv); code != 0 {
		t.Fatalf("inventory: exit %d\n%s", code, stderr)
	}
	pack(d2, "d2", inv)

	type report struct {
		Changes        []string
		SourcesRemoved int
		Removed        int
		Note           bool
	}
	want := report{
		Changes: []string{"demo-system builds", "hello builds", "libbase builds", "libgreet builds"},
		Removed: 8, Note: true,
	}
	for _, old := range []string{inv, cache} {
		code, stdout, stderr := run(t, "diff", "--json", old, d2)
		if code != 0 {
			t.Fatalf("diff %s d2: exit %d\n%s", old, code, stderr)
		}
		checkJSONScheme(t, "diff", stdout)
		var d struct {
			Packages       []struct{ Name, Change string }
			SourcesRemoved []struct{ Name string }
			PathsRemoved   struct{ Paths int }
			Notes          []string
		}
		if err := json.Unmarshal([]byte(stdout), &d); err != nil {
			t.Fatal(err)
		}
		got := report{Changes: []string{}, SourcesRemoved: len(d.SourcesRemoved), Removed: d.PathsRemoved.Paths,
			Note: len(d.Notes) == 1 && strings.HasPrefix(d.Notes[0], "NEW is a delta of OLD: it is read as its own paths and the 6 paths of OLD its bases provide")}
		for _, c := range d.Packages {
			got.Changes = append(got.Changes, c.Name+" "+c.Change)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("diff %s d2 (-want +got):\n%s\nnotes %q", filepath.Base(old), diff, d.Notes)
		}
		code, stdout, _ = run(t, "diff", old, d2)
		if code != 0 || !strings.Contains(stdout, "hello: 1.0 rebuilt, builds 2 → 1") || !strings.Contains(stdout, "; 8 paths no longer needed (") || strings.Contains(stdout, "removed") {
			t.Errorf("diff %s d2: exit %d\n%s\nwant hello rebuilt and 8 paths no longer needed, nothing removed", filepath.Base(old), code, stdout)
		}
	}

	// --public-key, as show's: each side's signers, checked.
	code, stdout, stderr := run(t, "diff", cache, d2, "--public-key", pubFile)
	if code != 0 || !strings.Contains(stdout, "OLD: 2 bundles, all signed by diff-test-1 (verified)\nNEW signature: by diff-test-1 (verified)\n") {
		t.Errorf("diff --public-key: exit %d\n%s%s\nwant both sides verified", code, stdout, stderr)
	}
	// An inventory records no signature: only NEW's is checked.
	if code, stdout, stderr := run(t, "diff", inv, d2, "--public-key", pubFile); code != 0 || !strings.HasPrefix(stdout, "NEW signature: by diff-test-1 (verified)\n") {
		t.Errorf("diff INVENTORY NEW --public-key: exit %d\n%s%s\nwant NEW verified", code, stdout, stderr)
	}
}

// TestDiffStoreDirs checks that diff refuses two inventories of different
// store dirs, as a wrong argument naming both, and prints no diff, where
// every path would show as removed and added.
func TestDiffStoreDirs(t *testing.T) {
	dir := t.TempDir()
	inventory := func(name, storeDir string) string {
		t.Helper()
		cache, file := filepath.Join(dir, name), filepath.Join(dir, name+".json")
		writeTestFile(t, filepath.Join(cache, "nix-cache-info"), "StoreDir: "+storeDir+"\nWantMassQuery: 1\nPriority: 40\n")
		if code, _, stderr := run(t, "inventory", "--cache", cache, "--out", file); code != 0 {
			t.Fatalf("inventory %s: exit %d: %s", cache, code, stderr)
		}
		return file
	}
	a, b := inventory("a", "/nix/store"), inventory("b", "/custom/store")
	code, stdout, stderr := run(t, "diff", a, b)
	want := "nix-airgap: diff " + a + " " + b + ": wrong store dir: " + a + " holds paths of /nix/store, " + b + " of /custom/store; diff compares bundles and caches of one store dir\n"
	if code != cli.ExitUsage || stdout != "" || stderr != want {
		t.Errorf("diff of two store dirs: exit %d, stdout %q, stderr %q; want exit %d, no stdout, stderr %q", code, stdout, stderr, cli.ExitUsage, want)
	}
	if code, _, stderr := run(t, "diff", a, inventory("c", "/nix/store")); code != 0 {
		t.Errorf("diff of one store dir: exit %d: %s", code, stderr)
	}
}
