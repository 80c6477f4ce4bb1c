package bundle_test

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// resumeFixture is a tar bundle of a few paths, written in a known order,
// and where each of its entries ends.
type resumeFixture struct {
	dir   storepath.Dir
	sk    signing.SecretKey
	kr    *signing.Keyring
	paths []storepath.Path // in the tar's order
	files map[storepath.Path]string
	full  []byte
	// ends are where each entry's data ends, in order, and names its
	// name.
	ends  []int64
	names []string
	// want is the manifest of the whole bundle.
	want *bundle.Manifest
}

const nix32 = "0123456789abcdfghijklmnpqrsvwxyz"

func newResumeFixture(t *testing.T) *resumeFixture {
	t.Helper()
	f := &resumeFixture{dir: "/nix/store", files: map[storepath.Path]string{}}
	f.sk, _, _ = signing.Generate("test-1")
	f.kr = signing.NewKeyring(f.sk.Public())
	rng := rand.New(rand.NewPCG(1, 2))
	src := t.TempDir()
	for i := range 7 {
		hash := make([]byte, 32)
		for j := range hash {
			hash[j] = nix32[rng.IntN(len(nix32))]
		}
		p, err := f.dir.Base(fmt.Sprintf("%s-p%d", hash, i))
		if err != nil {
			t.Fatal(err)
		}
		// Incompressible, so that cuts fall inside NAR files; 3 and 4
		// are the same, so they share one NAR file.
		content := make([]byte, 3000+1000*i)
		r := rand.New(rand.NewPCG(uint64(i), 0))
		if i == 4 {
			r = rand.New(rand.NewPCG(3, 0))
			content = content[:3000+1000*3]
		}
		for j := range content {
			content[j] = byte(r.IntN(256))
		}
		file := filepath.Join(src, fmt.Sprint(i))
		if err := os.WriteFile(file, content, 0o644); err != nil {
			t.Fatal(err)
		}
		f.paths = append(f.paths, p)
		f.files[p] = file
	}
	var buf bytes.Buffer
	w, err := bundle.NewTarWriter(&buf, f.dir, f.opts(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.paths {
		if err := w.AddNAR(t.Context(), p, f.nar(t, p), f.meta(p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(t.Context(), f.header()); err != nil {
		t.Fatal(err)
	}
	f.want = w.Written()
	f.full = buf.Bytes()
	r := bytes.NewReader(f.full)
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			t.Fatal(err)
		}
		f.ends = append(f.ends, int64(len(f.full)-r.Len()))
		f.names = append(f.names, hdr.Name)
	}
	return f
}

func (f *resumeFixture) opts(t *testing.T) bundle.WriterOptions {
	return bundle.WriterOptions{Key: &f.sk, TempDir: t.TempDir()}
}

func (f *resumeFixture) header() bundle.ManifestHeader {
	return bundle.ManifestHeader{Tool: "test", Mode: role.ModeSources}
}

// meta makes every other path a flat one.
func (f *resumeFixture) meta(p storepath.Path) bundle.PathMeta {
	return bundle.PathMeta{Roles: role.Source, Flat: slices.Index(f.paths, p)%2 == 0}
}

func (f *resumeFixture) nar(t *testing.T, p storepath.Path) io.Reader {
	var buf bytes.Buffer
	if err := nar.Dump(&buf, f.files[p]); err != nil {
		t.Fatal(err)
	}
	return &buf
}

// scan writes data as the tar a killed pack left and scans it for a pack
// of the paths wanted into dir with opts. It returns the file's name and
// the file, open.
func (f *resumeFixture) scan(t *testing.T, data []byte, dir storepath.Dir, opts bundle.WriterOptions, wanted func(storepath.Path) bool) (string, *os.File, *bundle.TarPrefix) {
	t.Helper()
	file, tf := leftTar(t, data)
	var prog scanProgress
	prefix, err := bundle.ScanTar(t.Context(), tf, dir, opts, func(p storepath.Path) (bool, bool) {
		return f.meta(p).Flat, wanted(p)
	}, &prog)
	if err != nil {
		t.Fatal(err)
	}
	// A cut in the padding after a narinfo keeps it whole: the
	// truncation pads it again.
	if kept := min(prefix.Size(), int64(len(data))); prog.phase != bundle.PhaseResume || prog.total != int64(len(data)) || prog.done < kept || prog.done > prog.total {
		t.Errorf("progress: phase %q of %d bytes, %d read; want %q of %d, at least the %d kept read", prog.phase, prog.total, prog.done, bundle.PhaseResume, len(data), kept)
	}
	return file, tf, prefix
}

// leftTar writes data as the tar a killed pack left, and opens it as
// pack does.
func leftTar(t *testing.T, data []byte) (string, *os.File) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "b.tar")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	tf, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tf.Close() })
	return file, tf
}

// scanProgress records what ScanTar tells of its progress.
type scanProgress struct {
	phase       string
	total, done int64
}

func (p *scanProgress) Phase(name string, _ int, bytes int64) { p.phase, p.total = name, bytes }
func (p *scanProgress) Step(_, _ string, bytes int64)         { p.done += bytes }

// narInfoEnd is where p's narinfo's data ends in the whole tar.
func (f *resumeFixture) narInfoEnd(p storepath.Path) int64 {
	return f.ends[slices.Index(f.names, p.Hash+".narinfo")]
}

// TestResumeTar resumes a tar a killed pack left, cut or damaged in many
// ways: what is kept is reused, the rest written again, and the result is
// the bundle an uninterrupted pack writes, verified deeply.
func TestResumeTar(t *testing.T) {
	f := newResumeFixture(t)
	other, _, _ := signing.Generate("test-2")
	all := func(storepath.Path) bool { return true }
	// keptUpTo is a resume that keeps the paths whose narinfo is whole
	// in the first n bytes.
	keptUpTo := func(n int64) []storepath.Path {
		var kept []storepath.Path
		for _, p := range f.paths {
			if f.narInfoEnd(p) <= n {
				kept = append(kept, p)
			}
		}
		return kept
	}
	type tc struct {
		name   string
		tar    []byte
		key    *signing.SecretKey
		store  storepath.Dir
		wanted func(storepath.Path) bool
		kept   []storepath.Path
	}
	var cases []tc
	// Every entry boundary, and cuts within and just past each entry.
	offsets := map[int64]bool{0: true, 100: true, int64(len(f.full)): true}
	start := int64(0)
	for _, end := range f.ends {
		for _, off := range []int64{start + 1, start + 511, start + 512, start + 700, (start + end) / 2, end - 1, end, end + 1} {
			if off <= int64(len(f.full)) {
				offsets[off] = true
			}
		}
		start = (end + 511) &^ 511
		offsets[start] = true
	}
	for _, off := range slices.Sorted(func(yield func(int64) bool) {
		for o := range offsets {
			if !yield(o) {
				return
			}
		}
	}) {
		cases = append(cases, tc{name: fmt.Sprintf("cut at %d", off), tar: f.full[:off], kept: keptUpTo(off)})
	}
	// A power cut left blocks of zeros: in the third path's NAR file, and
	// where the fifth path's narinfo's header is.
	zeroed := func(at int64) []byte {
		b := slices.Clone(f.full)
		at &^= 511
		clear(b[at : at+512])
		return b
	}
	third := f.paths[2]
	narOfThird := f.ends[slices.Index(f.names, third.Hash+".narinfo")-1]
	cases = append(cases,
		tc{name: "zeroed in a NAR file", tar: zeroed(narOfThird - 600), kept: f.paths[:2]},
		tc{name: "zeroed narinfo header", tar: zeroed(f.narInfoEnd(f.paths[4]) - 1), kept: f.paths[:4]},
		tc{name: "another key", tar: f.full, key: &other},
		tc{name: "another store", tar: f.full, store: "/gnu/store"},
		tc{name: "a path no longer wanted", tar: f.full, wanted: func(p storepath.Path) bool { return p != f.paths[5] }, kept: f.paths[:5]},
	)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wanted := c.wanted
			if wanted == nil {
				wanted = all
			}
			dir := f.dir
			if c.store != "" {
				dir = c.store
			}
			opts := f.opts(t)
			if c.key != nil {
				opts.Key = c.key
			}
			file, tf, prefix := f.scan(t, c.tar, dir, opts, wanted)
			if c.store != "" {
				if prefix.Size() != 0 {
					t.Fatalf("kept %d bytes of a tar for another store", prefix.Size())
				}
				return
			}
			w, err := bundle.ResumeTarWriter(tf, prefix, f.dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			var reused []storepath.Path
			var want []bundle.PathEntry
			for _, p := range f.paths {
				if !wanted(p) {
					continue
				}
				ok, err := w.Reuse(t.Context(), p, f.meta(p))
				if err != nil {
					t.Fatal(err)
				}
				if ok {
					reused = append(reused, p)
				} else if err := w.AddNAR(t.Context(), p, f.nar(t, p), f.meta(p)); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(t.Context(), f.header()); err != nil {
				t.Fatal(err)
			}
			if err := tf.Close(); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(c.kept, reused); diff != "" {
				t.Errorf("reused (-want +got):\n%s", diff)
			}
			rep, err := bundle.Verify(t.Context(), file, bundle.VerifyOptions{Keys: signing.NewKeyring(opts.Key.Public()), Deep: true})
			if err != nil {
				t.Fatalf("verify --deep the resumed tar: %v", err)
			}
			for _, e := range f.want.Paths {
				if wanted(e.Path) {
					want = append(want, e)
				}
			}
			if diff := cmp.Diff(want, rep.Manifest.Paths); diff != "" {
				t.Errorf("resumed bundle's paths (-want +got):\n%s", diff)
			}
		})
	}
}

// TestResumeTarAdoptsAll: a resumed tar holds its kept paths whatever
// comes next, so Close refuses a manifest that would leave one out.
func TestResumeTarAdoptsAll(t *testing.T) {
	f := newResumeFixture(t)
	opts := f.opts(t)
	_, tf, prefix := f.scan(t, f.full, f.dir, opts, func(storepath.Path) bool { return true })
	if prefix.Paths() != len(f.paths) {
		t.Fatalf("kept %d paths of a whole tar, want %d", prefix.Paths(), len(f.paths))
	}
	w, err := bundle.ResumeTarWriter(tf, prefix, f.dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for _, p := range f.paths[1:] {
		if ok, err := w.Reuse(t.Context(), p, f.meta(p)); !ok || err != nil {
			t.Fatalf("Reuse %s = %v, %v", p, ok, err)
		}
	}
	if err := w.Close(t.Context(), f.header()); err == nil {
		t.Error("Close succeeded with a kept path not added again")
	}
}

// FuzzScanTar resumes tars a killed pack may have left, damaged anyhow:
// ScanTar may not panic, and what it keeps, adopted and closed, is a
// bundle that verifies deeply and holds exactly the paths it kept.
func FuzzScanTar(f *testing.F) {
	whole := tinyTar(f, 3, "zstd")
	f.Add(whole)
	f.Add(whole[:len(whole)/2])
	f.Add(tinyTar(f, 2, "none"))
	f.Add([]byte{})
	sk := fuzzSeedKey
	kr := signing.NewKeyring(sk.Public())
	// tinyTar's paths.
	metas := map[storepath.Path]bundle.PathMeta{}
	var paths []storepath.Path
	for i := range 3 {
		p, err := storepath.DefaultDir.Base(fmt.Sprintf("%032d-p%d", i, i))
		if err != nil {
			f.Fatal(err)
		}
		metas[p] = bundle.PathMeta{Roles: role.Runtime, Flat: i == 0}
		paths = append(paths, p)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, tf := leftTar(t, data)
		opts := bundle.WriterOptions{Key: &sk, TempDir: t.TempDir()}
		prefix, err := bundle.ScanTar(t.Context(), tf, storepath.DefaultDir, opts, func(p storepath.Path) (bool, bool) {
			m, ok := metas[p]
			return m.Flat, ok
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if max := (int64(len(data)) + 511) &^ 511; prefix.Size() > max {
			t.Fatalf("kept %d bytes of %d", prefix.Size(), len(data))
		}
		kept := prefix.Paths()
		w, err := bundle.ResumeTarWriter(tf, prefix, storepath.DefaultDir, opts)
		if err != nil {
			t.Fatal(err)
		}
		var reused []string
		for _, p := range paths {
			ok, err := w.Reuse(t.Context(), p, metas[p])
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				reused = append(reused, p.String())
			}
		}
		if len(reused) != kept {
			t.Fatalf("reused %d paths of the %d kept", len(reused), kept)
		}
		if err := w.Close(t.Context(), bundle.ManifestHeader{Tool: "fuzz", Mode: role.ModeRuntime}); err != nil {
			t.Fatal(err)
		}
		rep, err := bundle.Verify(t.Context(), file, bundle.VerifyOptions{Keys: kr, Deep: true, Jobs: 1})
		if err != nil {
			t.Fatalf("verify --deep what was kept: %v", err)
		}
		var got []string
		for _, e := range rep.Manifest.Paths {
			got = append(got, e.Path.String())
		}
		if diff := cmp.Diff(reused, got); diff != "" {
			t.Fatalf("paths (-reused +bundle):\n%s", diff)
		}
	})
}
