package reliability_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/cli"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// TestYearOfCrossings runs a site's life: a crossing every week against
// one long-lived cache, with the real command line and stock Nix. Week 0
// packs the world's system with its sources into a new cache; every
// later week changes the world as updates do (a new toplevel, a deep
// change that rebuilds every runtime path, or a mass rebuild that changes
// only store paths, the last week always deep), packs --since the
// inventory the cache sent back, verifies, imports (every fourth week as
// a volume set, imported last volume first), and runs gc --keep-bundles.
// One week a cached NAR rots: verify names it, import --repair mends it.
// After every crossing the cache verifies, holds no more than the last
// keep weeks need (from their manifests) and at least this week's need,
// has no temp files, and stock Nix in the airgap substitutes the system
// from serve with nothing built. At the end, a deep change nobody packed
// builds offline from the sources in the cache. $NIX_AIRGAP_WEEKS sets
// the number of weeks after week 0 (default 12).
func TestYearOfCrossings(t *testing.T) {
	nixtest.Require(t)
	weeks := envInt(t, "NIX_AIRGAP_WEEKS", 12)
	const keep = 3
	s := newBareSite(t)
	inet := nixtest.StartInternet(t)
	// libbase big enough for binary deltas to pay: the world's other
	// runtime NARs are a few hundred bytes, less than a delta of them.
	w := nixtest.NewWorld(t, s.n, inet, nixtest.WorldOptions{LibbaseData: 32 << 10})
	ns := nixtest.NewNetNS(t)
	tmp := t.TempDir()
	media, cacheDir := filepath.Join(tmp, "media"), filepath.Join(tmp, "cache")
	if err := os.Mkdir(media, 0o755); err != nil {
		t.Fatal(err)
	}
	inventory := filepath.Join(media, "inventory.json")
	repairWeek := weeks / 2
	if volumeWeek(repairWeek) {
		repairWeek++
	}

	var (
		change                          worldChange
		refs                            = map[storepath.Path][]storepath.Path{} // from every manifest
		needs                           []map[storepath.Path]bool               // each week's closure
		url                             string
		firstInv, totalBytes, totalFull int64
	)
	for week := 0; week <= weeks; week++ {
		start := time.Now()
		kind := change.next(week, weeks)
		args := change.args(w)
		top := w.OutPaths(t, args...)["toplevel"]

		// Connected side: the week's bundle, and a full one to compare.
		out := filepath.Join(media, fmt.Sprintf("week-%03d.tar", week))
		extra := []string{}
		if week > 0 {
			extra = append(extra, "--since", inventory)
		}
		if volumeWeek(week) {
			extra = append(extra, "--volume-size", "32KiB")
		}
		s.packWorld(t, w, args, out, extra...)
		vols := bundleFiles(t, out)
		full := filepath.Join(tmp, "full.tar")
		s.packWorld(t, w, args, full)
		bundleBytes, fullBytes := filesSize(t, vols...), filesSize(t, full)
		m, fullM := tarManifest(t, vols[0]), tarManifest(t, full)
		if err := os.Remove(full); err != nil {
			t.Fatal(err)
		}
		payload, deltas := narFileBytes(m)
		fullPayload, _ := narFileBytes(fullM)
		// A volume set carries binary deltas as a tar does
		// (docs/bundle-format.md §8).
		if (kind == "deep" || kind == "rebuild") && deltas == 0 {
			t.Errorf("week %d: a %s change, and libbase did not travel as a binary delta", week, kind)
		}
		if week > 0 && payload*10 > fullPayload {
			t.Errorf("week %d (%s): NAR and delta files of %d bytes, a full bundle's %d; want at most 1/10", week, kind, payload, fullPayload)
		}
		need := map[storepath.Path]bool{}
		for _, e := range m.Paths {
			refs[e.Path] = e.References
			need[e.Path] = true
		}
		for _, b := range m.Bases {
			for _, p := range b.Provides {
				need[p] = true
			}
		}
		needs = append(needs, closureOf(refs, need))

		// The airgap: verify each volume alone, import last first.
		for _, v := range vols {
			s.run(t, "verify", v, "--public-key", s.pkFile, "--no-progress")
		}
		for _, v := range slices.Backward(vols) {
			s.run(t, "import", v, "--cache", cacheDir, "--public-key", s.pkFile, "--no-progress")
		}
		if week == repairWeek {
			s.rotAndRepair(t, cacheDir, top, out)
		}
		before := len(narinfoSet(t, cacheDir))
		var gc gcReport
		if err := json.Unmarshal([]byte(s.run(t, "gc", "--cache", cacheDir, "--keep-bundles", strconv.Itoa(keep), "--json", "--no-progress")), &gc); err != nil {
			t.Fatalf("week %d: gc --json: %v", week, err)
		}
		s.run(t, "verify", cacheDir, "--public-key", s.pkFile, "--no-progress")
		if st := checkCache(t, cacheDir); st.dangling != 0 {
			t.Errorf("week %d: %d references dangle in the cache", week, st.dangling)
		}
		kept := narinfoSet(t, cacheDir)
		if before-len(gc.Removed) != len(kept) {
			t.Errorf("week %d: %d paths before gc, %d removed, %d left", week, before, len(gc.Removed), len(kept))
		}
		s.checkKept(t, week, kept, needs[max(0, len(needs)-keep):])
		// Whatever the weeks gone by, the cache holds at most keep
		// systems with their sources, each less than a full bundle.
		cacheBytes := dirSize(t, cacheDir)
		if cacheBytes > keep*fullBytes {
			t.Errorf("week %d: the cache has %d bytes, more than %d full bundles of %d", week, cacheBytes, keep, fullBytes)
		}
		s.run(t, "inventory", "--cache", cacheDir, "--out", inventory)
		invBytes := filesSize(t, inventory)
		if week == 0 {
			firstInv = invBytes
		}
		if left := append(hidden(t, cacheDir), hidden(t, media)...); len(left) > 0 {
			t.Errorf("week %d: temp files or staging dirs left: %q", week, left)
		}
		if week == 0 {
			url = s.serveIn(t, ns, cacheDir)
		}

		// A machine of the site, with nothing in its store, substitutes
		// the system with nothing built.
		got, greeting, stderr, err := siteBuild(t, s, w, ns, url, append(args, "--max-jobs", "0")...)
		if err != nil {
			t.Fatalf("week %d: the system from serve: %v\n%s", week, err, stderr)
		}
		if got != top || len(builtDrvs(stderr)) > 0 || greeting != w.Greeting(change.variant, change.deep) {
			t.Errorf("week %d: got %s saying %q, built %v; want %s substituted, nothing built, saying %q", week, got, greeting, builtDrvs(stderr), top, w.Greeting(change.variant, change.deep))
		}
		if week > 0 {
			totalBytes += bundleBytes
			totalFull += fullBytes
			if bundleBytes*2 > fullBytes {
				t.Errorf("week %d (%s): the bundle has %d bytes, a full one %d; want at most half", week, kind, bundleBytes, fullBytes)
			}
		}
		// Its size follows the cache's paths, not the weeks gone by.
		if invBytes > 2*firstInv*int64(len(kept))/int64(len(needs[0])) {
			t.Errorf("week %d: inventory of %d bytes for %d paths, week 0's %d for %d", week, invBytes, len(kept), firstInv, len(needs[0]))
		}
		t.Logf("week %2d %-7s %d vol: bundle %6d B, full %6d B (%5.1f%%); NAR and delta files %5d B, full %5d B, %d of %d paths as deltas; cache %6d B, inventory %5d B; gc kept %2d paths, removed %d; %s",
			week, kind, len(vols), bundleBytes, fullBytes, 100*float64(bundleBytes)/float64(fullBytes), payload, fullPayload, deltas, len(m.Paths),
			cacheBytes, invBytes, len(kept), len(gc.Removed), time.Since(start).Round(time.Millisecond))
	}
	if weeks > 0 {
		t.Logf("%d weekly bundles: %d bytes, %.1f%% of %d full bundles' %d", weeks, totalBytes, 100*float64(totalBytes)/float64(totalFull), weeks, totalFull)
	}

	// A deep change nobody packed builds offline from the cache's sources.
	change.deep = "offline"
	args := change.args(w)
	got, greeting, stderr, err := siteBuild(t, s, w, ns, url, args...)
	if err != nil {
		t.Fatalf("a deep change, offline from the sources: %v\n%s", err, stderr)
	}
	want := sortedNames([]string{"cc-1.0", "demo-system", "hello-1.0", "libbase-1.0", "libgreet-1.0"})
	if got != w.OutPaths(t, args...)["toplevel"] || greeting != w.Greeting(change.variant, change.deep) || !slices.Equal(builtDrvs(stderr), want) {
		t.Errorf("a deep change, offline: got %s saying %q, built %v; want it built from sources, building %v", got, greeting, builtDrvs(stderr), want)
	}
}

// worldChange is the state of the world's arguments after a week of
// changes.
type worldChange struct{ variant, deep, rebuild string }

// next changes the world for week of weeks, and says how: a new toplevel
// (one package's version bump), a deep change (a new libbase, rebuilding
// every runtime path), or a mass rebuild (a new cc: only store paths
// change). The last week is always a deep change.
func (c *worldChange) next(week, weeks int) string {
	w := "w" + strconv.Itoa(week)
	switch {
	case week == 0:
		return "base"
	case week == weeks || week%3 == 2:
		c.deep = w
		return "deep"
	case week%3 == 1:
		c.variant = w
		return "variant"
	default:
		c.rebuild = w
		return "rebuild"
	}
}

func (c worldChange) args(w *nixtest.World) []string {
	return append(w.Args(c.variant, c.deep), w.RebuildArgs(c.rebuild)...)
}

// volumeWeek says whether week crosses as a volume set.
func volumeWeek(week int) bool { return week%4 == 0 }

// packWorld packs the world's toplevel with its sources under args to out.
func (s *site) packWorld(t *testing.T, w *nixtest.World, args []string, out string, extra ...string) {
	t.Helper()
	cmd := []string{"pack", "--file", w.File, "--attr", "toplevel", "--mode", "sources", "--no-progress", "--secret-key", s.skFile, "--out", out}
	s.run(t, append(append(cmd, args...), extra...)...)
}

// bundleFiles lists the tar out, or the volumes of the set out names.
func bundleFiles(t *testing.T, out string) []string {
	t.Helper()
	vols, err := filepath.Glob(strings.TrimSuffix(out, ".tar") + ".[0-9][0-9][0-9].tar")
	if err != nil {
		t.Fatal(err)
	}
	if len(vols) == 0 {
		return []string{out}
	}
	return vols
}

// tarManifest reads the manifest of a tar bundle or volume.
func tarManifest(t *testing.T, name string) *bundle.Manifest {
	t.Helper()
	data, _, err := bundle.ReadTarManifest(name)
	if err != nil {
		t.Fatalf("manifest of %s: %v", name, err)
	}
	m, err := bundle.ParseManifest(data)
	if err != nil {
		t.Fatalf("manifest of %s: %v", name, err)
	}
	return m
}

// narFileBytes sums the sizes of the NAR and delta files of m's paths,
// and counts the deltas.
func narFileBytes(m *bundle.Manifest) (bytes int64, deltas int) {
	for _, e := range m.Paths {
		bytes += int64(e.FileSize)
		if e.Delta != nil {
			deltas++
		}
	}
	return bytes, deltas
}

// closureOf is roots with every path they reach through refs.
func closureOf(refs map[storepath.Path][]storepath.Path, roots map[storepath.Path]bool) map[storepath.Path]bool {
	out := maps.Clone(roots)
	todo := slices.Collect(maps.Keys(roots))
	for len(todo) > 0 {
		p := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		for _, r := range refs[p] {
			if !out[r] {
				out[r] = true
				todo = append(todo, r)
			}
		}
	}
	return out
}

// checkKept checks that gc kept every path the last week needs, and
// nothing the last weeks (the kept bundles') do not.
func (s *site) checkKept(t *testing.T, week int, kept map[string]bool, last []map[storepath.Path]bool) {
	t.Helper()
	union := map[string]bool{}
	for _, need := range last {
		for p := range need {
			union[p.String()] = true
		}
	}
	for p := range last[len(last)-1] {
		if !kept[p.String()] {
			t.Errorf("week %d: gc removed %s, which this week's system needs", week, p)
		}
	}
	for p := range kept {
		if !union[p] {
			t.Errorf("week %d: gc kept %s, which none of the last %d weeks needs", week, p, len(last))
		}
	}
}

// rotAndRepair flips a byte of top's NAR in the cache; verify must name
// it, and import --repair of bundle mend it.
func (s *site) rotAndRepair(t *testing.T, cacheDir, top, bundleFile string) {
	t.Helper()
	sp, err := s.n.StoreDir.Parse(top)
	if err != nil {
		t.Fatal(err)
	}
	d, err := cache.OpenDir(cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	ni, err := d.NarInfo(t.Context(), sp.Hash)
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	editFile(t, filepath.Join(cacheDir, filepath.FromSlash(ni.URL)), flip(func(n int) int { return n / 2 }))
	out, err := s.cli(t.Context(), "verify", cacheDir, "--public-key", s.pkFile, "--json", "--no-progress").Output()
	var ee *exec.ExitError
	var rep verifyReport
	if !errors.As(err, &ee) || ee.ExitCode() != cli.ExitCorrupt || json.Unmarshal(out, &rep) != nil || !slices.Equal(rep.Damaged, []string{top}) {
		t.Fatalf("verify of a rotten cache: %v, damaged %q; want exit %d naming %s\n%s", err, rep.Damaged, cli.ExitCorrupt, top, out)
	}
	s.run(t, "import", bundleFile, "--cache", cacheDir, "--public-key", s.pkFile, "--repair", "--no-progress")
}

// serveIn runs `nix-airgap serve` on dir in ns until the test ends and
// returns its URL there.
func (s *site) serveIn(t *testing.T, ns *nixtest.NetNS, dir string) string {
	t.Helper()
	const addr = "127.0.0.1:8080" // the namespace is the test's own
	ctx, cancel := context.WithCancel(context.Background())
	serve := ns.Command(ctx, os.Args[0], "serve", dir, "--listen", addr, "--access-log=false", "--log-level", "error")
	serve.Env = append(slices.Clone(s.n.Env), asMain+"=1")
	var log bytes.Buffer
	serve.Stdout, serve.Stderr = &log, &log
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); serve.Wait() })
	url := "http://" + addr
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if ns.Command(ctx, "/bin/busybox", "wget", "-q", "-O", "/dev/null", url+"/nix-cache-info").Run() == nil {
			return url
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not come up:\n%s", log.String())
		}
	}
}

// siteBuild runs stock nix-build of the world's toplevel under args on a
// new machine of the site: in the airgap, with an empty store of its own
// (mounted over the store dir) and serve at url as its only substituter,
// trusting the pack key. It returns the output path, what its bin/hello
// says, and nix-build's stderr.
func siteBuild(t *testing.T, s *site, w *nixtest.World, ns *nixtest.NetNS, url string, args ...string) (out, greeting, stderr string, err error) {
	client := nixtest.New(t, nixtest.Options{StoreDir: s.n.StoreDir})
	store := filepath.Join(client.Root, "mounted-store")
	if err := os.Mkdir(store, 0o755); err != nil {
		return "", "", "", err
	}
	build := append([]string{"nix-build", w.File, "-A", "toplevel", "--no-out-link",
		"--option", "substituters", url, "--option", "trusted-public-keys", s.pk.String(),
		"--option", "narinfo-cache-negative-ttl", "0"}, args...)
	cmd := ns.Command(t.Context(), "unshare", append([]string{"--mount", "--propagation", "private", "--",
		"sh", "-c", `mount --bind "$0" "$1" && shift && out=$("$@") && echo "$out" && "$out/bin/hello"`, store, string(s.n.StoreDir)}, build...)...)
	cmd.Env = client.Env
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err = cmd.Run()
	out, greeting, _ = strings.Cut(so.String(), "\n")
	return out, greeting, se.String(), err
}

var buildLine = regexp.MustCompile(`(?m)^building '[^']*/[0-9a-z]{32}-([^']+)\.drv'`)

// builtDrvs lists, sorted, the names of the derivations a nix-build's
// stderr says it built.
func builtDrvs(stderr string) []string {
	var names []string
	for _, m := range buildLine.FindAllStringSubmatch(stderr, -1) {
		names = append(names, m[1])
	}
	return sortedNames(names)
}

func sortedNames(names []string) []string {
	names = slices.Clone(names)
	slices.Sort(names)
	return names
}

// hidden lists the dot files and dirs under dir, temp files and staging
// dirs, but for the cache's lock files, which stay.
func hidden(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err == nil && p != dir && strings.HasPrefix(de.Name(), ".") && de.Name() != ".lock" && de.Name() != ".lock-swap" {
			names = append(names, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// filesSize is the total size of the files names.
func filesSize(t *testing.T, names ...string) int64 {
	t.Helper()
	var n int64
	for _, name := range names {
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

// dirSize is the total size of the files under dir.
func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, de fs.DirEntry, err error) error {
		if err == nil && de.Type().IsRegular() {
			fi, err := de.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
