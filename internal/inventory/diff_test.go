package inventory_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/inventory"
	"github.com/nix-airgap/nix-airgap/internal/role"
)

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
