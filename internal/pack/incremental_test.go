package pack_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache/cachetest"
	"github.com/nix-airgap/nix-airgap/internal/pack"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
)

// TestSince packs a base, then a variant of the toplevel since the base:
// the delta holds exactly the new toplevel and its .drv, names the base,
// and verifies against it.
func TestSince(t *testing.T) {
	f := newFixture(t)
	opts := plan.Options{Mode: role.ModeRuntime, Derivations: true}
	base := filepath.Join(t.TempDir(), "base")
	f.pack(t, f.targets(t), pack.Options{Options: opts, Out: base})

	args := f.w.Args("v2", "")
	top2 := f.w.OutPaths(t, args...)["toplevel"]
	drv2 := f.w.Instantiate(t, args...)
	delta := filepath.Join(t.TempDir(), "delta")
	res := f.pack(t, f.targets(t, args...), pack.Options{Options: opts, Out: delta, Since: []string{base}})
	if diff := cmp.Diff(sorted([]string{top2, drv2}), sorted(resultPaths(res))); diff != "" {
		t.Errorf("delta paths (-want +got):\n%s", diff)
	}
	if len(res.Built) != 1 || res.Built[0].String() != top2 {
		t.Errorf("built %v, want only %s (pack realises what the store lacks)", res.Built, top2)
	}
	if res.InBases == 0 {
		t.Errorf("InBases = 0, want the paths the base carries")
	}
	rep := f.verify(t, delta, base)
	// The size pack gives is every file verify reads: it gave the NAR
	// files alone, 53.2 KiB where verify checked 70.7 KiB.
	if res.BundleBytes != uint64(rep.Bytes) || res.BundleBytes <= res.FileBytes {
		t.Errorf("pack says the bundle has %d bytes (NAR files %d), verify read %d", res.BundleBytes, res.FileBytes, rep.Bytes)
	}
	baseManifest, err := os.ReadFile(filepath.Join(base, bundle.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	if bases := rep.Manifest.Bases; len(bases) != 1 || !bases[0].ID.Equal(bundle.ID(baseManifest)) {
		t.Errorf("delta bases = %+v, want the base's id %s", bases, bundle.ID(baseManifest))
	}
	// --since also takes the manifest file, and leaves out the same.
	res = f.pack(t, f.targets(t, args...), pack.Options{Options: opts, Out: filepath.Join(t.TempDir(), "d2"), Since: []string{filepath.Join(base, bundle.ManifestName)}})
	if len(res.Paths) != 2 {
		t.Errorf("since manifest.json: %d paths, want 2", len(res.Paths))
	}
}

// TestTar packs into a tar file and a tar stream: both verify, and the
// extracted tar is a binary cache stock nix copy reads.
func TestTar(t *testing.T) {
	f := newFixture(t)
	opts := plan.Options{Mode: role.ModeRuntime}
	tmp := t.TempDir()
	file := filepath.Join(tmp, "b.tar")
	res := f.pack(t, f.targets(t), pack.Options{Options: opts, Out: file})
	st, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(st.Size()) != res.BundleBytes {
		t.Errorf("BundleBytes = %d, the tar has %d", res.BundleBytes, st.Size())
	}
	// The id pack reports is the one verify finds, for a tar too.
	if rep := f.verify(t, file); res.ID.IsZero() || !res.ID.Equal(rep.ID) {
		t.Errorf("pack into a tar: id %s, verify says %s", res.ID, rep.ID)
	}

	stream, err := os.Create(filepath.Join(tmp, "stream.tar"))
	if err != nil {
		t.Fatal(err)
	}
	res = f.pack(t, f.targets(t), pack.Options{Options: opts, Out: "-", Stdout: stream})
	stream.Close()
	if rep := f.verify(t, stream.Name()); res.ID.IsZero() || !res.ID.Equal(rep.ID) {
		t.Errorf("pack into a tar stream: id %s, verify says %s", res.ID, rep.ID)
	}

	dir := filepath.Join(tmp, "extracted")
	untar(t, file, dir)
	f.verify(t, dir)
	dest := filepath.Join(tmp, "copy")
	f.n.Run(t, "nix", "copy", "--from", "file://"+dir, "--to", "file://"+dest,
		"--option", "trusted-public-keys", f.key.Public().String(), f.top)
	if _, err := os.Stat(filepath.Join(dest, hashPart(f.top)+".narinfo")); err != nil {
		t.Errorf("nix copy from the extracted bundle: %v", err)
	}
}

func untar(t *testing.T, file, dir string) {
	t.Helper()
	r, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		w, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(w, tr); err != nil {
			t.Fatal(err)
		}
		w.Close()
	}
}

// killedPack runs pack of the fixture's runtime closure and three big
// paths into out (the real binary, in a child process) and kills it once
// written says it wrote a path. It returns the big paths.
func killedPack(t *testing.T, f *fixture, out string, written func() bool) []string {
	t.Helper()
	tmp := t.TempDir()
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(tmp, "key.sec")
	if err := os.WriteFile(keyFile, []byte(f.key.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	// Incompressible paths, xz-compressed (slowly) one at a time, keep the
	// pack busy long after its first narinfo is published (a second after
	// its NAR is written: cache.Cache.GroupCommit).
	var big []string
	for i := range 3 {
		name := filepath.Join(tmp, "big"+string(rune('a'+i)))
		data := make([]byte, 4<<20)
		rand.Read(data)
		if err := os.WriteFile(name, data, 0o644); err != nil {
			t.Fatal(err)
		}
		big = append(big, f.n.Run(t, "nix-store", "--add", name))
	}
	args := append([]string{"pack", "--file", f.w.File, "--attr", "toplevel", "--mode", "runtime",
		"--out", out, "--key", keyFile, "--compression", "xz", "--jobs", "1"}, big...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(f.n.Env, asMain+"=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) && !written() {
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if !written() {
		t.Fatal("pack wrote no narinfo within a minute")
	}
	return big
}

// targetsWith is the fixture's targets and the store paths paths.
func targetsWith(t *testing.T, f *fixture, paths []string) []plan.TargetSpec {
	targets := f.targets(t)
	for _, p := range paths {
		ts, err := plan.ParseTargets(f.n.StoreDir, plan.Args{Installables: []string{p}})
		if err != nil {
			t.Fatal(err)
		}
		targets = append(targets, ts...)
	}
	return targets
}

func reusedCount(res *pack.Result) int {
	n := 0
	for _, p := range res.Paths {
		if p.Reused {
			n++
		}
	}
	return n
}

// TestResume kills a pack once it has written a path, checks that what it
// left does not look like a bundle, and packs again: the NAR files
// written before are reused, and the result verifies.
func TestResume(t *testing.T) {
	f := newFixture(t)
	out := filepath.Join(t.TempDir(), "bundle")
	var narinfos []string
	big := killedPack(t, f, out, func() bool {
		narinfos, _ = filepath.Glob(filepath.Join(out, "*.narinfo"))
		return len(narinfos) > 0
	})
	if _, err := os.Stat(filepath.Join(out, bundle.ManifestName)); err == nil {
		t.Fatal("the pack finished before it was killed: make the big paths bigger")
	}
	if _, err := bundle.Verify(t.Context(), out, bundle.VerifyOptions{}); err == nil {
		t.Fatal("a killed pack's directory verifies")
	}
	// The NAR files that published narinfos name must be kept; others
	// may be unsynced and are rewritten.
	inodes := map[string]uint64{}
	for _, n := range narinfos {
		text, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		_, rest, _ := strings.Cut(string(text), "\nURL: nar/")
		name, _, _ := strings.Cut(rest, "\n")
		st, err := os.Stat(filepath.Join(out, "nar", name))
		if err != nil {
			t.Fatalf("%s names a NAR file that is not there: %v", n, err)
		}
		inodes[name] = st.Sys().(*syscall.Stat_t).Ino
	}

	res := f.pack(t, targetsWith(t, f, big), pack.Options{Options: plan.Options{Mode: role.ModeRuntime}, Out: out, Compression: "xz"})
	reused := reusedCount(res)
	if reused < len(narinfos) {
		t.Errorf("reused %d paths, want at least the %d with narinfos before the kill", reused, len(narinfos))
	}
	rep := f.verify(t, out)
	if len(rep.Manifest.Paths) != len(f.w.RuntimeAttrs())+len(big) {
		t.Errorf("resumed bundle has %d paths, want %d", len(rep.Manifest.Paths), len(f.w.RuntimeAttrs())+len(big))
	}
	kept := 0
	for _, e := range rep.Manifest.Paths {
		name := strings.TrimPrefix(e.URL, "nar/")
		if ino, ok := inodes[name]; ok {
			st, err := os.Stat(filepath.Join(out, e.URL))
			if err != nil || st.Sys().(*syscall.Stat_t).Ino != ino {
				t.Errorf("%s was rewritten, want it reused", e.URL)
			}
			kept++
		}
	}
	if kept < len(narinfos) {
		t.Errorf("%d NAR files from before the kill are in the bundle, want at least %d", kept, len(narinfos))
	}
	t.Logf("killed after %d paths; resumed reusing %d", len(narinfos), reused)
}

// TestResumeTar kills a pack into a .tar once its tar holds a path, and
// packs again: the temp file it left is taken up, its start is kept byte
// for byte and its paths are reused, and the result verifies.
func TestResumeTar(t *testing.T) {
	f := newFixture(t)
	tmp := t.TempDir()
	out := filepath.Join(tmp, "b.tar")
	var left string
	var kept int64
	var narinfos int
	big := killedPack(t, f, out, func() bool {
		temps, _ := filepath.Glob(filepath.Join(tmp, ".b.tar.tmp-*"))
		if len(temps) == 1 {
			left = temps[0]
			kept, narinfos, _ = cachetest.TarNarInfos(left)
		}
		return narinfos > 0
	})
	if _, err := os.Stat(out); err == nil {
		t.Fatal("the pack finished before it was killed: make the big paths bigger")
	}
	_, killed, err := cachetest.TarNarInfos(left)
	if err != nil {
		t.Fatal(err)
	}

	// Interrupted as by Ctrl-C once it wrote a path of its own, a pack
	// keeps the tar too, for the next.
	targets := targetsWith(t, f, big)
	opts := pack.Options{Options: plan.Options{Mode: role.ModeRuntime}, Out: out, Compression: "xz", Key: &f.key}
	ctx, cancel := context.WithCancel(t.Context())
	f.packer.Progress = &cancelOnNew{cancel: cancel}
	_, err = f.packer.Pack(ctx, targets, opts)
	f.packer.Progress = nil
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted pack: %v, want context.Canceled", err)
	}
	before, err := os.ReadFile(left)
	if err != nil {
		t.Fatalf("the interrupted pack did not keep the tar: %v", err)
	}
	if kept, narinfos, err = cachetest.TarNarInfos(left); err != nil {
		t.Fatal(err)
	}
	if narinfos <= killed {
		t.Errorf("the interrupted pack's tar holds %d narinfos, want more than the killed one's %d", narinfos, killed)
	}

	res := f.pack(t, targets, opts)
	if reused := reusedCount(res); reused < narinfos {
		t.Errorf("reused %d paths, want at least the %d whose narinfos the killed pack's tar held", reused, narinfos)
	}
	after, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(after[:kept], before[:kept]) {
		t.Errorf("the first %d bytes, up to the killed pack's last narinfo, were rewritten", kept)
	}
	if res.BundleBytes != uint64(len(after)) {
		t.Errorf("summary says the bundle has %d bytes, the tar has %d", res.BundleBytes, len(after))
	}
	if temps, _ := filepath.Glob(filepath.Join(tmp, ".b.tar.tmp-*")); len(temps) > 0 {
		t.Errorf("temp files left: %v", temps)
	}
	keys := signing.NewKeyring(f.key.Public())
	rep, err := bundle.Verify(t.Context(), out, bundle.VerifyOptions{Keys: keys, Deep: true})
	if err != nil {
		t.Fatalf("verify --deep the resumed tar: %v", err)
	}
	if len(rep.Manifest.Paths) != len(f.w.RuntimeAttrs())+len(big) {
		t.Errorf("resumed bundle has %d paths, want %d", len(rep.Manifest.Paths), len(f.w.RuntimeAttrs())+len(big))
	}
	imp, err := bundle.Import(t.Context(), out, filepath.Join(tmp, "cache"), bundle.ImportOptions{Keys: keys})
	if err != nil {
		t.Fatalf("import the resumed tar: %v", err)
	}
	if imp.Added != len(rep.Manifest.Paths) {
		t.Errorf("import of the resumed tar added %d paths, want %d", imp.Added, len(rep.Manifest.Paths))
	}
	t.Logf("killed with %d narinfos, interrupted with %d in %d bytes of tar; resumed reusing %d", killed, narinfos, kept, reusedCount(res))
}

// cancelOnNew cancels a pack once it wrote a path it did not reuse.
type cancelOnNew struct {
	cancel context.CancelFunc
	copy   atomic.Bool
}

func (c *cancelOnNew) Phase(name string, _ int, _ int64) { c.copy.Store(name == pack.PhaseCopy) }

func (c *cancelOnNew) Step(path, source string, _ int64) {
	if c.copy.Load() && path != "" && source != pack.SourceReused {
		c.cancel()
	}
}
