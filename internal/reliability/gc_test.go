package reliability_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/server"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// systems are two generations of a "system": paths both need (shared),
// paths only the old one needs, paths only the new one needs, and the two
// top paths.
type systems struct {
	shared, old, new []storepath.Path
	sys1, sys2       storepath.Path
}

// addSystems adds two systems of text paths in chains (each path refers
// to the one before it and to the one at half its index), the old and
// new chains each referring to the shared one.
func (s *site) addSystems(t *testing.T, shared, own, lines int) systems {
	t.Helper()
	return s.addSystemsWith(t, shared, own, lines, nil, nil)
}

// addSystemsWith is addSystems whose old and new systems also refer to
// the store paths oldRefs and newRefs (flat files, say).
func (s *site) addSystemsWith(t *testing.T, shared, own, lines int, oldRefs, newRefs []storepath.Path) systems {
	t.Helper()
	refs := func(ps []storepath.Path) string {
		var b strings.Builder
		for _, p := range ps {
			fmt.Fprintf(&b, "ref ${builtins.storePath \"%s\"}\n", p)
		}
		return b.String()
	}
	expr := fmt.Sprintf(`
let
  last = l: builtins.elemAt l (builtins.length l - 1);
  blob = p: i: builtins.concatStringsSep "\n" (builtins.genList (j: builtins.hashString "sha512" "${p}-${toString i}-${toString j}") %d);
  chain = p: n: extra:
    let
      ref = i: "ref ${builtins.elemAt ps i}\n";
      mk = i: builtins.toFile "${p}-${toString i}" "${blob p i}\n${if i > 0 then ref (i - 1) else extra}${if i > 1 then ref (i / 2) else ""}";
      ps = builtins.genList mk n;
    in ps;
  shared = chain "shared" %d "";
  old = chain "old" %d "ref ${last shared}\n";
  new = chain "new" %d "ref ${last shared}\n";
in {
  inherit shared old new;
  sys1 = builtins.toFile "system" "v1\nref ${last old}\nref ${last shared}\n%s";
  sys2 = builtins.toFile "system" "v2\nref ${last new}\nref ${last shared}\n%s";
}`, lines, shared, own, own, refs(oldRefs), refs(newRefs))
	out := s.n.Run(t, "nix-instantiate", "--eval", "--strict", "--json", "--read-write-mode", "-E", expr)
	var raw struct {
		Shared, Old, New []string
		Sys1, Sys2       string
	}
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatalf("nix-instantiate output %q: %v", out, err)
	}
	parse := func(ss ...string) []storepath.Path {
		var ps []storepath.Path
		for _, str := range ss {
			p, err := s.n.StoreDir.Parse(str)
			if err != nil {
				t.Fatal(err)
			}
			ps = append(ps, p)
		}
		return ps
	}
	return systems{shared: parse(raw.Shared...), old: parse(raw.Old...), new: parse(raw.New...), sys1: parse(raw.Sys1)[0], sys2: parse(raw.Sys2)[0]}
}

// importSystems packs sys1 as a base bundle and sys2 as a delta since it
// (runtime mode), and imports both into a new cache.
func (s *site) importSystems(t *testing.T, g systems) string {
	t.Helper()
	b1 := filepath.Join(t.TempDir(), "b1")
	s.packPath(t, g.sys1, b1)
	b2 := filepath.Join(t.TempDir(), "b2")
	s.packPath(t, g.sys2, b2, "--since", b1)
	cacheDir := filepath.Join(t.TempDir(), "cache")
	for _, b := range []string{b1, b2} {
		s.run(t, "import", b, "--cache", cacheDir, "--public-key", s.pkFile, "--log-level", "error")
		// Import order is the records' modification times: make it
		// unambiguous on coarse file system clocks.
		time.Sleep(10 * time.Millisecond)
	}
	return cacheDir
}

// narinfoSet lists the store paths a cache has narinfos for.
func narinfoSet(t *testing.T, dir string) map[string]bool {
	t.Helper()
	d, err := cache.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	have := map[string]bool{}
	for ni, err := range d.NarInfos(t.Context()) {
		if err != nil {
			t.Fatal(err)
		}
		have[ni.StorePath.String()] = true
	}
	return have
}

func pathSet(ps ...[]storepath.Path) map[string]bool {
	m := map[string]bool{}
	for _, l := range ps {
		for _, p := range l {
			m[p.String()] = true
		}
	}
	return m
}

// narFiles counts the NAR files of a cache.
func narFiles(t *testing.T, dir string) int {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, cache.NarDir))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if e.Type().IsRegular() && e.Name()[0] != '.' {
			n++
		}
	}
	return n
}

// gcReport is what gc --json says, as far as these tests read it.
type gcReport struct {
	DryRun  bool     `json:"dryRun"`
	Removed []string `json:"removedPaths"`
	Freed   struct {
		Paths int   `json:"paths"`
		Bytes int64 `json:"bytes"`
	} `json:"removed"`
}

// TestGCCrash imports a base and a delta, then kills `nix-airgap gc
// --keep-bundles 1` with SIGKILL at random moments, over and over. After
// every kill the cache must be consistent (each narinfo's NAR complete,
// no reference dangling, nothing half-visible) and still hold every path
// the newer system needs; a gc run to its end must then leave exactly
// what an uninterrupted one does. Before that, --dry-run must change
// nothing and name exactly the paths only the older system needed; after
// it, stock Nix copies the newer system from the cache.
func TestGCCrash(t *testing.T) {
	nixtest.Require(t)
	rounds := envInt(t, "NIX_AIRGAP_CRASH_ROUNDS", 3)
	n := envInt(t, "NIX_AIRGAP_CRASH_PATHS", 50)
	s := newSite(t, 1, 1)
	g := s.addSystems(t, n, n, 16)
	pristine := s.importSystems(t, g)
	newer := pathSet(g.shared, g.new, []storepath.Path{g.sys2})
	onlyOld := pathSet(g.old, []storepath.Path{g.sys1})
	if got, want := narinfoSet(t, pristine), pathSet(g.shared, g.old, g.new, []storepath.Path{g.sys1, g.sys2}); !maps.Equal(got, want) {
		t.Fatalf("after importing both bundles the cache has %d paths, want %d", len(got), len(want))
	}
	args := func(dir string, extra ...string) []string {
		return append([]string{"gc", "--cache", dir, "--keep-bundles", "1", "--log-level", "error"}, extra...)
	}

	probe := filepath.Join(t.TempDir(), "probe")
	copyDir(t, pristine, probe)
	before := nixtest.VisibleTreeHash(t, probe)
	var dry gcReport
	if err := json.Unmarshal([]byte(s.run(t, args(probe, "--dry-run", "--json")...)), &dry); err != nil {
		t.Fatal(err)
	}
	if after := nixtest.VisibleTreeHash(t, probe); after != before {
		t.Errorf("gc --dry-run changed the cache")
	}
	if diff := cmp.Diff(slices.Sorted(maps.Keys(onlyOld)), dry.Removed); !dry.DryRun || diff != "" {
		t.Errorf("gc --dry-run (dry run %v) would remove other paths than only the older system needed (-want +got):\n%s", dry.DryRun, diff)
	}
	full := timed(t, func() { s.run(t, args(probe)...) })
	if got := narinfoSet(t, probe); !maps.Equal(got, newer) {
		t.Fatalf("after gc the cache has %d paths, want the %d the newer system needs", len(got), len(newer))
	}
	if c := checkCache(t, probe); c.dangling != 0 {
		t.Fatalf("after gc: %+v", c)
	}
	s.run(t, "verify", probe, "--public-key", s.pkFile)
	want := nixtest.VisibleTreeHash(t, probe)

	cacheDir := filepath.Join(t.TempDir(), "cache")
	// With the grace that lets servers notice, and without it (so that
	// kills land in every phase of a run that takes milliseconds).
	for _, grace := range []string{"2s", "0s"} {
		st := crashStats{rounds: rounds, full: full}
		orphans := 0
		if grace == "0s" {
			copyDir(t, pristine, probe)
			st.full = timed(t, func() { s.run(t, args(probe, "--grace", grace)...) })
		}
		st.kill(s, t, func() { copyDir(t, pristine, cacheDir); plantTemps(t, cacheDir) }, func() []string { return args(cacheDir, "--grace", grace) }, func(killed bool) bool {
			got := checkCache(t, cacheDir)
			have := narinfoSet(t, cacheDir)
			switch {
			case killed && len(have) == len(newer)+len(onlyOld):
				st.before++
			case killed && len(have) > len(newer):
				st.partial++
			case killed && narFiles(t, cacheDir) > len(newer):
				orphans++ // narinfos gone, their NAR files not yet
			}
			if got.dangling > 0 {
				t.Errorf("a narinfo left that refers to one removed (%d references dangle)", got.dangling)
			}
			for p := range newer {
				if !have[p] {
					t.Errorf("a killed gc removed %s, which the newer system needs", p)
				}
			}
			if !killed && nixtest.VisibleTreeHash(t, cacheDir) != want {
				t.Errorf("a gc that ran to its end after killed ones left another cache than an uninterrupted one")
			}
			return !killed
		})
		s.run(t, args(cacheDir)...)
		if nixtest.VisibleTreeHash(t, cacheDir) != want {
			t.Errorf("after the kills and a last gc the cache differs from an uninterrupted gc's")
		}
		if left := temps(t, cacheDir); len(left) > 0 {
			t.Errorf("temp files left after the last gc: %q", left)
		}
		t.Logf("gc --grace %s: %s; %d killed between narinfos and NAR files", grace, st, orphans)
	}

	// Stock Nix takes the newer system from the collected cache.
	s.n.Run(t, "nix-collect-garbage")
	if _, err := os.Stat(g.sys2.String()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after Nix's GC, %s: %v; want it gone", g.sys2, err)
	}
	s.n.Run(t, "nix", "copy", "--option", "trusted-public-keys", s.pk.String(), "--from", "file://"+cacheDir, g.sys2.String())
	s.n.Run(t, "nix-store", "--verify-path", g.sys2.String())
}

// plantTemps leaves in the cache directory dir the temp files of Puts
// killed before their rename, as killed imports leave them.
func plantTemps(t *testing.T, dir string) {
	t.Helper()
	for _, name := range []string{".tmp-0123456789abcdef", "nar/.tmp-0123456789abcdef"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("half written"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// temps lists the temp files (.tmp-*) under the cache directory dir.
func temps(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(de.Name(), ".tmp-") {
			names = append(names, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// flatFile adds a flat fixed-output path holding n random bytes, as
// nix-store --add-fixed does, and returns it with the file's sha256.
func (s *site) flatFile(t *testing.T, name string, n int) (storepath.Path, [32]byte) {
	t.Helper()
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(rand.Uint32())
	}
	f := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(f, data, 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := s.n.StoreDir.Parse(s.n.Run(t, "nix-store", "--add-fixed", "sha256", f))
	if err != nil {
		t.Fatal(err)
	}
	return p, sha256.Sum256(data)
}

// TestGCWhileServing runs gc --keep-bundles 1 on a cache that serve
// serves while clients ask for every narinfo, NAR file and hashed-mirror
// file of both systems, and fetch the NAR of every narinfo they get at
// once, as Nix does. No answer may be other than 200 or 404, and no
// narinfo served may name a NAR that is then missing. Afterwards the older
// system's paths and files are misses, and stock Nix in an airgap
// substitutes the newer system from the server, trusting only the site
// key.
func TestGCWhileServing(t *testing.T) {
	nixtest.Require(t)
	s := newSite(t, 1, 1)
	oldFlat, oldSum := s.flatFile(t, "old-source.tar.gz", 64<<10)
	newFlat, newSum := s.flatFile(t, "new-source.tar.gz", 64<<10)
	g := s.addSystemsWith(t, 40, 40, 16, []storepath.Path{oldFlat}, []storepath.Path{newFlat})
	cacheDir := s.importSystems(t, g)
	onlyOld := pathSet(g.old, []storepath.Path{g.sys1, oldFlat})
	var urls []string
	for _, ni := range narinfosOf(t, cacheDir) {
		urls = append(urls, "/"+cache.NarInfoFile(ni.StorePath.Hash))
	}
	for _, sum := range [][32]byte{oldSum, newSum} {
		urls = append(urls, "/sha256/"+hex.EncodeToString(sum[:]))
	}

	siteKey, _, err := signing.Generate("site-1")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Dirs: []string{cacheDir}, Key: &siteKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ns := nixtest.NewNetNS(t)
	inside, err := ns.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	outside, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	var served sync.WaitGroup
	for _, ln := range []net.Listener{inside, outside} {
		served.Go(func() { srv.Serve(ctx, ln) })
	}
	t.Cleanup(func() { stop(); served.Wait() })
	base := "http://" + outside.Addr().String()

	// Clients, until gc is done.
	var (
		mu       sync.Mutex
		statuses = map[int]int{}
		problems []string
	)
	get := func(client *http.Client, u string) (int, []byte) {
		resp, err := client.Get(base + u)
		if err != nil {
			mu.Lock()
			problems = append(problems, fmt.Sprintf("GET %s: %v", u, err))
			mu.Unlock()
			return 0, nil
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		mu.Lock()
		defer mu.Unlock()
		statuses[resp.StatusCode]++
		if err != nil {
			problems = append(problems, fmt.Sprintf("GET %s: %v", u, err))
		}
		if resp.StatusCode != 200 && resp.StatusCode != 404 {
			problems = append(problems, fmt.Sprintf("GET %s: %s", u, resp.Status))
		}
		return resp.StatusCode, body
	}
	done := make(chan struct{})
	var clients sync.WaitGroup
	for range 8 {
		clients.Go(func() {
			client := &http.Client{Timeout: 30 * time.Second}
			for {
				select {
				case <-done:
					return
				default:
				}
				u := urls[rand.IntN(len(urls))]
				status, body := get(client, u)
				if status != 200 || !strings.HasSuffix(u, ".narinfo") {
					continue
				}
				var nar string
				for line := range strings.Lines(string(body)) {
					if v, ok := strings.CutPrefix(line, "URL: "); ok {
						nar = "/" + strings.TrimSpace(v)
					}
				}
				if status, _ := get(client, nar); status != 200 {
					mu.Lock()
					problems = append(problems, fmt.Sprintf("%s was served, but its NAR %s then answered %d", u, nar, status))
					mu.Unlock()
				}
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	out := s.run(t, "gc", "--cache", cacheDir, "--keep-bundles", "1")
	time.Sleep(200 * time.Millisecond)
	close(done)
	clients.Wait()
	t.Logf("gc: %s", strings.TrimSpace(out))
	t.Logf("while gc ran: %v answers by status", statuses)
	for _, p := range problems {
		t.Error(p)
	}
	if statuses[200] == 0 {
		t.Fatal("no request was answered")
	}

	client := &http.Client{Timeout: 10 * time.Second}
	for p := range onlyOld {
		sp, _ := s.n.StoreDir.Parse(p)
		if status, _ := get(client, "/"+cache.NarInfoFile(sp.Hash)); status != 404 {
			t.Errorf("after gc, %s's narinfo: %d, want 404", p, status)
		}
	}
	if status, _ := get(client, "/sha256/"+hex.EncodeToString(oldSum[:])); status != 404 {
		t.Errorf("after gc, the older system's flat file from the hashed mirror: %d, want 404", status)
	}
	if status, _ := get(client, "/sha256/"+hex.EncodeToString(newSum[:])); status != 200 {
		t.Errorf("after gc, the newer system's flat file from the hashed mirror: %d, want 200", status)
	}

	// Stock Nix, in the airgap, substitutes the newer system.
	s.n.Run(t, "nix-collect-garbage")
	if _, err := os.Stat(g.sys2.String()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after Nix's GC, %s: %v; want it gone", g.sys2, err)
	}
	s.n.In(ns).Run(t, "nix-store", "-r", g.sys2.String(), "--option", "substituters", "http://"+inside.Addr().String(),
		"--option", "trusted-public-keys", siteKey.Public().String(), "--option", "narinfo-cache-negative-ttl", "0")
	s.n.Run(t, "nix-store", "--verify-path", g.sys2.String())
}
