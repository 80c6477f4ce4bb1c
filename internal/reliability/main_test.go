package reliability_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/cli"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storage/s3test"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// asMain makes the test binary act as nix-airgap itself; with peakRSS
// set too, it then writes its peak RSS to that file.
const (
	asMain  = "NIX_AIRGAP_RELIABILITY_AS_MAIN"
	peakRSS = "NIX_AIRGAP_RELIABILITY_PEAK_RSS"
)

func TestMain(m *testing.M) {
	if os.Getenv(asMain) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
		stop()
		if f := os.Getenv(peakRSS); f != "" {
			writePeakRSS(f)
		}
		os.Exit(cli.ExitCode(err))
	}
	os.Exit(s3test.Main(m))
}

// writePeakRSS writes the process's peak RSS (VmHWM, "N kB") to file.
// The parent's wait4 cannot tell it: Go starts a child with CLONE_VM, and
// the exec that follows leaves the parent's peak as the child's maxrss,
// while VmHWM counts only the memory of the program exec started.
func writePeakRSS(file string) {
	status, _ := os.ReadFile("/proc/self/status")
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			os.WriteFile(file, []byte(strings.TrimSpace(v)), 0o644)
		}
	}
}

func envInt(t testing.TB, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		t.Fatalf("$%s=%q: want a number", name, s)
	}
	return n
}

// site is a hermetic Nix with a generated set of real store paths, a
// signing key and the files the CLI wants.
type site struct {
	n              *nixtest.Nix
	paths          []storepath.Path // every generated path, the last referring to all
	top            storepath.Path
	sk             signing.SecretKey
	pk             signing.PublicKey
	skFile, pkFile string
}

// newSite makes a hermetic Nix with n generated store paths (addPaths
// "rel") and a signing key.
func newSite(t *testing.T, n, lines int) *site {
	t.Helper()
	s := newBareSite(t)
	s.paths = s.addPaths(t, "rel", n, lines)
	s.top = s.paths[len(s.paths)-1]
	return s
}

// newBareSite makes a hermetic Nix with nothing in its store, and a
// signing key.
func newBareSite(t *testing.T) *site {
	t.Helper()
	s := &site{n: nixtest.New(t, nixtest.Options{})}
	var err error
	if s.sk, s.pk, err = signing.Generate("reliability-1"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s.skFile, s.pkFile = filepath.Join(dir, "sk"), filepath.Join(dir, "pk")
	if err := os.WriteFile(s.skFile, []byte(s.sk.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.pkFile, []byte(s.pk.String()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// addPaths adds n store paths with builtins.toFile, named PREFIX-i: path i
// holds lines lines of 129 bytes of hex and refers to paths i-1 and i/2,
// so the last path's closure is all of them and the graph has depth and
// fan-in. Real store paths, content-addressed as text.
func (s *site) addPaths(t *testing.T, prefix string, n, lines int) []storepath.Path {
	t.Helper()
	return s.addPathsSalted(t, prefix, "", n, lines)
}

// addPathsSalted is addPaths with the second half of each path's lines
// salted: with a salt, the next version of addPaths' paths, the same
// names with half their bytes new, for binary deltas.
func (s *site) addPathsSalted(t *testing.T, prefix, salt string, n, lines int) []storepath.Path {
	t.Helper()
	expr := fmt.Sprintf(`
let
  line = i: j: builtins.hashString "sha512" "${if j * 2 < %d then "" else "%s"}%s-${toString i}-${toString j}";
  blob = i: builtins.concatStringsSep "\n" (builtins.genList (line i) %d);
  ref = i: if i < 0 then "" else "ref ${builtins.elemAt ps i}\n";
  mk = i: builtins.toFile "%s-${toString i}" "${blob i}\n${ref (i - 1)}${if i > 1 then ref (i / 2) else ""}";
  ps = builtins.genList mk %d;
in ps`, lines, salt, prefix, lines, prefix, n)
	out := s.n.Run(t, "nix-instantiate", "--eval", "--strict", "--json", "--read-write-mode", "-E", expr)
	var strs []string
	if err := json.Unmarshal([]byte(out), &strs); err != nil {
		t.Fatalf("nix-instantiate output %q: %v", out, err)
	}
	var paths []storepath.Path
	for _, p := range strs {
		sp, err := s.n.StoreDir.Parse(p)
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, sp)
	}
	return paths
}

// cli returns the nix-airgap command line as a child process, with the
// site's Nix environment.
func (s *site) cli(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(append([]string{}, s.n.Env...), asMain+"=1")
	// SIGKILL the child alone, not its nix children: they hold no state
	// of ours, and Nix is crash-safe on its own.
	return cmd
}

// run runs the CLI and fails the test unless it succeeds.
func (s *site) run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := s.cli(t.Context(), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("nix-airgap %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// pack packs the site's top path's runtime closure to out.
func (s *site) pack(t *testing.T, out string, extra ...string) {
	t.Helper()
	s.packPath(t, s.top, out, extra...)
}

// packPath packs p's runtime closure to out.
func (s *site) packPath(t *testing.T, p storepath.Path, out string, extra ...string) {
	t.Helper()
	s.run(t, append([]string{"pack", p.String(), "--mode", "runtime", "--no-build", "--no-progress", "--key", s.skFile, "--out", out}, extra...)...)
}

// cacheState is what a check of a cache directory found.
type cacheState struct {
	narinfos int
	dangling int // references with no narinfo in the cache
	record   bool
	records  int // bundles recorded as imported
}

// checkCache checks the invariants a cache (a directory or a bucket) must
// keep at every instant: every narinfo parses and its NAR file is there
// with the right hash and size; every name a reader could look up is
// complete (temporary files are dot files, and object stores have none);
// a bundle record exists only once all its narinfos are there. It returns
// what it found.
func checkCache(t *testing.T, location string) cacheState {
	t.Helper()
	var st cacheState
	b, err := storage.Open(t.Context(), location)
	if errors.Is(err, fs.ErrNotExist) {
		return st // nothing published yet
	}
	if err != nil {
		t.Fatalf("open cache %s: %v", location, err)
	}
	defer b.Close()
	d, err := cache.OpenBackend(t.Context(), b)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, cache.ErrNotFound) {
			for range b.List(t.Context(), bundle.RecordDir) {
				t.Errorf("cache %s: a bundle record without nix-cache-info", location)
				break
			}
			return st // nothing published yet
		}
		t.Fatalf("open cache %s: %v", location, err)
	}
	defer d.Close()
	have := map[string]bool{}
	var refs []storepath.Path
	for ni, err := range d.NarInfos(t.Context()) {
		if err != nil {
			t.Errorf("cache %s: %v", location, err)
			continue
		}
		have[ni.StorePath.Hash] = true
		refs = append(refs, ni.References...)
		r, err := d.Open(t.Context(), ni.URL)
		if err != nil {
			t.Errorf("cache %s: narinfo %s without its NAR: %v", location, ni.StorePath, err)
			continue
		}
		if err := cache.CheckNAR(r, ni); err != nil {
			t.Errorf("cache %s: %v", location, err)
		}
		r.Close()
		st.narinfos++
	}
	for _, r := range refs {
		if !have[r.Hash] {
			st.dangling++
		}
	}
	// Names a reader sees: nothing but the cache's own files.
	for e, err := range b.List(t.Context(), "") {
		if err != nil {
			t.Fatal(err)
		}
		name := path.Base(e.Name)
		switch {
		case strings.HasPrefix(name, "."), name == cache.CacheInfoFile, name == "nar", name == "nix-airgap",
			name == bundle.RegistryName, strings.HasSuffix(name, ".narinfo") && !e.Dir,
			name == bundle.ManifestName, name == bundle.SigName, name == "log", // a bundle's
			name == "channels":
		default:
			t.Errorf("cache %s: unexpected visible file %s", location, name)
		}
	}
	for e, err := range b.List(t.Context(), bundle.RecordDir) {
		if err == nil && strings.HasSuffix(e.Name, ".json") {
			st.records++
		}
	}
	st.record = st.records > 0
	return st
}
