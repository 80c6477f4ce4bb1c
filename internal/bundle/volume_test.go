package bundle_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

func TestParseVolumeSize(t *testing.T) {
	for s, want := range map[string]int64{
		"4G": 4e9, "25GB": 25e9, "700MiB": 700 << 20, "fat32": 4<<30 - 1, "FAT32": 4<<30 - 1,
		"1000": 1000, "64KiB": 64 << 10, "64k": 64000, "1.5GiB": 3 << 29, "2TB": 2e12, "100B": 100,
		// As people type them, in lower case.
		"4g": 4e9, "700mb": 700e6, "700mib": 700 << 20, "64kib": 64 << 10, "2t": 2e12, "100b": 100,
	} {
		if got, err := bundle.ParseVolumeSize(s); err != nil || got != want {
			t.Errorf("ParseVolumeSize(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "0", "-1G", "4X", "G", "4 gigabytes", "1e3"} {
		if got, err := bundle.ParseVolumeSize(s); err == nil {
			t.Errorf("ParseVolumeSize(%q) = %d, want an error", s, got)
		}
	}
}

// volumeSet writes a signed set of n paths, one of them big enough to
// span several volumes of size bytes, each referring to the one before,
// uncompressed so that their sizes are what they are.
func volumeSet(t *testing.T, sk signing.SecretKey, n int, size int64, salt string) []string {
	t.Helper()
	return volumeSetAt(t, filepath.Join(t.TempDir(), "set.tar"), sk, n, size, salt)
}

// volumeSetAt is volumeSet into the volumes of out.
func volumeSetAt(t *testing.T, out string, sk signing.SecretKey, n int, size int64, salt string) []string {
	t.Helper()
	return volumeSetLog(t, out, sk, n, size, salt, nil)
}

// volumeSetLog is volumeSetAt with the writer's log.
func volumeSetLog(t *testing.T, out string, sk signing.SecretKey, n int, size int64, salt string, log *slog.Logger) []string {
	t.Helper()
	w, err := bundle.NewVolumeWriter(out, size, storepath.DefaultDir, bundle.WriterOptions{Key: &sk, Compression: "none", Log: log})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var prev storepath.Path
	for i := range n {
		p, err := storepath.DefaultDir.Base(fmt.Sprintf("%032d-v%d%s", i, i, salt))
		if err != nil {
			t.Fatal(err)
		}
		content := fmt.Appendf(nil, "path %d %s\n", i, salt)
		if i == 1 {
			big := make([]byte, 3*size)
			for j := range big {
				big[j] = byte(rng.Uint32())
			}
			content = append(content, big...)
		}
		buf := fileNAR(t, content)
		meta := bundle.PathMeta{Roles: role.Runtime}
		if i > 0 {
			meta.References = []storepath.Path{prev}
		}
		if err := w.AddNAR(context.Background(), p, buf, meta); err != nil {
			t.Fatal(err)
		}
		prev = p
	}
	if err := w.AddFile(bundle.RegistryName, []byte(`{"version":2,"flakes":[]}`+"\n")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(context.Background(), bundle.ManifestHeader{Tool: "test", Created: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC), Mode: role.ModeRuntime}); err != nil {
		t.Fatal(err)
	}
	return w.Volumes()
}

func TestVolumes(t *testing.T) {
	ctx := context.Background()
	sk, pk, _ := signing.Generate("volume-test-1")
	keys := signing.NewKeyring(pk)
	const size = 40 << 10
	vols := volumeSet(t, sk, 12, size, "")
	if len(vols) < 4 {
		t.Fatalf("%d volumes, want a path spanning several", len(vols))
	}
	for i, v := range vols {
		fi, err := os.Stat(v)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > size {
			t.Errorf("%s: %d bytes, more than the volume size %d", v, fi.Size(), size)
		}
		if want := fmt.Sprintf("set.%03d.tar", i+1); filepath.Base(v) != want {
			t.Errorf("volume %d is %s, want %s", i+1, filepath.Base(v), want)
		}
		// Every volume verifies on its own.
		rep, err := bundle.Verify(ctx, v, bundle.VerifyOptions{Keys: keys, Deep: true})
		if err != nil {
			t.Fatalf("verify %s alone: %v", v, err)
		}
		if rep.Volumes == nil || !slices.Equal(rep.Volumes.Given, []int{i + 1}) || rep.Volumes.Count != len(vols) {
			t.Errorf("verify %s: volumes %+v", v, rep.Volumes)
		}
	}
	// The whole set, in any order: every path whole.
	rev := slices.Clone(vols)
	slices.Reverse(rev)
	rep, err := bundle.VerifyVolumes(ctx, rev, bundle.VerifyOptions{Keys: keys, Deep: true})
	if err != nil {
		t.Fatalf("verify the set: %v", err)
	}
	if rep.Held != 0 || len(rep.Volumes.Given) != len(vols) {
		t.Errorf("verify the set: %d paths held, volumes %+v", rep.Held, rep.Volumes)
	}
	if rep.Manifest.Version != bundle.VolumesVersion || len(rep.Manifest.Volumes) != len(vols) {
		t.Errorf("manifest version %d with %d volumes", rep.Manifest.Version, len(rep.Manifest.Volumes))
	}
	spans := 0
	for _, v := range rep.Manifest.Volumes {
		spans += len(v.Pieces)
	}
	if spans < 3 {
		t.Errorf("%d pieces in the set, want the big path split across volumes", spans)
	}

	t.Run("flipped byte", func(t *testing.T) {
		// 1600: in the data of the first file after nix-cache-info.
		for _, i := range []int{0, 1, len(vols) - 1} {
			bad := flipped(t, vols[i], 1600)
			for _, set := range [][]string{{bad}, append(slices.Clone(vols[:i]), append([]string{bad}, vols[i+1:]...)...)} {
				_, err := bundle.VerifyVolumes(ctx, set, bundle.VerifyOptions{Keys: keys})
				var ve *bundle.VerifyError
				if !errors.As(err, &ve) || !errors.Is(err, bundle.ErrCorrupt) {
					t.Fatalf("volume %d flipped, %d volumes: %v; want corrupt", i+1, len(set), err)
				}
				named := false
				for _, p := range ve.Problems {
					named = named || strings.HasPrefix(p.File, filepath.Base(bad)+":")
					if strings.HasPrefix(p.File, "set.") && !strings.HasPrefix(p.File, filepath.Base(bad)) {
						t.Errorf("volume %d flipped: problem %s: %s names another volume", i+1, p.File, p.Problem)
					}
				}
				if !named {
					t.Errorf("volume %d flipped, %d volumes: %v; want a problem naming %s", i+1, len(set), err, filepath.Base(bad))
				}
			}
		}
		// A damaged copy of the manifest is not another set.
		data, _ := os.ReadFile(vols[2])
		i := bytes.LastIndex(data, []byte(`"format"`))
		bad := flipped(t, vols[2], int64(i+3))
		if _, err := bundle.VerifyVolumes(ctx, []string{vols[0], vols[1], bad}, bundle.VerifyOptions{Keys: keys}); err == nil || !strings.Contains(err.Error(), "copy of the manifest is damaged") {
			t.Errorf("a damaged manifest copy: %v", err)
		}
		// Given first, one against one: the whole signed manifest is
		// the set's, and the damaged copy is named.
		_, err := bundle.VerifyVolumes(ctx, []string{bad, vols[0]}, bundle.VerifyOptions{Keys: keys})
		var ve *bundle.VerifyError
		if !errors.As(err, &ve) || !errors.Is(err, bundle.ErrCorrupt) || errors.Is(err, bundle.ErrUntrusted) || len(ve.Problems) != 1 ||
			!strings.HasPrefix(ve.Problems[0].File, filepath.Base(bad)+":") || !strings.Contains(ve.Problems[0].Problem, "copy of the manifest is damaged") {
			t.Errorf("a damaged manifest copy given first: %v; want its copy named damaged", err)
		}
	})
	t.Run("errors", func(t *testing.T) {
		other := volumeSet(t, sk, 12, size, "other")
		cut := filepath.Join(t.TempDir(), "set.002.tar")
		data, _ := os.ReadFile(vols[1])
		os.WriteFile(cut, data[:len(data)/2], 0o644)
		for _, tt := range []struct {
			name string
			vols []string
			want string
		}{
			{"another set", []string{vols[0], vols[1], other[2]}, "a volume of another set"},
			{"twice", []string{vols[0], vols[1], vols[1]}, "the same volume given twice"},
			{"cut short", []string{vols[0], cut}, "volume cut short"},
			// Alone, no volume has a manifest to give: still cut
			// short, not "not a bundle".
			{"cut short alone", []string{cut}, "volume cut short"},
		} {
			_, err := bundle.VerifyVolumes(ctx, tt.vols, bundle.VerifyOptions{Keys: keys})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
			}
		}
		// Another set's volume holds none of this set's files: said so,
		// not as the list of no volumes it holds files of.
		_, err := bundle.VerifyVolumes(ctx, []string{vols[0], vols[1], other[2]}, bundle.VerifyOptions{Keys: keys})
		var ve *bundle.VerifyError
		if !errors.As(err, &ve) || !slices.ContainsFunc(ve.Problems, func(p bundle.Problem) bool {
			return p.File == filepath.Base(other[2]) && p.Problem == "holds none of the set's files"
		}) {
			t.Errorf("another set's volume: %v, want it said to hold none of the set's files", err)
		}
		// verify and import of the one file tell a volume by its name.
		_, err = bundle.Verify(ctx, cut, bundle.VerifyOptions{Keys: keys})
		if !errors.As(err, &ve) || !errors.Is(err, bundle.ErrCorrupt) || len(ve.Problems) != 1 ||
			ve.Problems[0].File != filepath.Base(cut) || !strings.Contains(ve.Problems[0].Problem, "volume cut short") {
			t.Errorf("verify %s cut short: %v, want one corrupt problem naming it, cut short", cut, err)
		}
		// A volume read from a stream: one problem saying so, not one per
		// file the other volumes hold.
		f, err := os.Open(vols[1])
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		_, err = bundle.Verify(ctx, "-", bundle.VerifyOptions{Keys: keys, Stdin: f})
		if !errors.As(err, &ve) || len(ve.Problems) != 1 || !strings.Contains(ve.Problems[0].Problem, "a volume of a set") {
			t.Errorf("verify - of a volume: %v, want one problem saying it is a volume", err)
		}
		cacheDir := filepath.Join(t.TempDir(), "cache")
		if _, err := bundle.Import(ctx, cut, cacheDir, bundle.ImportOptions{Keys: keys}); err == nil || !errors.Is(err, bundle.ErrCorrupt) || !strings.Contains(err.Error(), "volume cut short") {
			t.Errorf("import %s cut short: %v, want corrupt, cut short", cut, err)
		}
		if _, err := os.Stat(cacheDir); !os.IsNotExist(err) {
			t.Errorf("a refused import made the cache: %v", err)
		}
	})
	t.Run("too small", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "x.tar")
		if _, err := bundle.NewVolumeWriter(out, 1000, storepath.DefaultDir, bundle.WriterOptions{}); !errors.Is(err, bundle.ErrVolumeTooSmall) {
			t.Errorf("NewVolumeWriter(1000 bytes) = %v, want ErrVolumeTooSmall", err)
		}
		// Bundles none of which fits volumes of 16 KiB: many small
		// paths, whose manifest is the most of a volume; paths bigger
		// than a volume, split; both. Each names the least size that
		// holds it: that one works, and so does the --volume-size it
		// suggests, and a byte less does not.
		for _, tt := range []struct {
			name       string
			small, big int
			bigSize    int
		}{
			{"200 small paths", 200, 0, 0},
			{"400 small paths", 400, 0, 0},
			{"3 paths of 40 KiB", 0, 3, 40 << 10},
			{"120 small paths, 2 of 30 KiB", 120, 2, 30 << 10},
			{"60 paths of 3 KiB", 0, 60, 3 << 10},
		} {
			write := func(out string, size int64) error {
				w, err := bundle.NewVolumeWriter(out, size, storepath.DefaultDir, bundle.WriterOptions{Key: &sk})
				if err != nil {
					t.Fatal(err)
				}
				rnd := rand.New(rand.NewPCG(1, 2))
				for i := range tt.small + tt.big {
					p, _ := storepath.DefaultDir.Base(fmt.Sprintf("%032d-a-long-name-for-a-small-path-%d", i, i))
					content := []byte{'x'}
					if i >= tt.small {
						content = make([]byte, tt.bigSize)
						for k := range content {
							content[k] = byte(rnd.Uint32())
						}
					}
					if err := w.AddNAR(ctx, p, fileNAR(t, content), bundle.PathMeta{Roles: role.Runtime}); err != nil {
						t.Fatal(err)
					}
				}
				return w.Close(ctx, bundle.ManifestHeader{Mode: role.ModeRuntime, Created: time.Unix(1e9, 0)})
			}
			out := filepath.Join(t.TempDir(), "x.tar")
			err := write(out, bundle.MinVolumeSize)
			if !errors.Is(err, bundle.ErrVolumeTooSmall) {
				t.Fatalf("%s: Close with volumes of 16 KiB = %v, want ErrVolumeTooSmall", tt.name, err)
			}
			if left, _ := filepath.Glob(filepath.Join(filepath.Dir(out), "*")); len(left) != 0 {
				t.Errorf("%s: a failed volume set left %q", tt.name, left)
			}
			m := regexp.MustCompile(`: volume size too small: 16384 bytes; the least volume size that holds this bundle is (\d+) bytes: --volume-size (\d+)KiB$`).FindStringSubmatch(err.Error())
			if m == nil {
				t.Fatalf("%s: Close error %q names not only the least size", tt.name, err)
			}
			least, _ := strconv.ParseInt(m[1], 10, 64)
			kib, _ := strconv.ParseInt(m[2], 10, 64)
			if kib<<10 < least || (kib-1)<<10 >= least {
				t.Errorf("%s: --volume-size %sKiB is not %d bytes rounded up", tt.name, m[2], least)
			}
			if err := write(filepath.Join(t.TempDir(), "x.tar"), least-1); !errors.Is(err, bundle.ErrVolumeTooSmall) {
				t.Errorf("%s: volumes of the least size %d less a byte: %v, want ErrVolumeTooSmall", tt.name, least, err)
			}
			for _, size := range []int64{least, kib << 10} {
				dir := t.TempDir()
				if err := write(filepath.Join(dir, "x.tar"), size); err != nil {
					t.Errorf("%s: volumes of %d bytes, least %d: %v", tt.name, size, least, err)
				}
				vols, _ := filepath.Glob(filepath.Join(dir, "x.*.tar"))
				for _, v := range vols {
					if fi, err := os.Stat(v); err != nil {
						t.Error(err)
					} else if fi.Size() > size {
						t.Errorf("%s: %s: %d bytes, more than the volume size %d", tt.name, filepath.Base(v), fi.Size(), size)
					}
				}
				if len(vols) == 0 {
					t.Errorf("%s: volumes of %d bytes: none written", tt.name, size)
				}
			}
		}
	})
}

// flipped copies file with the byte at off flipped.
func flipped(t *testing.T, file string, off int64) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	data[off] ^= 0xff
	out := filepath.Join(t.TempDir(), filepath.Base(file))
	if err := os.WriteFile(out, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

var _ = cmp.Diff
var _ = io.EOF

// TestImportVolumes imports a set volume by volume, last first, each in a
// run of its own: a path appears only once it is whole and its closure
// is in, what waits is kept, the report names the volumes still missing,
// and the end is the cache a one-run import makes. A volume of another
// set, one given twice and one cut short are refused, the cache as it was.
func TestImportVolumes(t *testing.T) {
	ctx := context.Background()
	sk, pk, _ := signing.Generate("volume-test-1")
	keys := signing.NewKeyring(pk)
	const size = 40 << 10
	vols := volumeSet(t, sk, 12, size, "")
	all := filepath.Join(t.TempDir(), "all")
	if _, err := bundle.ImportVolumes(ctx, vols, all, bundle.ImportOptions{Keys: keys}); err != nil {
		t.Fatalf("import every volume at once: %v", err)
	}
	narinfos := func(dir string) []string {
		names, _ := filepath.Glob(filepath.Join(dir, "*.narinfo"))
		for i := range names {
			names[i] = filepath.Base(names[i])
		}
		return names
	}
	if n := len(narinfos(all)); n != 12 {
		t.Fatalf("one-run import: %d narinfos, want 12", n)
	}

	cacheDir := filepath.Join(t.TempDir(), "cache")
	var prev []string
	for i := len(vols) - 1; i >= 0; i-- {
		rep, err := bundle.Import(ctx, vols[i], cacheDir, bundle.ImportOptions{Keys: keys})
		if err != nil {
			t.Fatalf("import volume %d alone: %v", i+1, err)
		}
		got := narinfos(cacheDir)
		// Each path refers to the one before, and the chain starts in
		// volume 1: nothing can appear before it comes.
		if i > 0 && len(got) != 0 {
			t.Errorf("after volumes %d..%d: %d paths in the cache, want none until volume 1", i+1, len(vols), len(got))
		}
		if i > 0 && (rep.Volumes == nil || len(rep.Volumes.Missing) != i) {
			t.Errorf("after volume %d: report %+v, want %d missing", i+1, rep.Volumes, i)
		}
		prev = got
	}
	if diff := cmp.Diff(narinfos(all), prev); diff != "" {
		t.Errorf("volume by volume vs at once (-want +got):\n%s", diff)
	}
	if nixtest.TreeHash(t, filepath.Join(cacheDir, "nar")) != nixtest.TreeHash(t, filepath.Join(all, "nar")) {
		t.Error("NAR files differ from a one-run import")
	}
	if left, _ := filepath.Glob(filepath.Join(cacheDir, "nix-airgap", "volumes", "*")); len(left) != 0 {
		t.Errorf("kept files left after the set completed: %q", left)
	}
	if recs, _ := filepath.Glob(filepath.Join(cacheDir, bundle.RecordDir, "*.json")); len(recs) != 1 {
		t.Errorf("records %q, want the set's", recs)
	}
	if _, err := bundle.Verify(ctx, cacheDir, bundle.VerifyOptions{Keys: keys}); err != nil {
		t.Errorf("verify the cache: %v", err)
	}

	t.Run("forward", func(t *testing.T) {
		// First to last, paths appear as their closures come in.
		fwd := filepath.Join(t.TempDir(), "fwd")
		last := 0
		for i, v := range vols {
			rep, err := bundle.Import(ctx, v, fwd, bundle.ImportOptions{Keys: keys})
			if err != nil {
				t.Fatalf("import volume %d: %v", i+1, err)
			}
			n := len(narinfos(fwd))
			if n < last || (i == 0 && (n == 0 || n == 12)) {
				t.Errorf("after volume %d: %d paths (%d before), held %d", i+1, n, last, rep.Held)
			}
			last = n
		}
		if last != 12 {
			t.Errorf("forward: %d paths in the end", last)
		}
	})
	t.Run("refused", func(t *testing.T) {
		other := volumeSet(t, sk, 12, size, "other")
		cut := filepath.Join(t.TempDir(), "set.002.tar")
		data, _ := os.ReadFile(vols[1])
		os.WriteFile(cut, data[:len(data)/2], 0o644)
		partial := filepath.Join(t.TempDir(), "partial")
		if _, err := bundle.Import(ctx, vols[2], partial, bundle.ImportOptions{Keys: keys}); err != nil {
			t.Fatal(err)
		}
		before := nixtest.TreeHash(t, partial)
		for _, set := range [][]string{{vols[0], other[1]}, {vols[0], vols[0]}, {vols[0], cut}, {flipped(t, vols[0], 1600)}} {
			if _, err := bundle.ImportVolumes(ctx, set, partial, bundle.ImportOptions{Keys: keys}); err == nil {
				t.Errorf("import %q succeeded", set)
			}
			if nixtest.TreeHash(t, partial) != before {
				t.Fatalf("a refused import of %q changed the cache", set)
			}
		}
	})
}

// TestVolumeSpoolResumed: a pack of volumes that is interrupted keeps its
// spool, and the next one takes it up and reuses what it holds, unless a
// live writer holds it; Close removes it.
func TestVolumeSpoolResumed(t *testing.T) {
	sk, pk, _ := signing.Generate("site-1")
	dir, paths := fakePaths(t)
	tmp := t.TempDir()
	opts := bundle.WriterOptions{Key: &sk, TempDir: tmp}
	meta := bundle.PathMeta{Roles: role.Source, Flat: true}
	add := func(w *bundle.Writer, p storepath.Path) {
		t.Helper()
		var buf bytes.Buffer
		if err := nar.Dump(&buf, paths[p]); err != nil {
			t.Fatal(err)
		}
		if err := w.AddNAR(t.Context(), p, &buf, meta); err != nil {
			t.Fatal(err)
		}
	}
	spools := func() int {
		s, _ := filepath.Glob(filepath.Join(tmp, "nix-airgap-spool-*"))
		return len(s)
	}
	out := filepath.Join(t.TempDir(), "set.tar")
	interrupted, err := bundle.NewVolumeWriter(out, 1<<20, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	var first storepath.Path
	for p := range paths {
		first = p
		add(interrupted, p)
		break
	}
	interrupted.Abort()
	if n := spools(); n != 1 {
		t.Fatalf("%d spools after an interrupted pack, want its own", n)
	}

	resumed, err := bundle.NewVolumeWriter(out, 1<<20, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	// The spool is taken: another writer starts a new one.
	other, err := bundle.NewVolumeWriter(filepath.Join(t.TempDir(), "other.tar"), 1<<20, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := other.Reuse(t.Context(), first, meta); ok || err != nil {
		t.Errorf("a second writer reused %s from a spool a live one holds: %v, %v", first.Name, ok, err)
	}
	other.Abort()
	for p := range paths {
		ok, err := resumed.Reuse(t.Context(), p, meta)
		if err != nil || ok != (p == first) {
			t.Errorf("Reuse %s = %v, %v, want %v", p.Name, ok, err, p == first)
		}
		if !ok {
			add(resumed, p)
		}
	}
	if err := resumed.Close(t.Context(), bundle.ManifestHeader{Tool: "test", Mode: role.ModeSources}); err != nil {
		t.Fatal(err)
	}
	rep, err := bundle.Verify(t.Context(), resumed.Volumes()[0], bundle.VerifyOptions{Keys: signing.NewKeyring(pk), Deep: true})
	if err != nil || len(rep.Manifest.Paths) != len(paths) {
		t.Fatalf("Verify = %v, %d paths, want %d", err, len(rep.Manifest.Paths), len(paths))
	}
	// The other writer's aborted spool is what is left.
	if n := spools(); n != 1 {
		t.Errorf("%d spools after Close, want the other writer's", n)
	}
}

// TestVolumeSpoolNewest: of the spools killed packs of volumes left, the
// next pack takes up the newest and removes the others.
func TestVolumeSpoolNewest(t *testing.T) {
	dir, paths := fakePaths(t)
	tmp := t.TempDir()
	opts := bundle.WriterOptions{TempDir: tmp}
	meta := bundle.PathMeta{Roles: role.Source, Flat: true}
	out := filepath.Join(t.TempDir(), "set.tar")
	var ps []storepath.Path
	for p := range paths {
		ps = append(ps, p)
	}
	// Both live at once, so that the second does not take up the first.
	var killed []*bundle.Writer
	for _, p := range ps[:2] {
		w, err := bundle.NewVolumeWriter(out, 1<<20, dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := nar.Dump(&buf, paths[p]); err != nil {
			t.Fatal(err)
		}
		if err := w.AddNAR(t.Context(), p, &buf, meta); err != nil {
			t.Fatal(err)
		}
		killed = append(killed, w)
	}
	for _, w := range killed {
		w.Abort()
	}
	spools, _ := filepath.Glob(filepath.Join(tmp, "nix-airgap-spool-*"))
	if len(spools) != 2 {
		t.Fatalf("spools %v, want the two aborted packs'", spools)
	}
	// The first pack's spool is the older.
	aged := 0
	for _, s := range spools {
		if _, err := os.Stat(filepath.Join(s, ps[0].Hash+".narinfo")); err == nil {
			old := time.Now().Add(-time.Hour)
			os.Chtimes(s, old, old)
			aged++
		}
	}
	if aged != 1 {
		t.Fatalf("%d spools hold %s's narinfo, want one", aged, ps[0].Name)
	}
	w, err := bundle.NewVolumeWriter(out, 1<<20, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for i, p := range ps[:2] {
		if ok, err := w.Reuse(t.Context(), p, meta); err != nil || ok != (i == 1) {
			t.Errorf("Reuse %s = %v, %v, want %v", p.Name, ok, err, i == 1)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, "nix-airgap-spool-*")); len(left) != 1 {
		t.Errorf("spools %v, want only the one taken up", left)
	}
}

// deltaVolumes writes a volume set of two paths: the new version of the
// fixture's base as a binary delta that spans volumes, then a library it
// refers to, whole and spanning volumes too, so that the delta is whole
// before the path can appear.
func deltaVolumes(t *testing.T, size int64) (*deltaFixture, []string) {
	t.Helper()
	rng := rand.New(rand.NewPCG(3, 4))
	fresh := make([]byte, 3*size)
	for i := range fresh {
		fresh[i] = byte(rng.Uint32())
	}
	f, baseNAR := newDeltaCache(t, fresh)
	sk := fuzzSeedKey
	w, err := bundle.NewVolumeWriter(filepath.Join(t.TempDir(), "set.tar"), size, storepath.DefaultDir, bundle.WriterOptions{Key: &sk, Compression: "none"})
	if err != nil {
		t.Fatal(err)
	}
	lib := mustPath(t, strings.Repeat("2", 32)+"-libfoo-1.0")
	if res := f.addDelta(t, w, baseNAR, bundle.PathMeta{Roles: role.Runtime, References: []storepath.Path{lib}}); !res.Delta || res.DeltaSize < uint64(2*size) {
		t.Fatalf("AddNARDelta = %+v; want a delta spanning volumes", res)
	}
	content := make([]byte, 2*size)
	for i := range content {
		content[i] = byte(rng.Uint32())
	}
	buf := fileNAR(t, content)
	if err := w.AddNAR(context.Background(), lib, buf, bundle.PathMeta{Roles: role.Runtime}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(context.Background(), deltaHeader); err != nil {
		t.Fatal(err)
	}
	return f, w.Volumes()
}

// TestVolumesDelta: a volume set carries a binary delta split across
// volumes. Each volume verifies alone; the set verifies deep against the
// cache, rebuilding the delta; imported volume by volume, in either
// order, each in a run of its own, the path appears once its delta is
// whole and its references are in, rebuilt as an ordinary NAR. A missing
// base and a flipped byte in a piece of the delta refuse the import and
// leave the cache as it was, the flipped byte named by its volume.
func TestVolumesDelta(t *testing.T) {
	ctx := context.Background()
	const size = 40 << 10
	f, vols := deltaVolumes(t, size)
	if len(vols) < 5 {
		t.Fatalf("%d volumes, want the delta and the library spanning several", len(vols))
	}
	rep, err := bundle.VerifyVolumes(ctx, vols, bundle.VerifyOptions{Keys: f.keys})
	if err != nil {
		t.Fatal(err)
	}
	m := rep.Manifest
	if m.Version != bundle.VolumesVersion || m.Paths[0].Delta == nil {
		t.Fatalf("manifest version %d, first path's delta %v; want %d and a delta", m.Version, m.Paths[0].Delta, bundle.VolumesVersion)
	}
	deltaURL := m.Paths[0].URL
	var deltaVols []int // the volumes holding pieces of the delta
	for i, v := range m.Volumes {
		if slices.ContainsFunc(v.Pieces, func(p bundle.Piece) bool { return p.File == deltaURL }) {
			deltaVols = append(deltaVols, i)
		}
	}
	if len(deltaVols) < 2 {
		t.Fatalf("the delta is in volumes %v; want it split", deltaVols)
	}
	for _, v := range vols {
		if _, err := bundle.Verify(ctx, v, bundle.VerifyOptions{Keys: f.keys, Deep: true}); err != nil {
			t.Errorf("verify %s alone: %v", filepath.Base(v), err)
		}
	}
	against, err := cache.OpenDir(f.cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	defer against.Close()
	rep, err = bundle.VerifyVolumes(ctx, vols, bundle.VerifyOptions{Keys: f.keys, Deep: true, Against: []cache.Source{against}})
	if err != nil || rep.Rebuilt != 1 {
		t.Errorf("verify the set deep against the cache: %v, rebuilt %d; want 1", err, rep.Rebuilt)
	}

	rev := slices.Clone(vols)
	slices.Reverse(rev)
	orders := map[string][]string{"reverse": rev, "forward": vols}
	for name, order := range orders {
		t.Run(name, func(t *testing.T) {
			cacheDir := copyDir(t, f.cacheDir)
			rebuilt := 0
			for i, v := range order {
				rep, err := bundle.Import(ctx, v, cacheDir, bundle.ImportOptions{Keys: f.keys})
				if err != nil {
					t.Fatalf("import %s (run %d): %v", filepath.Base(v), i+1, err)
				}
				rebuilt += rep.Verify.Rebuilt
				_, err = os.Stat(filepath.Join(cacheDir, cache.NarInfoFile(f.newPath.Hash)))
				if last := i == len(order)-1; last != (err == nil) {
					t.Errorf("after %s (run %d): the delta's path in the cache: %v; want it only after the last", filepath.Base(v), i+1, err == nil)
				}
			}
			// Once: a run that has the delta whole but not the
			// library keeps the delta file, and leaves the rebuild to
			// the run that publishes the path.
			if rebuilt != 1 {
				t.Errorf("the runs rebuilt the delta %d times, want once", rebuilt)
			}
			checkRebuilt(t, f, cacheDir)
			if left, _ := filepath.Glob(filepath.Join(cacheDir, "nix-airgap", "volumes", "*")); len(left) != 0 {
				t.Errorf("kept files left after the set completed: %q", left)
			}
		})
	}

	t.Run("missing base", func(t *testing.T) {
		empty := filepath.Join(t.TempDir(), "empty")
		// Volumes without the whole delta are kept; the one that
		// completes it finds no base and refuses the run.
		if _, err := bundle.ImportVolumes(ctx, vols[1:], empty, bundle.ImportOptions{Keys: f.keys}); err != nil {
			t.Fatal(err)
		}
		before := nixtest.TreeHash(t, empty)
		_, err := bundle.Import(ctx, vols[0], empty, bundle.ImportOptions{Keys: f.keys})
		if !errors.Is(err, bundle.ErrMissing) || !strings.Contains(err.Error(), f.base.String()) {
			t.Errorf("import without the base = %v; want missing, naming %s", err, f.base)
		}
		if nixtest.TreeHash(t, empty) != before {
			t.Error("the refused import changed the cache")
		}
		// The volumes that make the delta whole, without the library's
		// last piece: the path waits, but its missing base refuses the
		// run all the same.
		var whole []string
		for _, i := range deltaVols {
			whole = append(whole, vols[i])
		}
		empty = filepath.Join(t.TempDir(), "empty")
		_, err = bundle.ImportVolumes(ctx, whole, empty, bundle.ImportOptions{Keys: f.keys})
		if !errors.Is(err, bundle.ErrMissing) || !strings.Contains(err.Error(), f.base.String()) {
			t.Errorf("import of the delta's volumes without the base = %v; want missing, naming %s", err, f.base)
		}
		if _, err := os.Stat(filepath.Join(empty, "nix-airgap")); !os.IsNotExist(err) {
			t.Errorf("the refused import kept files: %v", err)
		}
	})
	t.Run("flipped byte", func(t *testing.T) {
		i := deltaVols[len(deltaVols)-1]
		piece := fmt.Sprintf("%s.part%03d", deltaURL, len(deltaVols))
		bad := flipped(t, vols[i], tarDataOffset(t, vols[i], piece)+10)
		set := slices.Clone(vols)
		set[i] = bad
		_, err := bundle.VerifyVolumes(ctx, []string{bad}, bundle.VerifyOptions{Keys: f.keys})
		if !errors.Is(err, bundle.ErrCorrupt) || !strings.Contains(err.Error(), filepath.Base(bad)+":"+piece) {
			t.Errorf("verify the flipped volume = %v; want corrupt, naming %s:%s", err, filepath.Base(bad), piece)
		}
		cacheDir := copyDir(t, f.cacheDir)
		before := nixtest.TreeHash(t, cacheDir)
		_, err = bundle.ImportVolumes(ctx, set, cacheDir, bundle.ImportOptions{Keys: f.keys})
		if !errors.Is(err, bundle.ErrCorrupt) || !strings.Contains(err.Error(), filepath.Base(bad)+":"+piece) {
			t.Errorf("import with a flipped delta piece = %v; want corrupt, naming %s:%s", err, filepath.Base(bad), piece)
		}
		if nixtest.TreeHash(t, cacheDir) != before {
			t.Error("the refused import changed the cache")
		}
	})
}

// checkRebuilt checks that the cache holds the delta's path as a signed
// ordinary NAR of the new NAR, and verifies.
func checkRebuilt(t *testing.T, f *deltaFixture, cacheDir string) {
	t.Helper()
	ctx := context.Background()
	d, err := cache.OpenDir(cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ni, err := d.NarInfo(ctx, f.newPath.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if !ni.Verify(f.keys) || strings.HasSuffix(ni.URL, bundle.DeltaExt) {
		t.Errorf("narinfo %+v; want a signed NAR", ni)
	}
	r, err := d.Open(ctx, ni.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := cache.CheckNAR(r, ni); err != nil {
		t.Error(err)
	}
	if _, err := bundle.Verify(ctx, cacheDir, bundle.VerifyOptions{Keys: f.keys, Deep: true}); err != nil {
		t.Errorf("the cache does not verify: %v", err)
	}
}

// tarDataOffset is where the data of entry name starts in the tar file.
func tarDataOffset(t *testing.T, file, name string) int64 {
	t.Helper()
	fh, _ := openTarEntry(t, file, name)
	defer fh.Close()
	off, err := fh.Seek(0, io.SeekCurrent)
	if err != nil {
		t.Fatal(err)
	}
	return off
}

// TestVolumesMisgiven: a whole bundle's tar given as volumes, and one
// volume given three times, are each refused with one problem naming the
// file, and no volume report: which volumes of which set were given is
// not known ("volumes  of 0 given").
func TestVolumesMisgiven(t *testing.T) {
	ctx := context.Background()
	c := newChain(t, 2)
	keys := signing.NewKeyring(c.sk.Public())
	whole := c.tar(0, 2, nil)
	vols := volumeSet(t, c.sk, 12, 40<<10, "")
	for _, tt := range []struct {
		name string
		vols []string
		file string
		want string
	}{
		{"a whole bundle twice", []string{whole, whole}, filepath.Base(whole), "not a volume: its manifest describes a bundle in one piece"},
		{"a whole bundle and a volume", []string{whole, vols[0]}, filepath.Base(whole), "not a volume: its manifest describes a bundle in one piece"},
		{"a volume three times", []string{vols[0], vols[0], vols[0]}, filepath.Base(vols[0]), "the same volume given twice"},
	} {
		rep, err := bundle.VerifyVolumes(ctx, tt.vols, bundle.VerifyOptions{Keys: keys})
		var ve *bundle.VerifyError
		if !errors.As(err, &ve) || !errors.Is(err, bundle.ErrCorrupt) || len(ve.Problems) != 1 ||
			ve.Problems[0].File != tt.file || !strings.Contains(ve.Problems[0].Problem, tt.want) {
			t.Errorf("%s: %v; want one corrupt problem naming %s: %q", tt.name, err, tt.file, tt.want)
		}
		if rep != nil && rep.Volumes != nil {
			t.Errorf("%s: volume report %+v, want none", tt.name, rep.Volumes)
		}
	}
}

// TestVolumesLeftByOlderSet: packing a smaller set under the name of a
// bigger one removes the older set's volumes after the new set's last
// (its first ones are gone: what is left would only make an import of
// NAME.*.tar refuse), and leaves a file there that is not a volume.
func TestVolumesLeftByOlderSet(t *testing.T) {
	ctx := context.Background()
	sk, pk, _ := signing.Generate("volume-test-1")
	out := filepath.Join(t.TempDir(), "set.tar")
	old := volumeSetAt(t, out, sk, 12, 40<<10, "old")
	junk := bundle.VolumeName(out, len(old)+1, len(old))
	if err := os.WriteFile(junk, []byte("not a volume\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	vols := volumeSetAt(t, out, sk, 2, 40<<10, "new")
	if len(vols) >= len(old) {
		t.Fatalf("%d volumes, then %d; want fewer", len(old), len(vols))
	}
	all, _ := filepath.Glob(filepath.Join(filepath.Dir(out), "set.*.tar"))
	if want := append(slices.Clone(vols), junk); !slices.Equal(all, want) {
		t.Errorf("files %q, want the new set's and the file that is no volume, %q", all, want)
	}
	if _, err := bundle.VerifyVolumes(ctx, vols, bundle.VerifyOptions{Keys: signing.NewKeyring(pk)}); err != nil {
		t.Error(err)
	}
}

// TestVolumesLeftUnseeable: a file named as a volume after the new set's
// last that cannot be looked at (ELOOP) is named in a warning, with the
// error, not taken for the end of the older set's volumes in silence.
func TestVolumesLeftUnseeable(t *testing.T) {
	sk, _, _ := signing.Generate("volume-test-1")
	out := filepath.Join(t.TempDir(), "set.tar")
	old := volumeSetAt(t, out, sk, 12, 40<<10, "old")
	unseeable := old[len(old)-2]
	loop(t, unseeable)
	var log bytes.Buffer
	if vols := volumeSetLog(t, out, sk, 2, 40<<10, "new", slog.New(slog.NewTextHandler(&log, nil))); len(vols) >= len(old)-1 {
		t.Fatalf("%d volumes, then %d; want the second set to end before %s", len(old), len(vols), unseeable)
	}
	if !strings.Contains(log.String(), unseeable) || !strings.Contains(log.String(), eloop) {
		t.Errorf("packing a smaller set with %s unseeable logged:\n%s\nwant a warning naming it, with ELOOP", unseeable, &log)
	}
}

// TestVolumesEmpty: a bundle of no files (a delta of a week that changed
// nothing, packed with --volume-size as every week) is one volume that
// carries its manifest, and verifies and imports like any other.
func TestVolumesEmpty(t *testing.T) {
	ctx := context.Background()
	sk, pk, _ := signing.Generate("volume-test-1")
	keys := signing.NewKeyring(pk)
	w, err := bundle.NewVolumeWriter(filepath.Join(t.TempDir(), "set.tar"), 16<<10, storepath.DefaultDir, bundle.WriterOptions{Key: &sk})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(ctx, bundle.ManifestHeader{Tool: "test", Mode: role.ModeRuntime}); err != nil {
		t.Fatal(err)
	}
	vols := w.Volumes()
	if len(vols) != 1 {
		t.Fatalf("volumes %q, want one", vols)
	}
	rep, err := bundle.Verify(ctx, vols[0], bundle.VerifyOptions{Keys: keys})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if rep.Volumes == nil || rep.Volumes.Count != 1 {
		t.Errorf("verify's volume report %+v, want a set of 1", rep.Volumes)
	}
	irep, err := bundle.Import(ctx, vols[0], filepath.Join(t.TempDir(), "cache"), bundle.ImportOptions{Keys: keys})
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	if irep.Volumes == nil || len(irep.Volumes.Missing) != 0 {
		t.Errorf("import's volume report %+v, want none missing", irep.Volumes)
	}
}

// TestVolumeSet: the volumes of NAME.tar are NAME.DDD.tar alone, in
// order, even when NAME holds glob metacharacters.
func TestVolumeSet(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"w[k].001.tar", "w[k].002.tar", "wk.001.tar", "w[k].1x.005.tar", "w[k].01.tar", "w[k].003.tar.part"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got := bundle.VolumeSet(filepath.Join(dir, "w[k].tar"))
	want := []string{filepath.Join(dir, "w[k].001.tar"), filepath.Join(dir, "w[k].002.tar")}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("VolumeSet (-want +got):\n%s", diff)
	}
	if got := bundle.VolumeSet(filepath.Join(dir, "w[k]")); got != nil {
		t.Errorf("VolumeSet of no NAME.tar = %q, want none", got)
	}
}
