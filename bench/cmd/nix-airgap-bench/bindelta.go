package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// BinDelta is what the binary-delta benchmark measured:
// docs/bench/bindelta.json.
type BinDelta struct {
	Started   time.Time     `json:"started"`
	Machine   Machine       `json:"machine"`
	Runs      int           `json:"runs"`
	Packages  int           `json:"packages"`
	Bumped    []string      `json:"bumped"`
	Scenarios []*BDScenario `json:"scenarios"`
	Methods   []BDMethod    `json:"methods,omitempty"`
	// MethodsRun is when Methods were measured, if in an earlier run.
	MethodsRun time.Time `json:"methods_run,omitzero"`
	// Big is one path of over 1 GiB, updated as in version bumps: pack
	// --since its base and import, for their peak memory.
	Big  *BDBig `json:"big,omitempty"`
	Load string `json:"load"`
}

// BDScenario is one update, packed --since the base with and without
// binary deltas, and imported.
type BDScenario struct {
	Name        string  `json:"name"`
	Paths       int     `json:"paths"`
	NarBytes    int64   `json:"narBytes"`
	PlainBytes  int64   `json:"plainBytes"` // the plain delta bundle's NAR files
	DeltaBytes  int64   `json:"deltaBytes"` // the bundle with binary deltas' NAR and delta files
	DeltaPaths  int     `json:"deltaPaths"`
	RebuiltNar  int64   `json:"rebuiltNarBytes"` // NAR bytes import rebuilds from deltas
	PackPlain   *Series `json:"packPlain"`
	PackDelta   *Series `json:"packDelta"`
	ImportPlain *Series `json:"importPlain"`
	ImportDelta *Series `json:"importDelta"`
	RoundTrip   string  `json:"roundTrip"`
}

// BDBig is the update of one large path.
type BDBig struct {
	NarBytes   int64  `json:"narBytes"`
	DeltaBytes int64  `json:"deltaBytes"`
	Pack       Sample `json:"pack"`
	Import     Sample `json:"import"`
}

// runBinDelta runs the binary-delta benchmark on the Debian packages
// downloaded under debs (debs/bookworm/*.deb, debs/trixie/*.deb) and
// writes docs/bench/bindelta.json, then the report. Without methods, the
// comparison of delta methods is the last published one.
func runBinDelta(ctx context.Context, log *slog.Logger, debs, work, bin, docs string, runs int, methods bool) error {
	if work == "" {
		work = "/var/tmp/nix-airgap-bench/bindelta"
	}
	storeDir := storepath.Dir(filepath.Join(work, "store"))
	env, err := nixcli.IsolatedEnv(filepath.Join(work, "nix"), storeDir, "")
	if err != nil {
		return err
	}
	r := &Runner{Log: log, Env: env, Timeout: 2 * time.Hour}
	res := &BinDelta{Started: time.Now().UTC(), Machine: describeMachine(ctx), Runs: runs}
	g := &bdGen{dir: storeDir, extract: filepath.Join(work, "extract"), versions: map[string]map[string]string{}}
	pkgs, err := extractDebs(ctx, debs, g)
	if err != nil {
		return err
	}
	res.Packages = len(pkgs)
	// Every tenth package, by name, is bumped to trixie's build.
	bumped := map[string]bool{}
	for i, p := range pkgs {
		if i%10 == 5 {
			bumped[p] = true
			res.Bumped = append(res.Bumped, p)
		}
	}
	closures := map[string]*bdClosure{}
	for _, sc := range []struct {
		name   string
		bumped map[string]bool
	}{{"base", nil}, {"mass rebuild", nil}, {"version bumps", bumped}} {
		c := g.closure(sc.name, pkgs, sc.bumped)
		closures[sc.name] = c
		if _, err := os.Stat(c.Top); err == nil {
			continue
		}
		log.Info("bindelta: generating", "closure", sc.name)
		if err := g.importClosure(ctx, env, c); err != nil {
			return err
		}
	}
	key, pub := filepath.Join(work, "key.sec"), filepath.Join(work, "key.pub")
	if _, err := os.Stat(pub); err != nil {
		if _, err := r.Run(ctx, nil, "", "nix-store", "--generate-binary-cache-key", "bench-1", key, pub); err != nil {
			return err
		}
	}
	pubKey, err := os.ReadFile(pub)
	if err != nil {
		return err
	}

	base := filepath.Join(work, "base")
	site := filepath.Join(work, "site")
	if _, err := os.Stat(filepath.Join(site, "nix-cache-info")); err != nil {
		os.RemoveAll(base)
		os.RemoveAll(site)
		if _, err := r.Run(ctx, nil, "", bin, "pack", closures["base"].Top, "--mode", "runtime", "--no-build", "--out", base, "--secret-key", key, "--no-progress"); err != nil {
			return err
		}
		if _, err := r.Run(ctx, nil, "", bin, "import", base, "--cache", site, "--public-key", pub, "--no-progress"); err != nil {
			return err
		}
	}
	for _, name := range []string{"mass rebuild", "version bumps"} {
		sc, err := bdScenario(ctx, log, r, bin, work, base, site, key, pub, strings.TrimSpace(string(pubKey)), closures[name], runs)
		if err != nil {
			return err
		}
		res.Scenarios = append(res.Scenarios, sc)
	}
	if res.Big, err = bdBig(ctx, log, r, g, bin, work, key, pub, pkgs, bumped); err != nil {
		return err
	}
	res.Load = fmt.Sprintf("one-minute load average %.1f to %.1f during the runs", minLoad(res), maxLoad(res))
	if !methods {
		last, err := loadBinDelta(filepath.Join(docs, "bench"))
		if err != nil {
			return err
		}
		res.Methods, res.MethodsRun = last.Methods, last.MethodsRun
		if res.MethodsRun.IsZero() {
			res.MethodsRun = last.Started
		}
		return saveBinDelta(docs, res)
	}
	// Saved before the methods, which take long, and again after them.
	if err := saveBinDelta(docs, res); err != nil {
		return err
	}
	if res.Methods, err = compareMethods(ctx, log, env, storeDir, closures, bumped); err != nil {
		return err
	}
	return saveBinDelta(docs, res)
}

// loadBinDelta reads benchDir/bindelta.json.
func loadBinDelta(benchDir string) (*BinDelta, error) {
	data, err := os.ReadFile(filepath.Join(benchDir, "bindelta.json"))
	if err != nil {
		return nil, err
	}
	var r BinDelta
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Join(benchDir, "bindelta.json"), err)
	}
	return &r, nil
}

// saveBinDelta writes docs/bench/bindelta.json and the report.
func saveBinDelta(docs string, res *BinDelta) error {
	data, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(docs, "bench", "bindelta.json"), append(data, '\n'), 0o644); err != nil {
		return err
	}
	return writeReport(docs, filepath.Join(docs, "bench"))
}

// extractDebs unpacks each suite's .debs (dpkg-deb -x) once, and returns
// the packages both suites have, sorted.
func extractDebs(ctx context.Context, debs string, g *bdGen) ([]string, error) {
	have := map[string]int{}
	for _, suite := range []string{"bookworm", "trixie"} {
		g.versions[suite] = map[string]string{}
		files, _ := filepath.Glob(filepath.Join(debs, suite, "*.deb"))
		if len(files) == 0 {
			return nil, fmt.Errorf("no .deb files in %s", filepath.Join(debs, suite))
		}
		for _, f := range files {
			// NAME_VERSION_ARCH.deb, the version with %3a for ':'.
			parts := strings.Split(strings.TrimSuffix(filepath.Base(f), ".deb"), "_")
			if len(parts) != 3 {
				continue
			}
			pkg, version := parts[0], strings.ReplaceAll(parts[1], "%3a", ":")
			g.versions[suite][pkg] = version
			have[pkg]++
			dst := filepath.Join(g.extract, suite, pkg)
			if _, err := os.Stat(dst); err == nil {
				continue
			}
			tmp := dst + ".tmp"
			os.RemoveAll(tmp)
			if err := os.MkdirAll(tmp, 0o755); err != nil {
				return nil, err
			}
			if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", f, tmp).CombinedOutput(); err != nil {
				return nil, fmt.Errorf("dpkg-deb -x %s: %w\n%s", f, err, out)
			}
			if err := os.Rename(tmp, dst); err != nil {
				return nil, err
			}
		}
	}
	var pkgs []string
	for p, n := range have {
		if n == 2 {
			pkgs = append(pkgs, p)
		}
	}
	slices.Sort(pkgs)
	return pkgs, nil
}

// bdScenario packs c --since the base, plain and with binary deltas in
// alternating runs, imports each into a copy of the site's cache, and
// lets stock Nix copy the updated closure from serve.
func bdScenario(ctx context.Context, log *slog.Logger, r *Runner, bin, work, base, site, key, pub, pubKey string, c *bdClosure, runs int) (*BDScenario, error) {
	sc := &BDScenario{Name: c.Name, Paths: len(c.Paths)}
	slug := strings.ReplaceAll(c.Name, " ", "-")
	out := map[bool]string{false: filepath.Join(work, slug+"-plain"), true: filepath.Join(work, slug+"-delta")}
	packCmd := func(deltas bool) []string {
		return []string{bin, "pack", c.Top, "--mode", "runtime", "--no-build", "--since", base, "--out", out[deltas],
			"--secret-key", key, "--no-progress", fmt.Sprintf("--binary-deltas=%t", deltas)}
	}
	sc.PackPlain = &Series{Scenario: c.Name, Tool: "pack --binary-deltas=false", Command: strings.Join(packCmd(false)[1:], " ")}
	sc.PackDelta = &Series{Scenario: c.Name, Tool: "pack", Baseline: "pack --binary-deltas=false", Command: strings.Join(packCmd(true)[1:], " ")}
	sc.ImportPlain = &Series{Scenario: c.Name, Tool: "import (plain delta)", Command: "import OUT --cache SITE-COPY"}
	sc.ImportDelta = &Series{Scenario: c.Name, Tool: "import (binary deltas)", Baseline: "import (plain delta)", Command: "import OUT --cache SITE-COPY"}
	for run := range runs {
		// Alternate which goes first, so that shared load falls on both.
		order := []bool{false, true}
		if run%2 == 1 {
			order = []bool{true, false}
		}
		for _, deltas := range order {
			os.RemoveAll(out[deltas])
			exec.Command("sync").Run()
			log.Info("bindelta: pack", "scenario", c.Name, "deltas", deltas, "run", run+1)
			s, err := r.Run(ctx, nil, "", packCmd(deltas)...)
			if err != nil {
				return nil, err
			}
			series := map[bool]*Series{false: sc.PackPlain, true: sc.PackDelta}[deltas]
			s.Bytes = dirSize(filepath.Join(out[deltas], "nar"))
			series.Samples = append(series.Samples, s)
		}
		for _, deltas := range order {
			cacheDir := filepath.Join(work, slug+"-site")
			os.RemoveAll(cacheDir)
			if err := exec.Command("cp", "-a", site, cacheDir).Run(); err != nil {
				return nil, err
			}
			exec.Command("sync").Run()
			log.Info("bindelta: import", "scenario", c.Name, "deltas", deltas, "run", run+1)
			s, err := r.Run(ctx, nil, "", bin, "import", out[deltas], "--cache", cacheDir, "--public-key", pub, "--no-progress")
			if err != nil {
				return nil, err
			}
			series := map[bool]*Series{false: sc.ImportPlain, true: sc.ImportDelta}[deltas]
			series.Samples = append(series.Samples, s)
		}
	}
	sc.PlainBytes = dirSize(filepath.Join(out[false], "nar"))
	sc.DeltaBytes = dirSize(filepath.Join(out[true], "nar"))
	data, err := os.ReadFile(filepath.Join(out[true], bundle.ManifestName))
	if err != nil {
		return nil, err
	}
	m, err := bundle.ParseManifest(data)
	if err != nil {
		return nil, err
	}
	for _, e := range m.Paths {
		sc.NarBytes += int64(e.NarSize)
		if e.Delta != nil {
			sc.DeltaPaths++
			sc.RebuiltNar += int64(e.NarSize)
		}
	}
	// The last import was of the bundle with deltas when runs is odd;
	// import it now in any case, then let stock Nix copy the closure.
	cacheDir := filepath.Join(work, slug+"-site")
	os.RemoveAll(cacheDir)
	if err := exec.Command("cp", "-a", site, cacheDir).Run(); err != nil {
		return nil, err
	}
	if _, err := r.Run(ctx, nil, "", bin, "import", out[true], "--cache", cacheDir, "--public-key", pub, "--no-progress"); err != nil {
		return nil, err
	}
	rt, err := roundTrip(ctx, r, bin, work, cacheDir, pubKey, c)
	if err != nil {
		return nil, err
	}
	sc.RoundTrip = rt
	return sc, nil
}

// roundTrip serves the cache and has stock Nix copy the closure's top
// from it into an empty chroot store, checking every NAR's hash and
// signature as a substitution does.
func roundTrip(ctx context.Context, r *Runner, bin, work, cacheDir, pubKey string, c *bdClosure) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	serve := exec.CommandContext(ctx, bin, "serve", cacheDir, "--listen", addr, "--access-log=false")
	serve.Env = r.Env
	if err := serve.Start(); err != nil {
		return "", err
	}
	defer func() { serve.Process.Kill(); serve.Wait() }()
	for range 100 {
		if conn, err := net.Dial("tcp", addr); err == nil {
			conn.Close()
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	root := filepath.Join(work, "roundtrip")
	removeAll(root)
	defer removeAll(root)
	s, err := r.Run(ctx, nil, "", "nix", "--extra-experimental-features", "nix-command", "copy", "--from", "http://"+addr,
		"--to", "local?root="+root, "--option", "trusted-public-keys", pubKey, "--option", "narinfo-cache-negative-ttl", "0", c.Top)
	if err != nil {
		return "", err
	}
	// A chroot store keeps its paths under ROOT/STOREDIR, or, as Nix 2.8
	// does for a store dir other than /nix/store, under ROOT/nix/store.
	n := 0
	for _, p := range c.Paths {
		for _, at := range []string{filepath.Join(root, p.Path), filepath.Join(root, "nix", "store", filepath.Base(p.Path))} {
			if _, err := os.Lstat(at); err == nil {
				n++
				break
			}
		}
	}
	if n != len(c.Paths) {
		return "", errors.New("nix copy left paths out")
	}
	return fmt.Sprintf("stock nix copy --from serve: all %d paths of the updated closure, signatures and NarHashes checked, in %.0f s", n, s.Seconds), nil
}

func minLoad(res *BinDelta) float64 {
	return loadRange(res, func(a, b float64) float64 { return min(a, b) })
}

func maxLoad(res *BinDelta) float64 {
	return loadRange(res, func(a, b float64) float64 { return max(a, b) })
}

func loadRange(res *BinDelta, pick func(a, b float64) float64) float64 {
	v := -1.0
	for _, sc := range res.Scenarios {
		for _, s := range []*Series{sc.PackPlain, sc.PackDelta, sc.ImportPlain, sc.ImportDelta} {
			for _, smp := range s.Samples {
				if v < 0 {
					v = smp.Load1
				}
				v = pick(v, smp.Load1)
			}
		}
	}
	return v
}

// bdBig packs one large path --since its base, with binary deltas, and
// imports it, for peak memory.
func bdBig(ctx context.Context, log *slog.Logger, r *Runner, g *bdGen, bin, work, key, pub string, pkgs []string, bumped map[string]bool) (*BDBig, error) {
	base, update := g.big("big base", pkgs, nil), g.big("big update", pkgs, bumped)
	for _, c := range []*bdClosure{base, update} {
		if _, err := os.Stat(c.Top); err == nil {
			continue
		}
		log.Info("bindelta: generating", "closure", c.Name)
		if err := g.importClosure(ctx, r.Env, c); err != nil {
			return nil, err
		}
	}
	baseOut, site := filepath.Join(work, "big-base"), filepath.Join(work, "big-site")
	if _, err := os.Stat(filepath.Join(site, "nix-cache-info")); err != nil {
		os.RemoveAll(baseOut)
		os.RemoveAll(site)
		if _, err := r.Run(ctx, nil, "", bin, "pack", base.Top, "--mode", "runtime", "--no-build", "--out", baseOut, "--secret-key", key, "--no-progress"); err != nil {
			return nil, err
		}
		if _, err := r.Run(ctx, nil, "", bin, "import", baseOut, "--cache", site, "--public-key", pub, "--no-progress"); err != nil {
			return nil, err
		}
	}
	out := filepath.Join(work, "big-delta")
	os.RemoveAll(out)
	log.Info("bindelta: pack", "scenario", update.Name)
	res := &BDBig{}
	var err error
	if res.Pack, err = r.Run(ctx, nil, "", bin, "pack", update.Top, "--mode", "runtime", "--no-build", "--since", baseOut, "--out", out, "--secret-key", key, "--no-progress"); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(filepath.Join(out, bundle.ManifestName))
	if err != nil {
		return nil, err
	}
	m, err := bundle.ParseManifest(data)
	if err != nil {
		return nil, err
	}
	if len(m.Paths) != 1 || m.Paths[0].Delta == nil {
		return nil, errors.New("the large path was not packed as a delta")
	}
	res.NarBytes, res.DeltaBytes = int64(m.Paths[0].NarSize), int64(m.Paths[0].FileSize)
	log.Info("bindelta: import", "scenario", update.Name)
	if res.Import, err = r.Run(ctx, nil, "", bin, "import", out, "--cache", site, "--public-key", pub, "--no-progress"); err != nil {
		return nil, err
	}
	return res, nil
}
