package bundle_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// fixture is a built test world and bundles of it.
type fixture struct {
	n        *nixtest.Nix
	w        *nixtest.World
	out      string // the toplevel
	sk       signing.SecretKey
	pk       signing.PublicKey
	keyring  *signing.Keyring
	paths    []storepath.Path
	flat     map[storepath.Path][]byte // flat FOD outputs: sha256 of the file
	infos    map[storepath.Path]nixcli.PathInfo
	dir      string // the bundle as a directory
	delta    string // a delta bundle of the toplevel alone, based on dir
	tarFile  string // the same bundle as a tar
	registry []byte
}

func newFixture(t *testing.T) *fixture {
	ctx := t.Context()
	n := nixtest.New(t, nixtest.Options{})
	inet := nixtest.StartInternet(t)
	w := nixtest.NewWorld(t, n, inet, nixtest.WorldOptions{})
	f := &fixture{n: n, w: w, out: w.Build(t), flat: map[storepath.Path][]byte{}, infos: map[storepath.Path]nixcli.PathInfo{}}
	var err error
	if f.sk, f.pk, err = signing.Generate("bundle-test-1"); err != nil {
		t.Fatal(err)
	}
	f.keyring = signing.NewKeyring(f.pk)
	r := &nixcli.Runner{Env: n.Env, KnownStoreDir: n.StoreDir}
	top, err := n.StoreDir.Parse(f.out)
	if err != nil {
		t.Fatal(err)
	}
	if f.paths, err = r.Requisites(ctx, top); err != nil {
		t.Fatal(err)
	}
	for _, fod := range w.FODs() {
		p, err := fod.Path(n.StoreDir)
		if err != nil {
			t.Fatal(err)
		}
		f.paths = append(f.paths, p)
		if fod.Method == storepath.Flat {
			f.flat[p] = fod.Hash.Digest
		}
	}
	slices.SortFunc(f.paths, storepath.Compare)
	f.paths = slices.Compact(f.paths)
	infos, err := r.PathInfo(ctx, f.paths...)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range infos {
		f.infos[in.Path] = in
	}
	f.registry = []byte(`{"version": 2, "flakes": [{"from": {"type": "indirect", "id": "world"}, "to": {"type": "path", "path": "` + f.out + `"}}]}` + "\n")

	f.dir = filepath.Join(t.TempDir(), "bundle")
	bw, err := bundle.NewDirWriter(f.dir, n.StoreDir, bundle.WriterOptions{Key: &f.sk})
	if err != nil {
		t.Fatal(err)
	}
	f.write(t, bw, f.paths, nil)
	f.delta = filepath.Join(t.TempDir(), "delta")
	dw, err := bundle.NewDirWriter(f.delta, n.StoreDir, bundle.WriterOptions{Key: &f.sk})
	if err != nil {
		t.Fatal(err)
	}
	base, err := os.ReadFile(filepath.Join(f.dir, bundle.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	f.write(t, dw, []storepath.Path{top}, []bundle.Base{{ID: bundle.ID(base), Paths: len(f.paths)}})

	f.tarFile = filepath.Join(t.TempDir(), "bundle.tar")
	tf, err := os.Create(f.tarFile)
	if err != nil {
		t.Fatal(err)
	}
	tw, err := bundle.NewTarWriter(tf, n.StoreDir, bundle.WriterOptions{Key: &f.sk, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	f.write(t, tw, f.paths, nil)
	if err := tf.Close(); err != nil {
		t.Fatal(err)
	}
	return f
}

// write adds paths to a bundle, in parallel as pack does, and closes it.
func (f *fixture) write(t *testing.T, bw *bundle.Writer, paths []storepath.Path, bases []bundle.Base) {
	t.Helper()
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make([]error, len(paths))
	for i, p := range paths {
		wg.Go(func() {
			in := f.infos[p]
			meta := bundle.PathMeta{References: in.References, Deriver: in.Deriver, CA: in.CA, Roles: role.Runtime}
			if _, ok := f.flat[p]; ok {
				meta.Flat = true
				meta.Roles = role.Source
			} else if in.CA != "" {
				meta.Roles = role.Source
			}
			pr, pw := io.Pipe()
			go func() { pw.CloseWithError(nar.Dump(pw, p.String())) }()
			errs[i] = bw.AddNAR(ctx, p, pr, meta)
			pr.CloseWithError(errors.New("stop"))
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if err := bw.AddFile(bundle.RegistryName, f.registry); err != nil {
		t.Fatal(err)
	}
	top, _ := f.n.StoreDir.Parse(f.out)
	err := bw.Close(ctx, bundle.ManifestHeader{
		Tool: "nix-airgap test", Mode: role.ModeSources,
		Targets: []bundle.Target{{Spec: "toplevel", Outputs: map[string]storepath.Path{"out": top}}},
		Bases:   bases,
	})
	if err != nil {
		t.Fatal(err)
	}
}

// gc empties the store of everything the tests put in.
func (f *fixture) gc(t *testing.T) {
	t.Helper()
	f.n.Run(t, "nix-collect-garbage")
	if _, err := os.Stat(f.out); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after GC, %s: %v; want it gone", f.out, err)
	}
}

// copyFrom runs stock nix copy from a file:// cache trusting the bundle
// key, and checks that the toplevel works.
func (f *fixture) copyFrom(t *testing.T, dir string) {
	t.Helper()
	args := []string{"copy", "--option", "trusted-public-keys", f.pk.String(), "--from", "file://" + dir, f.out}
	for p := range f.flat {
		args = append(args, p.String())
	}
	f.n.Run(t, "nix", args...)
	out, err := exec.Command(filepath.Join(f.out, "bin/hello")).Output()
	if err != nil {
		t.Fatalf("bin/hello after nix copy: %v", err)
	}
	if got, want := string(out), f.w.Greeting("", ""); got != want {
		t.Errorf("bin/hello printed %q, want %q", got, want)
	}
	f.n.Run(t, "nix-store", "--verify-path", f.out)
}

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy")
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	return dst
}

// tarDir writes a bundle directory as a tar stream in the §4 order.
func tarDir(t *testing.T, dir string) string {
	t.Helper()
	var names, narinfos []string
	filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case strings.HasSuffix(rel, ".narinfo"):
			narinfos = append(narinfos, rel)
		case rel == bundle.CacheInfo, rel == bundle.ManifestName, rel == bundle.SigName:
		default:
			names = append(names, rel)
		}
		return nil
	})
	order := []string{bundle.CacheInfo}
	order = append(order, names...)
	order = append(order, narinfos...)
	order = append(order, bundle.ManifestName, bundle.SigName)
	out := filepath.Join(t.TempDir(), "b.tar")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	for _, name := range order {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		tw.WriteHeader(&tar.Header{Name: name, Size: int64(len(data)), Mode: 0o644, Typeflag: tar.TypeReg})
		tw.Write(data)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return out
}

func TestBundleWithNix(t *testing.T) {
	nixtest.Require(t)
	f := newFixture(t)
	ctx := t.Context()
	vopts := bundle.VerifyOptions{Keys: f.keyring}

	t.Run("verify", func(t *testing.T) {
		tarData, err := os.ReadFile(f.tarFile)
		if err != nil {
			t.Fatal(err)
		}
		for _, src := range []string{f.dir, f.tarFile, "-"} {
			opts := vopts
			opts.Stdin = bytes.NewReader(tarData)
			rep, err := bundle.Verify(ctx, src, opts)
			if err != nil {
				t.Fatalf("Verify %s: %v", src, err)
			}
			if rep.Paths != len(f.paths) || rep.Signer != "bundle-test-1" || len(rep.Warnings) > 0 {
				t.Errorf("Verify %s: %d paths (want %d), signer %q, warnings %q", src, rep.Paths, len(f.paths), rep.Signer, rep.Warnings)
			}
			// The flat hashes are the FODs' declared hashes.
			nflat := 0
			for _, e := range rep.Manifest.Paths {
				want, ok := f.flat[e.Path]
				if ok != (e.Flat != nil) {
					t.Errorf("%s: flat %v, want %v", e.Path, e.Flat != nil, ok)
				}
				if ok {
					nflat++
					if !bytes.Equal(e.Flat.SHA256, want) {
						t.Errorf("%s: flat sha256 %x, want %x", e.Path, e.Flat.SHA256, want)
					}
				}
			}
			if nflat == 0 {
				t.Error("no flat FOD in the world")
			}
		}
		// Both forms hold the same manifest.
		a, _ := os.ReadFile(filepath.Join(f.dir, bundle.ManifestName))
		rep, _ := bundle.Verify(ctx, f.tarFile, vopts)
		if rep.ID.String() == bundle.ID(a).String() && !bytes.Equal(a, mustManifestFromTar(t, f.tarFile)) {
			t.Error("ID equal but manifests differ")
		}
	})

	t.Run("nix copy from the bundle", func(t *testing.T) {
		f.gc(t)
		f.copyFrom(t, f.dir)
	})

	cacheDir := filepath.Join(t.TempDir(), "cache")
	t.Run("import, then nix copy from the cache", func(t *testing.T) {
		rep, err := bundle.Import(ctx, f.dir, cacheDir, bundle.ImportOptions{Keys: f.keyring})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Added != len(f.paths) || rep.Skipped != 0 || !rep.Recorded {
			t.Errorf("import: %+v", rep)
		}
		if _, err := os.Stat(filepath.Join(cacheDir, bundle.RecordDir, bundle.RecordName(rep.ID))); err != nil {
			t.Errorf("no record: %v", err)
		}
		reg, err := os.ReadFile(filepath.Join(cacheDir, bundle.RegistryName))
		if err != nil || !bytes.Contains(reg, []byte(f.out)) {
			t.Errorf("registry after import: %s, %v", reg, err)
		}
		checkCache(t, cacheDir)
		f.gc(t)
		f.copyFrom(t, cacheDir)
	})

	t.Run("import again changes nothing", func(t *testing.T) {
		before := nixtest.TreeHash(t, cacheDir)
		// The same bundle, as a directory and as a tar.
		for _, src := range []string{f.dir, tarDir(t, f.dir)} {
			rep, err := bundle.Import(ctx, src, cacheDir, bundle.ImportOptions{Keys: f.keyring})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Added != 0 || rep.Skipped != len(f.paths) || rep.Recorded {
				t.Errorf("re-import of %s: %+v", src, rep)
			}
			if after := nixtest.TreeHash(t, cacheDir); after != before {
				t.Errorf("re-import of %s changed the cache", src)
			}
		}
	})

	t.Run("verify the cache", func(t *testing.T) {
		rep, err := bundle.Verify(ctx, cacheDir, vopts)
		if err != nil || rep.Paths != len(f.paths) || rep.Signer != "bundle-test-1" {
			t.Fatalf("Verify cache = %v, %d paths, signer %q", err, rep.Paths, rep.Signer)
		}
		bad := copyDir(t, cacheDir)
		nar0 := firstFile(t, bad, "nar/*.nar.zst")
		flipByte(t, filepath.Join(bad, nar0), func(n int) int { return n / 2 })
		_, err = bundle.Verify(ctx, bad, vopts)
		if !errors.Is(err, bundle.ErrCorrupt) || !strings.Contains(err.Error(), nar0) {
			t.Errorf("Verify of a cache with a bad NAR = %v, want ErrCorrupt naming %s", err, nar0)
		}
	})

	t.Run("import a tar stream", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "cache")
		data, _ := os.ReadFile(f.tarFile)
		if _, err := bundle.Import(ctx, "-", dir, bundle.ImportOptions{Keys: f.keyring, Stdin: bytes.NewReader(data)}); err != nil {
			t.Fatal(err)
		}
		checkCache(t, dir)
		if a, b := listNarInfos(t, dir), listNarInfos(t, cacheDir); !slices.Equal(a, b) {
			t.Errorf("tar import has narinfos %q, dir import %q", a, b)
		}
	})

	t.Run("bad bundles", func(t *testing.T) { testBadBundles(t, f) })
	t.Run("delta", func(t *testing.T) { testDelta(t, f) })
	t.Run("crash", func(t *testing.T) { testCrash(t, f) })
}

func mustManifestFromTar(t *testing.T, tarFile string) []byte {
	fh, tr := openTarEntry(t, tarFile, bundle.ManifestName)
	defer fh.Close()
	b, _ := io.ReadAll(tr)
	return b
}

// openTarEntry opens the tar file at the data of its entry name, which
// the reader reads.
func openTarEntry(t *testing.T, tarFile, name string) (*os.File, *tar.Reader) {
	t.Helper()
	fh, err := os.Open(tarFile)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(fh)
	for {
		hdr, err := tr.Next()
		if err != nil {
			fh.Close()
			t.Fatalf("%s: no %s: %v", tarFile, name, err)
		}
		if hdr.Name == name {
			return fh, tr
		}
	}
}

func listNarInfos(t *testing.T, dir string) []string {
	m, _ := filepath.Glob(filepath.Join(dir, "*.narinfo"))
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	return m
}

// checkCache checks that every narinfo's NAR is present and correct.
func checkCache(t *testing.T, dir string) int {
	t.Helper()
	d, err := cache.OpenDir(dir)
	if err != nil {
		if errors.Is(err, cache.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			return 0 // no nix-cache-info yet: nothing published
		}
		t.Fatal(err)
	}
	defer d.Close()
	n := 0
	for ni, err := range d.NarInfos(t.Context()) {
		if err != nil {
			t.Errorf("cache %s: %v", dir, err)
			continue
		}
		r, err := d.Open(context.Background(), ni.URL)
		if err != nil {
			t.Errorf("cache %s: narinfo %s without its NAR: %v", dir, ni.StorePath, err)
			continue
		}
		if err := cache.CheckNAR(r, ni); err != nil {
			t.Errorf("cache %s: %v", dir, err)
		}
		r.Close()
		n++
	}
	return n
}

func firstFile(t *testing.T, dir, glob string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, glob))
	if err != nil || len(m) == 0 {
		t.Fatalf("no %s in %s", glob, dir)
	}
	slices.Sort(m)
	rel, _ := filepath.Rel(dir, m[0])
	return rel
}

func flipByte(t *testing.T, name string, at func(size int) int) {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	data[at(len(data))] ^= 0x20
	if err := os.WriteFile(name, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func testBadBundles(t *testing.T, f *fixture) {
	ctx := t.Context()
	nar0 := firstFile(t, f.dir, "nar/*.nar.zst")
	narinfo0 := firstFile(t, f.dir, "*.narinfo")
	_, otherPK, _ := signing.Generate("bundle-test-1")
	otherSK, _, _ := signing.Generate("intruder-1")
	middle := func(n int) int { return n / 2 }
	tests := []struct {
		name   string
		mutate func(t *testing.T, dir string)
		keys   *signing.Keyring
		want   error
		files  []string // named in the error
	}{
		{"flipped byte in a NAR", func(t *testing.T, dir string) { flipByte(t, filepath.Join(dir, nar0), middle) }, nil, bundle.ErrCorrupt, []string{nar0}},
		{"flipped bytes in two NARs", func(t *testing.T, dir string) {
			m, _ := filepath.Glob(filepath.Join(dir, "nar/*"))
			slices.Sort(m)
			flipByte(t, m[0], middle)
			flipByte(t, m[len(m)-1], func(int) int { return 0 })
		}, nil, bundle.ErrCorrupt, nil},
		{"flipped byte in a narinfo", func(t *testing.T, dir string) {
			data, _ := os.ReadFile(filepath.Join(dir, narinfo0))
			i := bytes.Index(data, []byte("NarSize: ")) + len("NarSize: ")
			data[i] ^= 0x01 // another digit
			os.WriteFile(filepath.Join(dir, narinfo0), data, 0o644)
		}, nil, bundle.ErrCorrupt, []string{narinfo0}},
		{"flipped byte in the manifest", func(t *testing.T, dir string) {
			flipByte(t, filepath.Join(dir, bundle.ManifestName), func(n int) int { return bytes.Index(mustRead(t, dir, bundle.ManifestName), []byte(`"tool"`)) + 2 })
		}, nil, bundle.ErrUntrusted, []string{bundle.SigName}},
		{"truncated NAR", func(t *testing.T, dir string) {
			p := filepath.Join(dir, nar0)
			fi, _ := os.Stat(p)
			os.Truncate(p, fi.Size()/2)
		}, nil, bundle.ErrCorrupt, []string{nar0}},
		{"missing NAR", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, nar0)) }, nil, bundle.ErrMissing, []string{nar0}},
		{"missing narinfo", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, narinfo0)) }, nil, bundle.ErrMissing, []string{narinfo0}},
		{"missing registry", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, bundle.RegistryName)) }, nil, bundle.ErrMissing, []string{bundle.RegistryName}},
		{"extra file", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "nar", "evil.nar"), []byte("x"), 0o644)
		}, nil, bundle.ErrUnexpected, []string{"nar/evil.nar"}},
		{"signed by the wrong key", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, bundle.SigName), bundle.Sign(mustRead(t, dir, bundle.ManifestName), otherSK), 0o644)
		}, nil, bundle.ErrUntrusted, []string{bundle.SigName, "intruder-1"}},
		{"a same-named untrusted key", func(t *testing.T, dir string) {}, signing.NewKeyring(otherPK), bundle.ErrUntrusted, []string{bundle.SigName}},
		{"unsigned", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, bundle.SigName)) }, nil, bundle.ErrUnsigned, []string{bundle.ManifestName}},
	}
	// A cache that has something already, to check it stays as it was.
	base := filepath.Join(t.TempDir(), "cache")
	d, err := cache.CreateDir(base, f.n.StoreDir, 40)
	if err != nil {
		t.Fatal(err)
	}
	d.WriteFile(t.Context(), bundle.RegistryName, []byte(`{"version":2,"flakes":[]}`+"\n"))
	d.Close()
	before := nixtest.TreeHash(t, base)

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyDir(t, f.dir)
			tt.mutate(t, dir)
			keys := tt.keys
			if keys == nil {
				keys = f.keyring
			}
			for _, src := range []string{dir, tarDir(t, dir)} {
				form := "dir"
				if src != dir {
					form = "tar"
				}
				rep, err := bundle.Verify(ctx, src, bundle.VerifyOptions{Keys: keys})
				if !errors.Is(err, tt.want) {
					t.Fatalf("%s: Verify = %v, want %v", form, err, tt.want)
				}
				var ve *bundle.VerifyError
				if !errors.As(err, &ve) || rep == nil || len(rep.Problems) == 0 {
					t.Fatalf("%s: Verify error %T, report %v", form, err, rep)
				}
				for _, name := range tt.files {
					if !strings.Contains(err.Error(), name) {
						t.Errorf("%s: error does not name %s:\n%v", form, name, err)
					}
				}
				if tt.name == "flipped bytes in two NARs" && len(rep.Problems) < 2 {
					t.Errorf("%s: %d problems, want both NARs named: %v", form, len(rep.Problems), err)
				}
				_, err = bundle.Import(ctx, src, base, bundle.ImportOptions{Keys: keys})
				if !errors.Is(err, tt.want) {
					t.Errorf("%s: Import = %v, want %v", form, err, tt.want)
				}
				if after := nixtest.TreeHash(t, base); after != before {
					t.Errorf("%s: refused import changed the cache", form)
				}
			}
		})
	}

	t.Run("tar cut short", func(t *testing.T) {
		data, _ := os.ReadFile(f.tarFile)
		for _, cut := range []int{len(data) / 3, len(data) - 2000, 700} {
			_, err := bundle.Verify(ctx, "-", bundle.VerifyOptions{Keys: f.keyring, Stdin: bytes.NewReader(data[:cut])})
			if !strings.Contains(err.Error(), "cut short") || !(errors.Is(err, bundle.ErrCorrupt) || errors.Is(err, bundle.ErrMissing)) {
				t.Errorf("cut at %d: Verify = %v, want a stream cut short", cut, err)
			}
			_, err = bundle.Import(ctx, "-", base, bundle.ImportOptions{Keys: f.keyring, Stdin: bytes.NewReader(data[:cut])})
			if err == nil {
				t.Errorf("cut at %d: Import succeeded", cut)
			}
			if after := nixtest.TreeHash(t, base); after != before {
				t.Errorf("cut at %d: refused import changed the cache", cut)
			}
		}
	})

	t.Run("unsigned allowed", func(t *testing.T) {
		dir := copyDir(t, f.dir)
		os.Remove(filepath.Join(dir, bundle.SigName))
		rep, err := bundle.Verify(ctx, dir, bundle.VerifyOptions{AllowUnsigned: true})
		if err != nil || len(rep.Warnings) == 0 || rep.Signer != "" {
			t.Errorf("Verify with AllowUnsigned = %v, warnings %q", err, rep.Warnings)
		}
	})
}

func mustRead(t *testing.T, dir, name string) []byte {
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func testDelta(t *testing.T, f *fixture) {
	ctx := t.Context()
	baseData := mustRead(t, f.dir, bundle.ManifestName)
	baseID := bundle.ID(baseData)
	delta := f.delta

	// Alone, its outside references cannot be checked: a warning.
	rep, err := bundle.Verify(ctx, delta, bundle.VerifyOptions{Keys: f.keyring})
	if err != nil || len(rep.Warnings) == 0 {
		t.Errorf("Verify delta = %v, warnings %q; want OK with a warning", err, rep.Warnings)
	}
	cacheDir := filepath.Join(t.TempDir(), "cache")
	if _, err := cache.CreateDir(cacheDir, f.n.StoreDir, 40); err != nil {
		t.Fatal(err)
	}
	before := nixtest.TreeHash(t, cacheDir)
	_, err = bundle.Import(ctx, delta, cacheDir, bundle.ImportOptions{Keys: f.keyring})
	if !errors.Is(err, bundle.ErrMissing) || !strings.Contains(err.Error(), baseID.String()) {
		t.Errorf("Import delta without base = %v, want ErrMissing naming %s", err, baseID)
	}
	if nixtest.TreeHash(t, cacheDir) != before {
		t.Error("refused delta changed the cache")
	}
	if _, err := bundle.Import(ctx, f.dir, cacheDir, bundle.ImportOptions{Keys: f.keyring}); err != nil {
		t.Fatal(err)
	}
	irep, err := bundle.Import(ctx, delta, cacheDir, bundle.ImportOptions{Keys: f.keyring})
	if err != nil {
		t.Fatalf("Import delta after base: %v", err)
	}
	if irep.Skipped != 1 || len(irep.Verify.Warnings) != 0 {
		t.Errorf("delta import: %+v, warnings %q", irep, irep.Verify.Warnings)
	}
}

// TestImportChild is the child process of testCrash: it imports
// $NIX_AIRGAP_CHILD_SRC into $NIX_AIRGAP_CHILD_CACHE.
func TestImportChild(t *testing.T) {
	src := os.Getenv("NIX_AIRGAP_CHILD_SRC")
	if src == "" {
		t.Skip("only run by testCrash")
	}
	pk, err := signing.ParsePublicKey(os.Getenv("NIX_AIRGAP_CHILD_KEY"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bundle.Import(context.Background(), src, os.Getenv("NIX_AIRGAP_CHILD_CACHE"), bundle.ImportOptions{Keys: signing.NewKeyring(pk), Jobs: 2}); err != nil {
		t.Fatal(err)
	}
}

func testCrash(t *testing.T, f *fixture) {
	rounds := 10
	if s := os.Getenv("NIX_AIRGAP_CRASH_ROUNDS"); s != "" {
		rounds, _ = strconv.Atoi(s)
	}
	for _, src := range []string{f.dir, f.tarFile} {
		cacheDir := filepath.Join(t.TempDir(), "cache")
		child := func(cacheDir string) *exec.Cmd {
			cmd := exec.Command(os.Args[0], "-test.run=^TestImportChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), "NIX_AIRGAP_CHILD_SRC="+src, "NIX_AIRGAP_CHILD_CACHE="+cacheDir, "NIX_AIRGAP_CHILD_KEY="+f.pk.String())
			return cmd
		}
		// How long a whole child import takes, to kill within it.
		probe := filepath.Join(t.TempDir(), "probe")
		start := time.Now()
		if out, err := child(probe).CombinedOutput(); err != nil {
			t.Fatalf("child import: %v\n%s", err, out)
		}
		full := time.Since(start)
		killed, partial := 0, 0
		for range rounds {
			cmd := child(cacheDir)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Most of a run is start-up and verification; aim at the
			// second half, where files move in.
			time.Sleep(full/3 + time.Duration(rand.Int64N(int64(full*2/3))))
			if cmd.Process.Signal(syscall.SIGKILL) == nil {
				killed++
			}
			cmd.Wait()
			if n := checkCache(t, cacheDir); n > 0 && n < len(f.paths) {
				partial++
			}
		}
		out, err := child(cacheDir).CombinedOutput()
		if err != nil {
			t.Fatalf("final import after %d kills: %v\n%s", killed, err, out)
		}
		if n := checkCache(t, cacheDir); n != len(f.paths) {
			t.Errorf("%s: after %d kills and a final import, the cache has %d narinfos, want %d", src, killed, n, len(f.paths))
		}
		if nixtest.TreeHash(t, filepath.Join(cacheDir, "nar")) != nixtest.TreeHash(t, filepath.Join(probe, "nar")) {
			t.Errorf("%s: NAR files differ from an uninterrupted import", src)
		}
		stale, _ := filepath.Glob(filepath.Join(cacheDir, ".staging-*"))
		if len(stale) != 0 {
			t.Errorf("staging left after the final import: %q", stale)
		}
		t.Logf("%s: %d rounds, %d kills within %s, %d leaving a partial import", filepath.Base(src), rounds, killed, full, partial)
	}
}
