package inventory_test

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/inventory"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

var update = flag.Bool("update", false, "rewrite golden files")

const dir = storepath.Dir("/nix/store")

func hash(s string) storepath.Hash {
	sum := sha256.Sum256([]byte(s))
	return storepath.Hash{Algo: storepath.SHA256, Digest: sum[:]}
}

// entry makes a path entry named name, with a deriver drv ("" for none).
func entry(t *testing.T, name, drv string, roles role.Set, size uint64) bundle.PathEntry {
	t.Helper()
	h := hash(name).Nix32()[:32]
	p, err := dir.Base(h + "-" + name)
	if err != nil {
		t.Fatal(err)
	}
	e := bundle.PathEntry{
		Path: p, NarHash: hash(name + "nar"), NarSize: size, URL: "nar/" + hash(name).Nix32() + ".nar.zst",
		FileHash: hash(name), FileSize: size / 2, Compression: "zstd", Roles: roles,
		Origin: &bundle.Origin{From: bundle.FromStore},
	}
	if drv != "" {
		if e.Deriver, err = dir.Base(hash(drv).Nix32()[:32] + "-" + drv + ".drv"); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// source makes a flat fixed-output path fetched from url.
func source(t *testing.T, name, url string) bundle.PathEntry {
	e := entry(t, name, name, role.Source, 4096)
	e.Fetch = &bundle.Fetch{URLs: []string{url}, Method: storepath.Flat, Hash: hash(name + "file")}
	e.CA = "fixed:" + e.Fetch.Hash.String()
	e.Origin = &bundle.Origin{From: bundle.FromUpstream, URL: "https://cache.example.org", Keys: []string{"cache.example.org-1"}}
	return e
}

// write writes a manifest of paths, signed by key, into a new directory
// and returns the manifest file.
func write(t *testing.T, key signing.SecretKey, bases []bundle.Base, paths ...bundle.PathEntry) string {
	t.Helper()
	m := &bundle.Manifest{
		Tool: "nix-airgap test", Created: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC), StoreDir: dir, Mode: role.ModeBuild,
		Targets: []bundle.Target{{Spec: "./default.nix -A toplevel", Outputs: map[string]storepath.Path{"out": paths[0].Path}}},
		Bases:   bases, Paths: paths,
	}
	data, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(t.TempDir(), bundle.ManifestName)
	if err := os.WriteFile(name, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name+".sig", bundle.Sign(data, key), 0o644); err != nil {
		t.Fatal(err)
	}
	return name
}

func open(t *testing.T, name string, keys *signing.Keyring) *inventory.Inventory {
	t.Helper()
	inv, err := inventory.Open(name, keys)
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

func id(t *testing.T, name string) storepath.Hash {
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return bundle.ID(data)
}

// world is an old and a new bundle: hello upgraded (with a man output),
// libfoo rebuilt, oldtool removed, newtool added, a source added.
type world struct {
	key           signing.SecretKey
	old, new      string
	newEntries    []bundle.PathEntry
	sharedEntries []bundle.PathEntry
}

func newWorld(t *testing.T) world {
	key, _, err := signing.Generate("inventory-test-1")
	if err != nil {
		t.Fatal(err)
	}
	shared := []bundle.PathEntry{
		entry(t, "glibc-2.40", "glibc-2.40", role.Runtime, 30<<20),
		source(t, "hello-2.12.tar.gz", "https://ftp.gnu.org/gnu/hello/hello-2.12.tar.gz"),
	}
	old := append([]bundle.PathEntry{
		entry(t, "system", "system", role.Runtime, 1000),
		entry(t, "hello-2.12", "hello-2.12", role.Runtime, 100<<10),
		entry(t, "libfoo-1.0", "libfoo-1.0", role.Runtime, 50<<10),
		entry(t, "oldtool-3", "oldtool-3", role.Runtime, 10<<10),
	}, shared...)
	newEntries := []bundle.PathEntry{
		entry(t, "system", "system", role.Runtime, 1000),
		entry(t, "hello-2.13", "hello-2.13", role.Runtime, 110<<10),
		entry(t, "hello-2.13-man", "hello-2.13", role.Runtime, 20<<10),
		entry(t, "libfoo-1.0", "libfoo-1.0", role.Runtime, 51<<10),
		entry(t, "newtool-0.1", "newtool-0.1", role.Runtime, 5<<10),
		source(t, "hello-2.13.tar.gz", "https://ftp.gnu.org/gnu/hello/hello-2.13.tar.gz"),
	}
	// The rebuilt paths need other hashes than the old ones.
	newEntries[0].Path.Hash = hash("system new").Nix32()[:32]
	newEntries[3].Path.Hash = hash("libfoo new").Nix32()[:32]
	return world{
		key: key, old: write(t, key, nil, sortEntries(old)...), new: write(t, key, nil, sortEntries(append(newEntries, shared...))...),
		newEntries: newEntries, sharedEntries: shared,
	}
}

func sortEntries(es []bundle.PathEntry) []bundle.PathEntry { return es }

func TestShow(t *testing.T) {
	w := newWorld(t)
	inv := open(t, w.new, signing.NewKeyring(w.key.Public()))
	var got []string
	for _, p := range inv.Packages {
		got = append(got, p.Name+" "+p.Version+" "+join(p.Outputs))
	}
	want := []string{"glibc 2.40 out", "hello 2.13 man,out", "libfoo 1.0 out", "newtool 0.1 out", "system  out"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("packages (-want +got):\n%s", diff)
	}
	if len(inv.Sources) != 2 || inv.Sources[1].Name != "hello-2.13.tar.gz" || inv.Sources[1].URLs[0] != "https://ftp.gnu.org/gnu/hello/hello-2.13.tar.gz" {
		t.Errorf("sources = %+v", inv.Sources)
	}
	if b := inv.Bundles[0]; b.Signature.Trusted != "inventory-test-1" || b.Tool != "nix-airgap test" || b.Mode != "build" {
		t.Errorf("bundle = %+v", b)
	}
	untrusted := open(t, w.new, signing.NewKeyring())
	if s := untrusted.Bundles[0].Signature; s.Trusted != "" || !s.Checked || s.Keys[0] != "inventory-test-1" {
		t.Errorf("signature checked with no trusted key = %+v", s)
	}
	golden(t, "show.txt", func(b *bytes.Buffer) error { return inv.WriteText(b) })
}

func join(s []string) string {
	var b bytes.Buffer
	for i, x := range s {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(x)
	}
	return b.String()
}

func TestCompare(t *testing.T) {
	w := newWorld(t)
	d := inventory.Compare(open(t, w.old, nil), open(t, w.new, nil))
	type change struct{ Name, Change, Old, New string }
	var got []change
	for _, c := range d.Packages {
		got = append(got, change{c.Name, c.Change, join(c.Old), join(c.New)})
	}
	want := []change{
		{"hello", inventory.Updated, "2.12", "2.13"},
		{"libfoo", inventory.Rebuilt, "", ""},
		{"newtool", inventory.Added, "", "0.1"},
		{"oldtool", inventory.Removed, "3", ""},
		{"system", inventory.Rebuilt, "", ""},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("packages (-want +got):\n%s", diff)
	}
	if len(d.SourcesAdded) != 1 || d.SourcesAdded[0].Name != "hello-2.13.tar.gz" || len(d.SourcesRemoved) != 0 {
		t.Errorf("sources added %+v, removed %+v", d.SourcesAdded, d.SourcesRemoved)
	}
	if d.PathsAdded.Paths != 6 || d.PathsRemoved.Paths != 4 {
		t.Errorf("paths added %d, removed %d; want 6 and 4", d.PathsAdded.Paths, d.PathsRemoved.Paths)
	}
	golden(t, "diff.txt", func(b *bytes.Buffer) error { return d.WriteText(b) })
}

// TestCompareDelta compares a bundle with a delta of it, which holds only
// the new paths: nothing shows as removed but the packages it replaces.
func TestCompareDelta(t *testing.T) {
	w := newWorld(t)
	base := []bundle.Base{{ID: id(t, w.old), Created: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC), Paths: 6}}
	delta := write(t, w.key, base, w.newEntries...)
	d := inventory.Compare(open(t, w.old, nil), open(t, delta, nil))
	var got []string
	for _, c := range d.Packages {
		got = append(got, c.Name+" "+c.Change)
	}
	want := []string{"hello version", "libfoo rebuild", "newtool added", "system rebuild"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("packages (-want +got):\n%s", diff)
	}
	if len(d.Notes) != 1 || len(d.SourcesRemoved) != 0 {
		t.Errorf("notes %q, sources removed %+v", d.Notes, d.SourcesRemoved)
	}
	// Against something that lacks its bases, the delta is what it is.
	d = inventory.Compare(open(t, w.new, nil), open(t, delta, nil))
	if len(d.Notes) != 1 || d.PathsRemoved.Paths != 2 {
		t.Errorf("delta of another bundle: notes %q, %d paths removed; want a note and glibc and the old source removed", d.Notes, d.PathsRemoved.Paths)
	}
	// As OLD, a delta is what it is too, and a note says so.
	d = inventory.Compare(open(t, delta, nil), open(t, w.new, nil))
	if len(d.Notes) != 1 || !strings.HasPrefix(d.Notes[0], "OLD is a delta of bundles ("+id(t, w.old).String()+")") || d.PathsAdded.Paths != 2 {
		t.Errorf("a delta as OLD: notes %q, %d paths added; want a note and glibc and the old source added", d.Notes, d.PathsAdded.Paths)
	}
}

func golden(t *testing.T, name string, write func(*bytes.Buffer) error) {
	t.Helper()
	var b bytes.Buffer
	if err := write(&b); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(file, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), b.String()); diff != "" {
		t.Errorf("%s (-golden +got):\n%s", name, diff)
	}
}

// TestCompareDeltaOfInventory compares a cache inventory with a delta
// packed against it (pack --since inventory.json): the delta's base is
// the inventory itself, so nothing it leaves out shows as removed.
func TestCompareDeltaOfInventory(t *testing.T) {
	w := newWorld(t)
	invFile, ci := writeInventory(t, w)
	delta := write(t, w.key, []bundle.Base{{ID: id(t, invFile), Created: ci.Created, Paths: len(ci.Paths)}}, w.newEntries...)
	d := inventory.Compare(open(t, invFile, nil), open(t, delta, nil))
	for _, c := range d.Packages {
		if c.Change == inventory.Removed {
			t.Errorf("%s shows as removed; the delta leaves it to the inventory it was packed against", c.Name)
		}
	}
	if d.PathsRemoved.Paths != 3 || len(d.SourcesRemoved) != 0 {
		t.Errorf("%d paths removed, sources removed %+v; want the 3 paths the delta replaces and no source", d.PathsRemoved.Paths, d.SourcesRemoved)
	}
}

// writeInventory writes the inventory of a cache that imported w.old,
// as nix-airgap inventory does.
func writeInventory(t *testing.T, w world) (string, *bundle.CacheInventory) {
	t.Helper()
	oldM, err := bundle.ParseManifest(mustRead(t, w.old))
	if err != nil {
		t.Fatal(err)
	}
	ci := &bundle.CacheInventory{Tool: "nix-airgap test", Created: oldM.Created, StoreDir: dir,
		Bundles: []bundle.Base{{ID: id(t, w.old), Created: oldM.Created, Paths: len(oldM.Paths)}}}
	for _, e := range oldM.Paths {
		ci.Paths = append(ci.Paths, bundle.InventoryPath{Path: e.Path, NarHash: e.NarHash, NarSize: e.NarSize, Deriver: e.Deriver, CA: e.CA, Bundles: []int{0}})
	}
	data, err := ci.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	invFile := filepath.Join(t.TempDir(), "inventory.json")
	if err := os.WriteFile(invFile, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return invFile, ci
}

// TestShowInventory: of the bundles a cache inventory names, show says
// what it records, not "UNSIGNED", a mode, or "0 B compressed", and diff
// leaves out the compressed sizes it does not know.
func TestShowInventory(t *testing.T) {
	w := newWorld(t)
	invFile, _ := writeInventory(t, w)
	inv := open(t, invFile, nil)
	var b strings.Builder
	if err := inv.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	want := "bundle " + id(t, w.old).String() + "\n  created:  2026-05-01 12:00:00 UTC\n  (a cache inventory records no signature, mode or targets)\n\n" +
		"6 paths, 30.2 MiB NAR (a cache inventory records no compressed sizes, roles or origins)\n"
	if got, _, _ := strings.Cut(b.String(), "\npackages"); got != want {
		t.Errorf("show of an inventory (-want +got):\n%s", cmp.Diff(want, got))
	}
	if m := inv.Bundles[0].Mode; m != "" {
		t.Errorf("mode %q, want none: an inventory does not record it", m)
	}
	b.Reset()
	if err := inventory.Compare(inv, open(t, w.new, nil)).WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "; 4 paths removed (161.0 KiB NAR)\n") {
		t.Errorf("diff of an inventory and a bundle:\n%s", b.String())
	}
}

func mustRead(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestOpenNamesDamagedRecord checks that a cache's damaged bundle record
// is named, not called manifest.json, which the cache has none of.
func TestOpenNamesDamagedRecord(t *testing.T) {
	dir := t.TempDir()
	rec := filepath.Join(dir, filepath.FromSlash(bundle.RecordDir), "sha256-x.json")
	if err := os.MkdirAll(filepath.Dir(rec), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rec, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "nix-cache-info"), []byte("StoreDir: /nix/store\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := inventory.Open(dir, nil)
	if !errors.Is(err, bundle.ErrCorrupt) || !strings.Contains(fmt.Sprint(err), bundle.RecordDir+"/sha256-x.json: ") {
		t.Errorf("Open of a cache with a damaged record = %v, want ErrCorrupt naming the record", err)
	}
}

// TestCompareCacheAfterGC compares a bundle with a cache that holds only
// what a delta of it brought, gc having removed the rest and the older
// bundle's record: the cache is compared as it is, so what gc removed
// shows as removed, though the cache's one record extends the bundle.
func TestCompareCacheAfterGC(t *testing.T) {
	w := newWorld(t)
	oldM, err := bundle.ParseManifest(mustRead(t, w.old))
	if err != nil {
		t.Fatal(err)
	}
	delta := write(t, w.key, []bundle.Base{{ID: id(t, w.old), Created: oldM.Created, Paths: len(oldM.Paths)}}, w.newEntries...)
	cacheDir := t.TempDir()
	rec := filepath.Join(cacheDir, filepath.FromSlash(bundle.RecordDir), bundle.RecordName(id(t, delta)))
	if err := os.MkdirAll(filepath.Dir(rec), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(rec, mustRead(t, delta), 0o644)
	os.WriteFile(rec+".sig", mustRead(t, delta+".sig"), 0o644)
	os.WriteFile(filepath.Join(cacheDir, "nix-cache-info"), []byte("StoreDir: /nix/store\n"), 0o644)
	for _, e := range w.newEntries {
		os.WriteFile(filepath.Join(cacheDir, e.Path.Hash+".narinfo"), nil, 0o644)
	}
	d := inventory.Compare(open(t, w.old, nil), open(t, cacheDir, nil))
	removed := map[string]bool{}
	for _, c := range d.Packages {
		if c.Change == inventory.Removed {
			removed[c.Name] = true
		}
	}
	if !removed["oldtool"] || !removed["glibc"] || len(d.SourcesRemoved) != 1 || len(d.Notes) != 0 {
		t.Errorf("removed %v, sources removed %+v, notes %q; want oldtool, glibc and hello-2.12.tar.gz removed, and no note of a delta", removed, d.SourcesRemoved, d.Notes)
	}
}

// TestOpenCutTar: a bundle tar (or volume) cut short before its manifest,
// which comes last, is damaged, not "not a bundle"; a text file is not
// a bundle.
func TestOpenCutTar(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range []string{bundle.CacheInfo, "nar/x.nar.zst"} {
		data := bytes.Repeat([]byte("x"), 1000)
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
		tw.Write(data)
	}
	tw.Flush() // no end-of-archive marker, no manifest
	whole := buf.Bytes()
	dir := t.TempDir()
	for name, data := range map[string][]byte{"at an entry's end": whole, "in an entry": whole[:len(whole)-700]} {
		file := filepath.Join(dir, "b.tar")
		os.WriteFile(file, data, 0o644)
		_, err := inventory.Open(file, nil)
		if !errors.Is(err, bundle.ErrCorrupt) || !strings.Contains(fmt.Sprint(err), "cut short") {
			t.Errorf("Open of a tar cut %s = %v, want corrupt, cut short", name, err)
		}
	}
	text := filepath.Join(dir, "notes.txt")
	os.WriteFile(text, []byte("hello\n"), 0o644)
	if _, err := inventory.Open(text, nil); !errors.Is(err, bundle.ErrNotBundle) {
		t.Errorf("Open of a text file = %v, want ErrNotBundle", err)
	}
}

// TestComparePackages: of one package name, each side may hold several
// versions, several builds of one version and several outputs of one
// build; the diff tells them apart, in JSON and in its text line.
func TestComparePackages(t *testing.T) {
	// build is the output out of hello-VERSION's build b (another
	// build is another store path), of size KiB.
	build := func(version, out, b string, kib uint64) bundle.PathEntry {
		name := "hello-" + version
		if out != "out" {
			name += "-" + out
		}
		e := entry(t, name, "hello-"+version, role.Runtime, kib<<10)
		e.Path.Hash = hash(name + " build " + b).Nix32()[:32]
		return e
	}
	type want struct {
		Change                  string
		Old, New, Versions      []string
		Builds                  []inventory.VersionChange
		OldPaths, NewPaths, Net int
		Line                    string
	}
	vc := func(v string, oldBuilds, newBuilds, rebuilt int, added, removed []string) inventory.VersionChange {
		return inventory.VersionChange{Version: v, OldBuilds: oldBuilds, NewBuilds: newBuilds, Rebuilt: rebuilt, OutputsAdded: added, OutputsRemoved: removed}
	}
	none := []string{}
	for _, tt := range []struct {
		name     string
		old, new []bundle.PathEntry
		want     *want // nil: no change
	}{
		{"unchanged", []bundle.PathEntry{build("2.12", "out", "a", 100)}, []bundle.PathEntry{build("2.12", "out", "a", 100)}, nil},
		{"one-to-one rebuild",
			[]bundle.PathEntry{build("2.12", "out", "a", 100)},
			[]bundle.PathEntry{build("2.12", "out", "b", 101)},
			&want{inventory.Rebuilt, none, none, []string{"2.12"}, []inventory.VersionChange{vc("2.12", 1, 1, 1, none, none)}, 1, 1, 1 << 10,
				"hello: 2.12 rebuilt, +1.0 KiB"}},
		{"version bump",
			[]bundle.PathEntry{build("2.12", "out", "a", 100)},
			[]bundle.PathEntry{build("2.13", "out", "a", 130)},
			&want{inventory.Updated, []string{"2.12"}, []string{"2.13"}, none, []inventory.VersionChange{}, 1, 1, 30 << 10,
				"hello: 2.12 → 2.13, +30.0 KiB"}},
		{"a second build added",
			[]bundle.PathEntry{build("2.12", "out", "a", 100)},
			[]bundle.PathEntry{build("2.12", "out", "a", 100), build("2.12", "out", "b", 100)},
			&want{inventory.Builds, none, none, []string{"2.12"}, []inventory.VersionChange{vc("2.12", 1, 2, 0, none, none)}, 0, 1, 100 << 10,
				"hello: 2.12 builds 1 → 2, +100.0 KiB"}},
		{"one of two builds removed",
			[]bundle.PathEntry{build("2.12", "out", "a", 100), build("2.12", "out", "b", 100)},
			[]bundle.PathEntry{build("2.12", "out", "b", 100)},
			&want{inventory.Builds, none, none, []string{"2.12"}, []inventory.VersionChange{vc("2.12", 2, 1, 0, none, none)}, 1, 0, -100 << 10,
				"hello: 2.12 builds 2 → 1, -100.0 KiB"}},
		{"one of two builds rebuilt",
			[]bundle.PathEntry{build("2.12", "out", "a", 100), build("2.12", "out", "b", 100)},
			[]bundle.PathEntry{build("2.12", "out", "a", 100), build("2.12", "out", "c", 100)},
			&want{inventory.Rebuilt, none, none, []string{"2.12"}, []inventory.VersionChange{vc("2.12", 2, 2, 1, none, none)}, 1, 1, 0,
				"hello: 2.12 rebuilt (1 of 2 builds)"}},
		{"a second version beside the first",
			[]bundle.PathEntry{build("2.12", "out", "a", 100)},
			[]bundle.PathEntry{build("2.12", "out", "a", 100), build("2.13", "out", "a", 130)},
			&want{inventory.Updated, none, []string{"2.13"}, []string{"2.12"}, []inventory.VersionChange{}, 0, 1, 130 << 10,
				"hello: 2.12 → 2.12, 2.13, +130.0 KiB"}},
		{"one of two versions removed",
			[]bundle.PathEntry{build("2.12", "out", "a", 100), build("2.13", "out", "a", 130)},
			[]bundle.PathEntry{build("2.13", "out", "a", 130)},
			&want{inventory.Updated, []string{"2.12"}, none, []string{"2.13"}, []inventory.VersionChange{}, 1, 0, -100 << 10,
				"hello: 2.12, 2.13 → 2.13, -100.0 KiB"}},
		{"a version added and the other rebuilt",
			[]bundle.PathEntry{build("2.12", "out", "a", 100)},
			[]bundle.PathEntry{build("2.12", "out", "b", 100), build("2.13", "out", "a", 130)},
			&want{inventory.Updated, none, []string{"2.13"}, []string{"2.12"}, []inventory.VersionChange{vc("2.12", 1, 1, 1, none, none)}, 1, 2, 130 << 10,
				"hello: 2.12 → 2.12, 2.13; 2.12 rebuilt, +130.0 KiB"}},
		{"every output of one build rebuilt",
			[]bundle.PathEntry{build("2.12", "out", "a", 100), build("2.12", "man", "a", 20), build("2.12", "dev", "a", 10)},
			[]bundle.PathEntry{build("2.12", "out", "b", 100), build("2.12", "man", "b", 20), build("2.12", "dev", "b", 10)},
			&want{inventory.Rebuilt, none, none, []string{"2.12"}, []inventory.VersionChange{vc("2.12", 1, 1, 1, none, none)}, 3, 3, 0,
				"hello: 2.12 rebuilt"}},
		{"an output added",
			[]bundle.PathEntry{build("2.12", "out", "a", 100)},
			[]bundle.PathEntry{build("2.12", "out", "a", 100), build("2.12", "man", "a", 20)},
			&want{inventory.Outputs, none, none, []string{"2.12"}, []inventory.VersionChange{vc("2.12", 1, 1, 0, []string{"man"}, none)}, 0, 1, 20 << 10,
				"hello: 2.12 output man added, +20.0 KiB"}},
		{"rebuilt, an output removed",
			[]bundle.PathEntry{build("2.12", "out", "a", 100), build("2.12", "dev", "a", 10), build("2.12", "lib", "a", 50)},
			[]bundle.PathEntry{build("2.12", "out", "b", 100)},
			&want{inventory.Outputs, none, none, []string{"2.12"}, []inventory.VersionChange{vc("2.12", 1, 1, 1, none, []string{"dev", "lib"})}, 3, 1, -60 << 10,
				"hello: 2.12 rebuilt and outputs dev, lib removed, -60.0 KiB"}},
		{"two builds of two outputs, one rebuilt",
			[]bundle.PathEntry{build("2.12", "out", "a", 100), build("2.12", "man", "a", 20), build("2.12", "out", "b", 100), build("2.12", "man", "b", 20)},
			[]bundle.PathEntry{build("2.12", "out", "a", 100), build("2.12", "man", "a", 20), build("2.12", "out", "c", 100), build("2.12", "man", "c", 20)},
			&want{inventory.Rebuilt, none, none, []string{"2.12"}, []inventory.VersionChange{vc("2.12", 2, 2, 1, none, none)}, 2, 2, 0,
				"hello: 2.12 rebuilt (1 of 2 builds)"}},
		{"added",
			nil,
			[]bundle.PathEntry{build("2.12", "out", "a", 100), build("2.12", "man", "a", 20)},
			&want{inventory.Added, none, []string{"2.12"}, none, []inventory.VersionChange{}, 0, 2, 120 << 10,
				"hello: ∅ → 2.12, +120.0 KiB"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// glibc on both sides keeps neither manifest empty.
			glibc := entry(t, "glibc-2.40", "glibc-2.40", role.Runtime, 1<<20)
			d := inventory.Compare(manifestInventory("old", glibc, tt.old...), manifestInventory("new", glibc, tt.new...))
			var b strings.Builder
			if err := d.WriteText(&b); err != nil {
				t.Fatal(err)
			}
			line, _, _ := strings.Cut(b.String(), "\n")
			if tt.want == nil {
				if len(d.Packages) != 0 {
					t.Errorf("packages %+v, want none", d.Packages)
				}
				return
			}
			if len(d.Packages) != 1 {
				t.Fatalf("packages %+v, want hello's change", d.Packages)
			}
			c := d.Packages[0]
			got := want{c.Change, c.Old, c.New, c.Versions, c.Builds, len(c.OldPaths), len(c.NewPaths), int(c.SizeDelta), line}
			if diff := cmp.Diff(*tt.want, got); diff != "" {
				t.Errorf("hello's change (-want +got):\n%s", diff)
			}
		})
	}
}

func manifestInventory(source string, first bundle.PathEntry, paths ...bundle.PathEntry) *inventory.Inventory {
	m := &bundle.Manifest{StoreDir: dir, Created: time.Unix(0, 0), Paths: append([]bundle.PathEntry{first}, paths...)}
	return inventory.FromManifest(source, m)
}

// TestCompareBuildsGolden: the whole report, text and JSON, of a crossing
// with a second build, an added output, a version kept beside a new one
// and a rebuild.
func TestCompareBuildsGolden(t *testing.T) {
	mk := func(name, drv, b string, kib uint64) bundle.PathEntry {
		e := entry(t, name, drv, role.Runtime, kib<<10)
		e.Path.Hash = hash(name + " build " + b).Nix32()[:32]
		return e
	}
	old := manifestInventory("old",
		mk("hello-2.12", "hello-2.12", "a", 100),
		mk("libfoo-1.0", "libfoo-1.0", "a", 50),
		mk("zlib-1.3", "zlib-1.3", "a", 30),
		mk("system", "system", "a", 1),
	)
	new := manifestInventory("new",
		mk("hello-2.12", "hello-2.12", "a", 100),
		mk("hello-2.12", "hello-2.12", "b", 100),
		mk("libfoo-1.0", "libfoo-1.0", "a", 50),
		mk("libfoo-1.0-dev", "libfoo-1.0", "a", 10),
		mk("zlib-1.3", "zlib-1.3", "a", 30),
		mk("zlib-1.3.1", "zlib-1.3.1", "a", 31),
		mk("system", "system", "b", 1),
	)
	d := inventory.Compare(old, new)
	golden(t, "diff-builds.txt", func(b *bytes.Buffer) error { return d.WriteText(b) })
	golden(t, "diff-builds.json", func(b *bytes.Buffer) error {
		enc := json.NewEncoder(b)
		enc.SetIndent("", "  ")
		return enc.Encode(d)
	})
}

// TestTotalsShareFiles: two paths whose NARs are the same bytes share
// one NAR file, which show's and diff's compressed sizes count once.
func TestTotalsShareFiles(t *testing.T) {
	a := entry(t, "empty-a", "empty-a", role.Runtime, 1000)
	b := entry(t, "empty-b", "empty-b", role.Runtime, 1000)
	b.URL, b.FileHash = a.URL, a.FileHash
	glibc := entry(t, "glibc-2.40", "glibc-2.40", role.Runtime, 1<<20)
	inv := manifestInventory("new", glibc, a, b)
	if got, want := inv.Totals.FileSize, glibc.FileSize+a.FileSize; got != want {
		t.Errorf("show: %d bytes compressed, want %d", got, want)
	}
	d := inventory.Compare(manifestInventory("old", glibc), inv)
	if got, want := d.PathsAdded.FileSize, a.FileSize; d.PathsAdded.Paths != 2 || got != want {
		t.Errorf("diff: %d paths added, %d bytes compressed; want 2 and %d", d.PathsAdded.Paths, got, want)
	}
}

// TestShowBuilds: show counts a version's builds as diff does, not its
// paths: the outputs of one build are one build.
func TestShowBuilds(t *testing.T) {
	mk := func(name, drv, b string) bundle.PathEntry {
		e := entry(t, name, drv, role.Runtime, 1<<10)
		e.Path.Hash = hash(name + " build " + b).Nix32()[:32]
		return e
	}
	inv := manifestInventory("cache",
		mk("hello-2.12", "hello-2.12", "a"), mk("hello-2.12-man", "hello-2.12", "a"),
		mk("openssl-3.0", "openssl-3.0", "a"), mk("openssl-3.0-man", "openssl-3.0", "a"),
		mk("openssl-3.0", "openssl-3.0", "b"), mk("openssl-3.0-man", "openssl-3.0", "b"),
		mk("zlib-1.3", "zlib-1.3", "a"), mk("zlib-1.3", "zlib-1.3", "b"), mk("zlib-1.3-dev", "zlib-1.3", "a"),
	)
	got := map[string]int{}
	for _, p := range inv.Packages {
		got[p.Name] = p.Builds
	}
	if want := map[string]int{"hello": 1, "openssl": 2, "zlib": 2}; !cmp.Equal(want, got) {
		t.Errorf("builds %v, want %v", got, want)
	}
	var b strings.Builder
	if err := inv.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"  hello    2.12  man,out  2.0 KiB  ", "  openssl  3.0   man,out  4.0 KiB in 2 builds  ", "  zlib     1.3   dev,out  3.0 KiB in 2 builds  "} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("show lacks %q:\n%s", want, b.String())
		}
	}
}

// TestShowCacheDelta: in a cache, a path a bundle carried as a binary
// delta is the NAR import rebuilt from it: show counts the cache's file,
// which its narinfo describes, not the delta the manifest does.
func TestShowCacheDelta(t *testing.T) {
	key, _, err := signing.Generate("inventory-test-1")
	if err != nil {
		t.Fatal(err)
	}
	base := entry(t, "libfoo-1.0", "libfoo-1.0", role.Runtime, 50<<10)
	e := entry(t, "libfoo-1.1", "libfoo-1.1", role.Runtime, 60<<10)
	e.URL, e.FileSize = "nar/"+hash("libfoo delta").Nix32()+".nar"+bundle.DeltaExt, 1000
	e.Delta = &bundle.Delta{Base: base.Path, BaseNarHash: base.NarHash, BaseNarSize: base.NarSize, System: "x86_64-linux"}
	rec := write(t, key, nil, e)

	cacheDir := t.TempDir()
	name := filepath.Join(cacheDir, filepath.FromSlash(bundle.RecordDir), bundle.RecordName(id(t, rec)))
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile := func(name string, data []byte) {
		if err := os.WriteFile(name, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(name, mustRead(t, rec))
	writeFile(name+".sig", mustRead(t, rec+".sig"))
	writeFile(filepath.Join(cacheDir, "nix-cache-info"), []byte("StoreDir: /nix/store\n"))
	ni := &narinfo.NarInfo{StorePath: e.Path, URL: "nar/" + hash("libfoo rebuilt").Nix32() + ".nar.zst", Compression: "zstd",
		FileHash: hash("libfoo rebuilt"), FileSize: 30 << 10, NarHash: e.NarHash, NarSize: e.NarSize}
	writeFile(filepath.Join(cacheDir, e.Path.Hash+".narinfo"), []byte(ni.String()))

	if got := open(t, rec, nil).Totals.FileSize; got != 1000 {
		t.Errorf("the bundle's compressed size = %d, want the delta's, 1000", got)
	}
	inv := open(t, cacheDir, nil)
	if got := inv.Totals.FileSize; got != 30<<10 {
		t.Errorf("the cache's compressed size = %d, want its NAR file's, %d", got, 30<<10)
	}
	if len(inv.Packages) != 1 || inv.Packages[0].FileSize != 30<<10 {
		t.Errorf("packages %+v, want libfoo of %d bytes compressed", inv.Packages, 30<<10)
	}
}

// TestCompareDeltaProvides: a delta is read as what it stands for, its
// own paths and those its bases provide (bases[].provides), whether OLD
// is the base bundle, a cache inventory or a cache that kept earlier
// builds: what OLD holds beyond that is what NEW no longer needs, and a
// path the base provides is never among it.
func TestCompareDeltaProvides(t *testing.T) {
	key, _, err := signing.Generate("inventory-test-1")
	if err != nil {
		t.Fatal(err)
	}
	build := func(name, drv, b string, kib uint64) bundle.PathEntry {
		e := entry(t, name, drv, role.Runtime, kib<<10)
		e.Path.Hash = hash(name + " build " + b).Nix32()[:32]
		e.URL = "nar/" + hash(name+" build "+b).Nix32() + ".nar.zst"
		return e
	}
	// A build closure with two builds of glibc, a bootstrap one (a) and
	// the final one (b); a deep change rebuilds the final one and hello.
	system := build("system", "system", "a", 1)
	glibcBoot, glibcOld, glibcNew := build("glibc-2.40", "glibc-2.40", "a", 2100), build("glibc-2.40", "glibc-2.40", "b", 2100), build("glibc-2.40", "glibc-2.40", "c", 2100)
	helloOld, helloNew := build("hello-2.12", "hello-2.12", "a", 100), build("hello-2.12", "hello-2.12", "b", 100)
	src := source(t, "hello-2.12.tar.gz", "https://ftp.gnu.org/gnu/hello/hello-2.12.tar.gz")
	oldTool := build("oldtool-3", "oldtool-3", "a", 10)
	base := write(t, key, nil, system, glibcBoot, glibcOld, helloOld, src, oldTool)
	// An earlier crossing's rebuild of hello, which a cache keeps.
	helloMid := build("hello-2.12", "hello-2.12", "m", 100)

	newSystem := build("system", "system", "b", 1)
	delta := func(id storepath.Hash, provides []storepath.Path) string {
		return write(t, key, []bundle.Base{{ID: id, Created: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC), Paths: 6, Provides: provides}},
			newSystem, glibcNew, helloNew)
	}
	provides := []storepath.Path{glibcBoot.Path, src.Path}

	type want struct {
		Note     string // the first note's start
		Packages []string
		Added    int
		Removed  int
		Totals   string // the text's last line
	}
	for _, tt := range []struct {
		name     string
		old, new func() *inventory.Inventory
		want     want
	}{
		{"the base bundle",
			func() *inventory.Inventory { return open(t, base, nil) },
			func() *inventory.Inventory { return open(t, delta(id(t, base), provides), nil) },
			want{"NEW is a delta of OLD: it is read as its own paths and the 2 paths of OLD",
				[]string{"glibc: 2.40 rebuilt (1 of 2 builds)", "hello: 2.12 rebuilt", "oldtool: 3 → ∅, -10.0 KiB", "system: ε rebuilt"},
				3, 4, "packages: rebuilt 3, no longer needed 1; 3 paths added (2.1 MiB NAR, 1.1 MiB compressed); 4 paths no longer needed (2.2 MiB NAR, 1.1 MiB compressed)"}},
		{"a cache that kept an earlier build",
			func() *inventory.Inventory {
				return inventory.Merge("cache", open(t, base, nil), open(t, write(t, key, nil, helloMid), nil))
			},
			func() *inventory.Inventory { return open(t, delta(id(t, base), provides), nil) },
			want{"NEW is a delta of OLD: it is read as its own paths and the 2 paths of OLD",
				[]string{"glibc: 2.40 rebuilt (1 of 2 builds)", "hello: 2.12 rebuilt, builds 2 → 1, -100.0 KiB", "oldtool: 3 → ∅, -10.0 KiB", "system: ε rebuilt"},
				3, 5, "packages: builds changed 1, rebuilt 2, no longer needed 1; 3 paths added (2.1 MiB NAR, 1.1 MiB compressed); 5 paths no longer needed (2.3 MiB NAR, 1.1 MiB compressed)"}},
		{"a cache holding what the base provides, not the base", // as a delta of its inventory
			func() *inventory.Inventory {
				return inventory.Merge("cache", open(t, write(t, key, nil, system, glibcBoot, glibcOld, helloOld, src, oldTool), nil))
			},
			func() *inventory.Inventory { return open(t, delta(hash("an inventory"), provides), nil) },
			want{"NEW is a delta of OLD: it is read as its own paths and the 2 paths of OLD",
				[]string{"glibc: 2.40 rebuilt (1 of 2 builds)", "hello: 2.12 rebuilt", "oldtool: 3 → ∅, -10.0 KiB", "system: ε rebuilt"},
				3, 4, "packages: rebuilt 3, no longer needed 1; 3 paths added (2.1 MiB NAR, 1.1 MiB compressed); 4 paths no longer needed (2.2 MiB NAR, 1.1 MiB compressed)"}},
		{"a bundle lacking the base and what it provides",
			func() *inventory.Inventory { return open(t, write(t, key, nil, system, helloOld), nil) },
			func() *inventory.Inventory { return open(t, delta(id(t, base), provides), nil) },
			want{"NEW is a delta of bundles OLD does not hold",
				[]string{"glibc: ∅ → 2.40, +2.1 MiB", "hello: 2.12 rebuilt", "system: ε rebuilt"},
				3, 2, "packages: rebuilt 2, added 1; 3 paths added (2.1 MiB NAR, 1.1 MiB compressed); 2 paths removed (101.0 KiB NAR, 50.5 KiB compressed)"}},
		{"a delta that needs nothing of its base",
			func() *inventory.Inventory { return open(t, base, nil) },
			func() *inventory.Inventory { return open(t, delta(id(t, base), []storepath.Path{}), nil) },
			want{"NEW is a delta of OLD that needs none of its paths",
				[]string{"glibc: 2.40 rebuilt, builds 2 → 1, -2.1 MiB", "hello: 2.12 rebuilt", "oldtool: 3 → ∅, -10.0 KiB", "system: ε rebuilt"},
				3, 6, "packages: builds changed 1, rebuilt 2, no longer needed 1; 3 paths added (2.1 MiB NAR, 1.1 MiB compressed); 6 paths no longer needed (4.2 MiB NAR, 2.1 MiB compressed)"}},
		{"a delta that predates provides",
			func() *inventory.Inventory { return open(t, base, nil) },
			func() *inventory.Inventory { return open(t, delta(id(t, base), nil), nil) },
			want{"NEW is a delta of OLD whose manifest does not say what its bases provide",
				[]string{"glibc: 2.40 rebuilt, builds 2 → 1, -2.1 MiB", "hello: 2.12 rebuilt", "system: ε rebuilt"},
				3, 4, "packages: builds changed 1, rebuilt 2; 3 paths added (2.1 MiB NAR, 1.1 MiB compressed); 4 paths removed (4.2 MiB NAR, 2.1 MiB compressed)"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := inventory.Compare(tt.old(), tt.new())
			text, packages, last := diffText(t, d)
			got := want{Packages: packages, Added: d.PathsAdded.Paths, Removed: d.PathsRemoved.Paths, Totals: last}
			if len(d.Notes) > 0 && strings.HasPrefix(d.Notes[0], tt.want.Note) {
				got.Note = tt.want.Note
			} else {
				got.Note = strings.Join(d.Notes, "; ")
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("diff (-want +got):\n%s\n%s", diff, text)
			}
		})
	}
}

// diffText returns d's text, its lines of packages and its last line.
func diffText(t *testing.T, d *inventory.Diff) (text string, packages []string, last string) {
	t.Helper()
	var b strings.Builder
	if err := d.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	packages = []string{}
	for _, l := range lines {
		if name, _, ok := strings.Cut(l, ": "); ok && !strings.Contains(name, " ") && name != "note" && name != "packages" {
			packages = append(packages, l)
		}
	}
	return b.String(), packages, lines[len(lines)-1]
}

// TestCompareDeltaFoldsUnneeded: against a cache that holds other
// systems too, the many packages a delta no longer needs are named in
// one line, not one line each; a few still get a line each
// (TestCompareDeltaProvides).
func TestCompareDeltaFoldsUnneeded(t *testing.T) {
	key, _, err := signing.Generate("inventory-test-1")
	if err != nil {
		t.Fatal(err)
	}
	hello := entry(t, "hello-2.12", "hello-2.12", role.Runtime, 100<<10)
	libc := entry(t, "libc-1", "libc-1", role.Runtime, 1<<10)
	others := []bundle.PathEntry{hello, libc}
	var names []string
	for i := range 12 {
		name := fmt.Sprintf("tool%02d", i)
		names = append(names, name)
		others = append(others, entry(t, name+"-1.0", name+"-1.0", role.Runtime, 1<<10))
	}
	cache := inventory.Merge("cache", open(t, write(t, key, nil, others...), nil))
	newHello := entry(t, "hello-2.13", "hello-2.13", role.Runtime, 100<<10)
	delta := write(t, key, []bundle.Base{{ID: hash("an inventory"), Created: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC), Paths: len(others), Provides: []storepath.Path{libc.Path}}}, newHello)
	d := inventory.Compare(cache, open(t, delta, nil))
	var b strings.Builder
	if err := d.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	want := "no longer needed (12 packages): " + strings.Join(names[:5], ", ") + " and 7 more (--json lists them all)\n"
	if !strings.Contains(b.String(), "hello: 2.12 → 2.13") || !strings.Contains(b.String(), want) || strings.Contains(b.String(), "tool05") {
		t.Errorf("diff of a cache of 14 packages and a delta of one:\n%s\nwant hello updated and the rest in %q", b.String(), want)
	}
	if len(d.Packages) != 13 {
		t.Errorf("diff of a cache of 14 packages and a delta of one: %d package changes, want 13 in JSON", len(d.Packages))
	}
}

// TestShowExtends: show says what a bundle extends as a reader can use
// it: a cache inventory by when it was taken and its size (its id is the
// sha256 of its file, which no command prints), a bundle by its id, and,
// for a manifest that predates kinds, that it cannot tell.
func TestShowExtends(t *testing.T) {
	w := newWorld(t)
	invFile, ci := writeInventory(t, w)
	bases := []bundle.Base{
		{ID: id(t, invFile), Created: ci.Created, Paths: len(ci.Paths), Kind: bundle.BaseInventory},
		{ID: id(t, w.old), Created: ci.Created, Paths: 7, Kind: bundle.BaseBundle},
		{ID: id(t, w.old), Created: ci.Created, Paths: 7},
		{ID: id(t, w.old), Created: ci.Created, Paths: 1, Kind: bundle.BaseBundle},
	}
	var b strings.Builder
	if err := open(t, write(t, w.key, bases, w.newEntries...), nil).WriteText(&b); err != nil {
		t.Fatal(err)
	}
	when := ci.Created.UTC().Format("2006-01-02 15:04:05 UTC")
	want := fmt.Sprintf("  extends:  the cache inventory taken %s (%d paths)\n"+
		"  extends:  bundle %[3]s, packed %[1]s (7 paths)\n"+
		"  extends:  %[3]s, packed or taken %[1]s (7 paths): a bundle, or a cache inventory\n"+
		"  extends:  bundle %[3]s, packed %[1]s (1 path)\n", when, len(ci.Paths), id(t, w.old))
	if !strings.Contains(b.String(), want) {
		t.Errorf("show's text lacks\n%s\n%s", want, b.String())
	}
	if strings.Contains(b.String(), id(t, invFile).String()) {
		t.Errorf("show names the inventory by its id:\n%s", b.String())
	}
}

// TestOpenEmptyCache: a directory of nix-cache-info alone (a cache just
// made, or one import made and put nothing in) is an empty cache, for
// show and diff, which say so; with a narinfo or a NAR file beside it, it
// is still a bundle whose pack did not finish.
func TestOpenEmptyCache(t *testing.T) {
	w := newWorld(t)
	const info = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n"
	for _, tt := range []struct {
		name  string
		files []string // beside nix-cache-info, "" contents; a name ending in / is a directory
		empty bool     // read as an empty cache; else an unfinished bundle
	}{
		{"nix-cache-info alone", nil, true},
		{"and a killed writer's temp file", []string{".tmp-123"}, true},
		{"and the record dir import makes", []string{bundle.RecordDir + "/"}, true},
		{"and a narinfo", []string{"0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk.narinfo"}, false},
		{"and nar/", []string{"nar/"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cacheDir := t.TempDir()
			if err := os.WriteFile(filepath.Join(cacheDir, bundle.CacheInfo), []byte(info), 0o644); err != nil {
				t.Fatal(err)
			}
			for _, f := range tt.files {
				p := filepath.Join(cacheDir, filepath.FromSlash(f))
				var err error
				if strings.HasSuffix(f, "/") {
					err = os.MkdirAll(p, 0o755)
				} else {
					err = os.WriteFile(p, nil, 0o644)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			inv, err := inventory.Open(cacheDir, nil)
			if !tt.empty {
				if !errors.Is(err, bundle.ErrMissing) || !strings.Contains(fmt.Sprint(err), "a bundle whose pack did not finish") {
					t.Errorf("Open = %v, want a bundle whose pack did not finish", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open = %v, want an empty cache", err)
			}
			if inv.Kind != inventory.KindCache || inv.StoreDir != dir || len(inv.Bundles) != 0 || inv.Totals.Paths != 0 {
				t.Errorf("Open = kind %q, store %q, %d bundles, %d paths; want an empty cache of %s", inv.Kind, inv.StoreDir, len(inv.Bundles), inv.Totals.Paths, dir)
			}
			var show bytes.Buffer
			if err := inv.WriteText(&show); err != nil {
				t.Fatal(err)
			}
			const says = "an empty cache: it holds no store path, and no bundle was imported into it"
			if !strings.HasPrefix(show.String(), says+"\n") {
				t.Errorf("show says:\n%s\nwant it to start %q", show.String(), says)
			}
			// diff says which side is empty, and shows the bundle's
			// paths added, or removed.
			bundleInv := open(t, w.old, nil)
			for _, d := range []struct {
				side     string
				old, new *inventory.Inventory
			}{{"OLD", inv, bundleInv}, {"NEW", bundleInv, inv}} {
				diff := inventory.Compare(d.old, d.new)
				if want := []string{d.side + " is " + says}; !cmp.Equal(want, diff.Notes) {
					t.Errorf("diff with the empty cache as %s: notes %q, want %q", d.side, diff.Notes, want)
				}
				changed := diff.PathsAdded.Paths + diff.PathsRemoved.Paths
				if changed != bundleInv.Totals.Paths {
					t.Errorf("diff with the empty cache as %s: %d paths added or removed, want the bundle's %d", d.side, changed, bundleInv.Totals.Paths)
				}
			}
		})
	}
}

// TestCompareDeltaOld: a delta OLD is read as its own paths and those its
// bases provide (bases[].provides), known by name and version alone, so
// that an upgrade of a package it left to its base shows as one, with
// its size change unknown; one that predates provides is compared as it
// is. pack --since compares a Merge of its bases the same way.
func TestCompareDeltaOld(t *testing.T) {
	key, _, err := signing.Generate("inventory-test-1")
	if err != nil {
		t.Fatal(err)
	}
	rebuild := func(e bundle.PathEntry, b string) bundle.PathEntry {
		e.Path.Hash = hash(e.Path.Name + " build " + b).Nix32()[:32]
		return e
	}
	system := entry(t, "system", "system", role.Runtime, 1<<10)
	glibc := entry(t, "glibc-2.40", "glibc-2.40", role.Runtime, 2<<20)
	libfoo := entry(t, "libfoo-1.0", "libfoo-1.0", role.Runtime, 130<<10)
	helloOld, helloNew := entry(t, "hello-2.12", "hello-2.12", role.Runtime, 100<<10), entry(t, "hello-2.13", "hello-2.13", role.Runtime, 110<<10)
	base := write(t, key, nil, system, glibc, libfoo, helloOld)
	created := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	// OLD upgrades hello and leaves glibc and libfoo to its base.
	oldDelta := func(provides []storepath.Path) string {
		return write(t, key, []bundle.Base{{ID: id(t, base), Created: created, Paths: 4, Provides: provides}}, rebuild(system, "b"), helloNew)
	}
	withProvides := oldDelta([]storepath.Path{glibc.Path, libfoo.Path})
	libfooNew := entry(t, "libfoo-2.0", "libfoo-2.0", role.Runtime, 136<<10)
	newSystem := rebuild(system, "c")
	full := write(t, key, nil, newSystem, glibc, libfooNew, helloNew)
	glibcRebuilt := write(t, key, nil, newSystem, rebuild(glibc, "b"), libfoo, helloNew)
	// NEW packed --since OLD: it needs glibc, which OLD's base provides,
	// and hello, which OLD carries.
	sinceOld := write(t, key, []bundle.Base{{ID: id(t, withProvides), Created: created, Paths: 2, Provides: []storepath.Path{glibc.Path, helloNew.Path}}}, newSystem, libfooNew)

	type want struct {
		Notes    []string // each note's start
		Packages []string
		Totals   string // the text's last line
	}
	for _, tt := range []struct {
		name     string
		old, new func() *inventory.Inventory
		want     want
	}{
		{"a delta that says what its base provides",
			func() *inventory.Inventory { return open(t, withProvides, nil) },
			func() *inventory.Inventory { return open(t, full, nil) },
			want{[]string{"OLD is a delta of bundles (" + id(t, base).String() + "): it is read as its own paths and the 2 paths its bases provide"},
				[]string{"libfoo: 1.0 → 2.0, size change unknown", "system: ε rebuilt"},
				"packages: version changed 1, rebuilt 1; 2 paths added (137.0 KiB NAR, 68.5 KiB compressed); 2 paths removed (1.0 KiB NAR, 512 B compressed)"}},
		{"a rebuild of what its base provides",
			func() *inventory.Inventory { return open(t, withProvides, nil) },
			func() *inventory.Inventory { return open(t, glibcRebuilt, nil) },
			want{[]string{"OLD is a delta of bundles (" + id(t, base).String() + "): it is read as its own paths and the 2 paths its bases provide"},
				[]string{"glibc: 2.40 rebuilt, size change unknown", "system: ε rebuilt"},
				"packages: rebuilt 2; 2 paths added (2.0 MiB NAR, 1.0 MiB compressed); 2 paths removed (1.0 KiB NAR, 512 B compressed)"}},
		{"a delta that predates provides",
			func() *inventory.Inventory { return open(t, oldDelta(nil), nil) },
			func() *inventory.Inventory { return open(t, full, nil) },
			want{[]string{"OLD is a delta of bundles (" + id(t, base).String() + ") whose manifest does not say what they provide: compared as it is"},
				[]string{"glibc: ∅ → 2.40, +2.0 MiB", "libfoo: ∅ → 2.0, +136.0 KiB", "system: ε rebuilt"},
				"packages: rebuilt 1, added 2; 3 paths added (2.1 MiB NAR, 1.1 MiB compressed); 1 path removed (1.0 KiB NAR, 512 B compressed)"}},
		{"pack --since a delta",
			func() *inventory.Inventory { return inventory.Merge(withProvides, open(t, withProvides, nil)) },
			func() *inventory.Inventory { return open(t, sinceOld, nil) },
			want{[]string{"OLD is a delta of bundles (" + id(t, base).String() + "): it is read as its own paths and the 2 paths its bases provide",
				"NEW is a delta of OLD: it is read as its own paths and the 2 paths of OLD its bases provide for it; what else OLD holds is what NEW no longer needs, which importing NEW does not remove"},
				[]string{"libfoo: 1.0 → 2.0, size change unknown", "system: ε rebuilt"},
				"packages: version changed 1, rebuilt 1; 2 paths added (137.0 KiB NAR, 68.5 KiB compressed); 2 paths no longer needed (1.0 KiB NAR, 512 B compressed)"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := inventory.Compare(tt.old(), tt.new())
			text, packages, last := diffText(t, d)
			got := want{Notes: []string{}, Packages: packages, Totals: last}
			for i, n := range d.Notes {
				if i < len(tt.want.Notes) && strings.HasPrefix(n, tt.want.Notes[i]) {
					n = tt.want.Notes[i]
				}
				got.Notes = append(got.Notes, n)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("diff (-want +got):\n%s\n%s", diff, text)
			}
			for _, c := range d.Packages {
				if c.Name == "libfoo" && c.SizeUnknown != (len(c.Old) > 0) {
					t.Errorf("libfoo %v → %v: size unknown %v, narBytesChange %d", c.Old, c.New, c.SizeUnknown, c.SizeDelta)
				}
			}
		})
	}
	d := inventory.Compare(open(t, withProvides, nil), open(t, full, nil))
	golden(t, "diff-delta-old.txt", func(b *bytes.Buffer) error { return d.WriteText(b) })
}
