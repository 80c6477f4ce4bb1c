package synctrace_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/channel"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/nardelta"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/sbom"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
	"github.com/nix-airgap/nix-airgap/internal/synctrace"
)

// requireProg returns the path of prog, a tool this machine needs for
// the test: without it the test skips, but fails in CI (CI set), where a
// missing tool is a broken install step (scripts/setup.sh installs
// strace), except in the chroots of the Nix matrix (NIX_MATRIX set),
// which have no strace and no Go, and whose Nix makes no difference to
// what is synced.
func requireProg(t *testing.T, prog string) string {
	t.Helper()
	p, err := exec.LookPath(prog)
	switch {
	case err == nil:
		return p
	case os.Getenv("NIX_MATRIX") != "":
		t.Skipf("skipping in the Nix matrix's chroot, which has no %s: this machine's Nix ran the test", prog)
	case os.Getenv("CI") != "":
		t.Fatalf("the sync-order test needs %s on PATH (CI is set, so this is an install failure: scripts/setup.sh installs it): %v", prog, err)
	default:
		t.Skipf("skipping the sync-order test: %s not on PATH (install it, or run scripts/setup.sh)", prog)
	}
	return ""
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.bin != "" {
		os.RemoveAll(filepath.Dir(built.bin))
	}
	os.Exit(code)
}

var built = struct {
	sync.Mutex
	bin string
}{}

// binary builds nix-airgap once per test process, as scripts/demo.sh
// does, and returns its path.
func binary(t *testing.T) string {
	t.Helper()
	goTool := requireProg(t, "go")
	built.Lock()
	defer built.Unlock()
	if built.bin != "" {
		return built.bin
	}
	dir, err := os.MkdirTemp("", "synctrace-bin-")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "nix-airgap")
	cmd := exec.Command(goTool, "build", "-trimpath", "-o", bin, "github.com/nix-airgap/nix-airgap/cmd/nix-airgap")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build nix-airgap: %v\n%s", err, out)
	}
	built.bin = bin
	return bin
}

// tracer runs nix-airgap under strace and checks each run's trace.
type tracer struct {
	strace, bin string
	env         []string // nil: the test's
	mounts      []string
}

func newTracer(t *testing.T) *tracer {
	t.Helper()
	strace := requireProg(t, "strace")
	return &tracer{strace: strace, bin: binary(t), mounts: mountPoints(t)}
}

// run is one traced command and what it publishes into (Rules').
type run struct {
	name     string
	args     []string
	root     string
	record   func(path string) bool
	unsynced func(path string) bool
	scratch  func(path string) bool
	// breaks are rules the run's trace less every sync must break: the
	// events they check are in it.
	breaks []string
}

// check runs r under strace, requiring exit 0, and checks its trace
// with synctrace.Check; the narinfos of r.root before and after the run
// say which NAR file each names.
func (tr *tracer) check(t *testing.T, r run) {
	t.Helper()
	nars := narinfos(t, r.root)
	// go test -artifacts keeps the traces.
	trace := filepath.Join(t.ArtifactDir(), strings.ReplaceAll(r.name, " ", "-")+".strace")
	args := append(append(append([]string{}, synctrace.StraceArgs...), "-o", trace, "--", tr.bin), r.args...)
	cmd := exec.CommandContext(t.Context(), tr.strace, args...)
	cmd.Env = tr.env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: strace nix-airgap %s: %v\n%s", r.name, strings.Join(r.args, " "), err, out)
	}
	maps.Copy(nars, narinfos(t, r.root))
	f, err := os.Open(trace)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	events, err := synctrace.Parse(f)
	if err != nil {
		t.Fatalf("%s: %v", r.name, err)
	}
	rules := synctrace.Rules{Root: r.root, NARs: nars, Record: r.record, Unsynced: r.unsynced, Scratch: r.scratch, Mounts: tr.mounts}
	vs := synctrace.Check(events, rules)
	if len(vs) > 0 {
		t.Errorf("%s: nix-airgap %s: %d moments a power cut would break the order (go test -artifacts keeps the trace), the first:\n%s",
			r.name, strings.Join(r.args, " "), len(vs), vs[0])
		for _, v := range vs[1:] {
			t.Logf("and: %s", v)
		}
	}
	// The same run with no sync at all must break the rules: else they
	// check nothing here.
	var unsynced []synctrace.Event
	for _, e := range events {
		if !e.Kind.Syncs() {
			unsynced = append(unsynced, e)
		}
	}
	broken := map[string]bool{}
	for _, v := range synctrace.Check(unsynced, rules) {
		broken[v.Rule] = true
	}
	if len(broken) == 0 {
		t.Errorf("%s: its trace less every sync breaks no rule either: the check checks nothing here", r.name)
	}
	for _, rule := range r.breaks {
		if !broken[rule] {
			t.Errorf("%s: its trace less every sync does not break %q: the check does not see what it is for", r.name, rule)
		}
	}
}

// narinfos maps each narinfo in dir to the NAR file its URL names.
func narinfos(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	files, _ := filepath.Glob(filepath.Join(dir, "*.narinfo"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(string(data)) {
			if url, ok := strings.CutPrefix(strings.TrimSpace(line), "URL: "); ok {
				m[f] = filepath.Join(dir, filepath.FromSlash(url))
			}
		}
	}
	return m
}

// mountEscapes undoes the octal escapes of /proc/self/mountinfo.
var mountEscapes = strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)

// mountPoints lists this process's mount points, for syncfs.
func mountPoints(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 {
			mounts = append(mounts, mountEscapes.Replace(fields[4]))
		}
	}
	return mounts
}

// realDir makes dir's path what the kernel says it is, as strace -y
// does: t.TempDir may sit under a symlink.
func realDir(t *testing.T, dir string) string {
	t.Helper()
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	return real
}

// isRecord tells the files of a cache whose appearance vouches for
// everything an import did before: a bundle's record, a volume set's
// volumes.json, a channel's record (its tarball), and the flake registry
// (the paths it locks).
func isRecord(cache string) func(string) bool {
	return func(p string) bool {
		return strings.HasPrefix(p, filepath.Join(cache, bundle.RecordDir)+"/") || filepath.Base(p) == "volumes.json" ||
			strings.HasPrefix(p, filepath.Join(cache, "nix-airgap", "channels")+"/") || p == filepath.Join(cache, bundle.RegistryName)
	}
}

// narOf returns the NAR of a regular file holding content.
func narOf(t *testing.T, content []byte) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	nw := nar.NewWriter(&buf)
	if err := nw.WriteHeader(&nar.Header{Path: "/", Type: nar.TypeRegular, Size: int64(len(content))}); err != nil {
		t.Fatal(err)
	}
	nw.Write(content)
	if err := nw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf
}

// writeBundle writes a signed directory bundle of n paths named
// PREFIX-i, each referring to refs, and what add adds, and returns it and
// its paths; the hash parts of paths of different prefixes differ in
// their first letter.
func writeBundle(t *testing.T, sk signing.SecretKey, prefix string, n int, refs []storepath.Path, add ...func(*bundle.Writer, []storepath.Path)) (string, []storepath.Path) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), prefix)
	w, err := bundle.NewDirWriter(dir, storepath.DefaultDir, bundle.WriterOptions{Key: &sk})
	if err != nil {
		t.Fatal(err)
	}
	var paths []storepath.Path
	for i := range n {
		p, err := storepath.DefaultDir.Base(fmt.Sprintf("%c%031d-%s-%d", prefix[0], i, prefix, i))
		if err != nil {
			t.Fatal(err)
		}
		content := bytes.Repeat(fmt.Appendf(nil, "%s %d\n", prefix, i), 200)
		if err := w.AddNAR(t.Context(), p, narOf(t, content), bundle.PathMeta{Roles: role.Runtime, References: refs}); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	for _, f := range add {
		f(w, paths)
	}
	if err := w.Close(t.Context(), bundle.ManifestHeader{Tool: "synctrace-test", Mode: role.ModeRuntime}); err != nil {
		t.Fatal(err)
	}
	return dir, paths
}

// withChannel adds to a bundle a nixpkgs channel whose default.nix is
// expr, and a flake registry that locks the id to the bundle's first path.
func withChannel(t *testing.T, expr, id string) func(*bundle.Writer, []storepath.Path) {
	return func(w *bundle.Writer, paths []storepath.Path) {
		src := t.TempDir()
		if err := os.WriteFile(filepath.Join(src, "default.nix"), []byte(expr), 0o644); err != nil {
			t.Fatal(err)
		}
		var tarball bytes.Buffer
		if err := channel.FromDir(t.Context(), &tarball, src, "nixpkgs", compression.WriterOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := w.AddChannel("nixpkgs", src, &tarball); err != nil {
			t.Fatal(err)
		}
		reg := `{"version":2,"flakes":[{"from":{"type":"indirect","id":"` + id + `"},"to":{"type":"path","path":"` + paths[0].String() + `"}}]}` + "\n"
		if err := w.AddFile(bundle.RegistryName, []byte(reg)); err != nil {
			t.Fatal(err)
		}
	}
}

// writeDeltaBundles writes a signed bundle of one path, and one of its
// next version as a binary delta against it, and returns both.
func writeDeltaBundles(t *testing.T, sk signing.SecretKey) (base, delta string) {
	t.Helper()
	mkPath := func(i int, name string) storepath.Path {
		p, err := storepath.DefaultDir.Base(fmt.Sprintf("d%031d-%s", i, name))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	old, next := mkPath(0, "lib-1.0"), mkPath(1, "lib-1.1")
	// Random bytes, which compress badly, so that the delta wins.
	blob := make([]byte, 256<<10)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range blob {
		blob[i] = byte(rng.Uint32())
	}
	mk := func(self storepath.Path, extra string) []byte {
		return narOf(t, append([]byte(self.String()+"\n"+extra), blob...)).Bytes()
	}
	oldNAR, nextNAR := mk(old, ""), mk(next, "version 1.1\n")
	base = filepath.Join(t.TempDir(), "base")
	bw, err := bundle.NewDirWriter(base, storepath.DefaultDir, bundle.WriterOptions{Key: &sk})
	if err != nil {
		t.Fatal(err)
	}
	if err := bw.AddNAR(t.Context(), old, bytes.NewReader(oldNAR), bundle.PathMeta{Roles: role.Runtime}); err != nil {
		t.Fatal(err)
	}
	if err := bw.Close(t.Context(), bundle.ManifestHeader{Tool: "synctrace-test", Mode: role.ModeRuntime}); err != nil {
		t.Fatal(err)
	}
	delta = filepath.Join(t.TempDir(), "delta")
	dw, err := bundle.NewDirWriter(delta, storepath.DefaultDir, bundle.WriterOptions{Key: &sk})
	if err != nil {
		t.Fatal(err)
	}
	spool, err := os.CreateTemp(t.TempDir(), "base")
	if err != nil {
		t.Fatal(err)
	}
	defer spool.Close()
	b, err := nardelta.NewBase(spool, bytes.NewReader(oldNAR), []nardelta.Rewrite{{Old: old.Hash, New: next.Hash}})
	if err != nil {
		t.Fatal(err)
	}
	hw := nar.NewHashWriter(io.Discard)
	hw.Write(nextNAR)
	meta := bundle.PathMeta{Roles: role.Runtime, NarHash: hw.Sum(), NarSize: uint64(len(nextNAR))}
	open := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(nextNAR)), nil }
	res, err := dw.AddNARDelta(t.Context(), next, open, meta, bundle.DeltaBase{Path: old, Base: b})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Delta {
		t.Fatalf("AddNARDelta = %+v: want the path as a delta", res)
	}
	if err := dw.Close(t.Context(), bundle.ManifestHeader{Tool: "synctrace-test", Mode: role.ModeRuntime}); err != nil {
		t.Fatal(err)
	}
	return base, delta
}

// writeVolumes writes a signed volume set of n paths, each referring to
// the one before, in volumes of size bytes, and returns the volumes.
func writeVolumes(t *testing.T, sk signing.SecretKey, n int, size int64) []string {
	t.Helper()
	w, err := bundle.NewVolumeWriter(filepath.Join(t.TempDir(), "set.tar"), size, storepath.DefaultDir, bundle.WriterOptions{Key: &sk, Compression: "none"})
	if err != nil {
		t.Fatal(err)
	}
	var prev []storepath.Path
	for i := range n {
		p, err := storepath.DefaultDir.Base(fmt.Sprintf("%032d-v%d", i, i))
		if err != nil {
			t.Fatal(err)
		}
		content := bytes.Repeat(fmt.Appendf(nil, "volume path %d\n", i), 100+i*400)
		if err := w.AddNAR(t.Context(), p, narOf(t, content), bundle.PathMeta{Roles: role.Runtime, References: prev}); err != nil {
			t.Fatal(err)
		}
		prev = []storepath.Path{p}
	}
	if err := w.Close(t.Context(), bundle.ManifestHeader{Tool: "synctrace-test", Mode: role.ModeRuntime}); err != nil {
		t.Fatal(err)
	}
	return w.Volumes()
}

// TestSyncOrder runs nix-airgap's commands that write a cache, keys or
// an inventory under strace (imports of plain bundles, of a binary delta,
// of channels and flake registries, of volumes one at a time; repair; gc)
// and checks, from the system calls, that a power cut at any moment would
// leave every file whole, every narinfo with its NAR file (a rebuilt one
// too), every record (a channel's, the flake registry) after what it
// covers, and that all of it was durable when the command exited.
func TestSyncOrder(t *testing.T) {
	tr := newTracer(t)
	tmp := realDir(t, t.TempDir())
	keys := filepath.Join(tmp, "keys")
	if err := os.Mkdir(keys, 0o700); err != nil {
		t.Fatal(err)
	}
	sec, pub := filepath.Join(keys, "site.sec"), filepath.Join(keys, "site.pub")
	// keygen links its files into place: the link is checked as a
	// rename is.
	tr.check(t, run{name: "keygen", args: []string{"keygen", "--name", "site-1", "--secret-key", sec, "--public-key", pub}, root: keys,
		breaks: []string{synctrace.RuleSyncBeforeRename, synctrace.RuleDurableAtExit}})
	data, err := os.ReadFile(sec)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := signing.ParseSecretKey(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}

	first, firstPaths := writeBundle(t, sk, "first", 6, nil)
	second, _ := writeBundle(t, sk, "second", 3, firstPaths[:2])
	cache := filepath.Join(tmp, "cache")
	imp := func(name string, extra ...string) run {
		return run{name: name, root: cache, record: isRecord(cache),
			args: append([]string{"import", "--cache", cache, "--public-key", pub, "--no-progress"}, extra...)}
	}
	tr.check(t, imp("import into a new cache", first))
	tr.check(t, imp("import of a bundle referring to the first", second))

	flipped := narinfos(t, cache)[filepath.Join(cache, firstPaths[3].Hash+".narinfo")]
	flipByte(t, flipped)
	tr.check(t, imp("import --repair of a flipped byte", first, "--repair"))
	if err := exec.Command(tr.bin, "verify", cache, "--public-key", pub).Run(); err != nil {
		t.Errorf("verify after the repair: %v", err)
	}

	base, delta := writeDeltaBundles(t, sk)
	tr.check(t, imp("import of a delta's base", base))
	deltaRun := imp("import of a binary delta", delta)
	deltaRun.breaks = []string{synctrace.RuleNARFirst, synctrace.RuleRecordLast}
	tr.check(t, deltaRun)
	if _, ok := narinfos(t, cache)[filepath.Join(cache, fmt.Sprintf("d%031d.narinfo", 1))]; !ok {
		t.Error("no narinfo of the path the delta brought: the trace shows no NAR rebuilt")
	}
	chan1, _ := writeBundle(t, sk, "channel", 1, nil, withChannel(t, "{ ... }: { v = 1; }\n", "one"))
	chan2, _ := writeBundle(t, sk, "newer", 1, nil, withChannel(t, "{ ... }: { v = 2; }\n", "two"))
	for _, r := range []run{imp("import of a channel and a flake registry", chan1), imp("import of a newer channel and another registry", chan2)} {
		r.breaks = []string{synctrace.RuleSyncBeforeRename, synctrace.RuleRecordLast}
		tr.check(t, r)
	}
	for _, f := range []string{filepath.Join(cache, "channels", "nixpkgs", "nixexprs.tar.xz"), filepath.Join(cache, "nix-airgap", "channels", "nixpkgs.json")} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("after the channel imports: %v", err)
		}
	}
	if reg, err := os.ReadFile(filepath.Join(cache, bundle.RegistryName)); err != nil || !bytes.Contains(reg, []byte(`"one"`)) || !bytes.Contains(reg, []byte(`"two"`)) {
		t.Errorf("the cache's flake registry %s (%v): want both bundles' ids merged", reg, err)
	}
	if out, err := exec.Command(tr.bin, "verify", cache, "--public-key", pub).CombinedOutput(); err != nil {
		t.Errorf("verify after the delta and channel imports: %v\n%s", err, out)
	}

	inv := filepath.Join(tmp, "inventory")
	if err := os.Mkdir(inv, 0o755); err != nil {
		t.Fatal(err)
	}
	inventory := run{name: "inventory", root: inv, args: []string{"inventory", "--cache", cache, "--out", filepath.Join(inv, "site.json")},
		breaks: []string{synctrace.RuleSyncBeforeRename, synctrace.RuleDurableAtExit}}
	tr.check(t, inventory)
	inventory.name = "inventory over an older one"
	tr.check(t, inventory)

	gc := run{name: "gc", root: cache, args: []string{"gc", "--cache", cache, "--keep-bundles", "1", "--grace", "0", "--no-progress"}}
	tr.check(t, gc)

	vols := writeVolumes(t, sk, 6, 32<<10)
	if len(vols) < 3 {
		t.Fatalf("volumes %q, want at least 3", vols)
	}
	volCache := filepath.Join(tmp, "volume-cache")
	for i, v := range vols {
		r := imp(fmt.Sprintf("import of volume %d of %d alone", i+1, len(vols)), v)
		r.root, r.record = volCache, isRecord(volCache)
		r.args[2] = volCache
		tr.check(t, r)
	}
}

// flipByte flips a byte in the middle of file.
func flipByte(t *testing.T, file string) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestPackSyncOrder traces pack writing a directory bundle, a tar and
// volume sets of real store paths, each with a channel and an SBOM: in a
// bundle a NAR file or a channel's tarball may go into place before its
// bytes are durable (a batch's one syncfs makes them so, and nothing
// trusts a NAR file no narinfo names, or a file no manifest names:
// docs/design.md, Durability), but a narinfo only after its NAR file, and
// manifest.json last; packed over, the older manifest goes durably
// before anything it vouched for changes; a tar or a volume is whole
// before its name appears.
func TestPackSyncOrder(t *testing.T) {
	tr := newTracer(t)
	n := nixtest.New(t, nixtest.Options{})
	tr.env = n.Env
	expr := `
let
  mk = i: builtins.toFile "synctrace-${toString i}" "${builtins.concatStringsSep "\n" (builtins.genList (j: builtins.hashString "sha512" "${toString i}-${toString j}") (50 * i + 1))}\n${if i > 0 then builtins.elemAt ps (i - 1) else ""}";
  ps = builtins.genList mk 8;
in builtins.elemAt ps `
	top := strings.Trim(n.Run(t, "nix-instantiate", "--eval", "--read-write-mode", "-E", expr+"7"), `"`)
	// The closure of the sixth: the first six paths.
	sixth := strings.Trim(n.Run(t, "nix-instantiate", "--eval", "--read-write-mode", "-E", expr+"5"), `"`)
	tmp := realDir(t, t.TempDir())
	sec, pub := filepath.Join(tmp, "site.sec"), filepath.Join(tmp, "site.pub")
	if out, err := exec.Command(tr.bin, "keygen", "--name", "site-1", "--secret-key", sec, "--public-key", pub).CombinedOutput(); err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	// A channel and an SBOM, files beside the paths, go in each form.
	nixpkgs := filepath.Join(tmp, "nixpkgs")
	if err := os.Mkdir(nixpkgs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(nixpkgs, "default.nix"), []byte("{ ... }: { }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pack := func(out string) []string {
		return []string{"pack", top, "--mode", "runtime", "--no-build", "--no-progress", "--key", sec, "--out", out, "--sbom", "--channel", "nixpkgs=" + nixpkgs}
	}
	dir := filepath.Join(tmp, "bundle")
	inDir := run{name: "pack into a directory", args: pack(dir), root: dir,
		record: func(p string) bool {
			return p == filepath.Join(dir, bundle.ManifestName) || p == filepath.Join(dir, bundle.SigName)
		},
		unsynced: func(p string) bool {
			return filepath.Dir(p) == filepath.Join(dir, "nar") || strings.HasPrefix(p, filepath.Join(dir, channel.Dir)+"/")
		}}
	tr.check(t, inDir)
	if got := len(narinfos(t, dir)); got != 8 {
		t.Errorf("the bundle has %d narinfos, want the 8 paths packed", got)
	}
	for _, f := range []string{sbom.FileName, channel.File("nixpkgs")} {
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(f))); err != nil {
			t.Errorf("pack --sbom --channel: %v", err)
		}
	}
	// Packed over, the same target, with fewer paths (--since a bundle
	// of the first six) and another channel: the older bundle's manifest
	// goes first, its stale narinfos before their NAR files.
	if err := os.WriteFile(filepath.Join(nixpkgs, "default.nix"), []byte("{ ... }: { v = 2; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(tmp, "sixth")
	cmd := exec.Command(tr.bin, "pack", sixth, "--mode", "runtime", "--no-build", "--no-progress", "--key", sec, "--out", base)
	cmd.Env = tr.env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pack: %v\n%s", err, out)
	}
	inDir.name = "pack over an older bundle in a directory"
	inDir.args = append(slices.Clone(inDir.args), "--since", base)
	tr.check(t, inDir)
	if got := len(narinfos(t, dir)); got != 2 {
		t.Errorf("the bundle packed over has %d narinfos, want the 2 paths packed", got)
	}
	out := filepath.Join(tmp, "tars")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	tr.check(t, run{name: "pack into a tar", args: pack(filepath.Join(out, "bundle.tar")), root: out})

	// A volume set, spooled beside it: each volume whole before its name
	// appears; and packed again in fewer volumes, the older set's volumes
	// after the new one's last durably gone.
	vols := filepath.Join(tmp, "volumes")
	if err := os.Mkdir(vols, 0o755); err != nil {
		t.Fatal(err)
	}
	set := filepath.Join(vols, "set.tar")
	spool := func(p string) bool { return strings.HasPrefix(filepath.Base(p), storage.SpoolPrefix) }
	broken := []string{synctrace.RuleSyncBeforeRename, synctrace.RuleDurableAtExit}
	tr.check(t, run{name: "pack into volumes", args: append(pack(set), "--volume-size", "48KiB"), root: vols, scratch: spool, breaks: broken})
	many, _ := filepath.Glob(filepath.Join(vols, "set.*.tar"))
	tr.check(t, run{name: "pack into fewer volumes over an older set", args: append(pack(set), "--volume-size", "96KiB"), root: vols, scratch: spool, breaks: broken})
	fewer, _ := filepath.Glob(filepath.Join(vols, "set.*.tar"))
	if len(many) < 2 || len(fewer) >= len(many) {
		t.Errorf("volumes %q, then %q: want more than one, then fewer, the older set's last removed", many, fewer)
	}
}
