// Command nix-airgap-bench measures nix-airgap against stock Nix and nginx
// on a generated closure shaped like real ones, and writes
// docs/benchmarks.md with its plots. Run it through bench/run.sh, which
// installs nginx and wrk and builds nix-airgap first.
//
// Everything runs against one hermetic Nix (internal/nixcli.IsolatedEnv)
// with its own store dir under the work dir; servers listen on 127.0.0.1
// only and every run is bounded in time.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Sizes are the closures the flags name.
var Sizes = map[string]Shape{
	"tiny":   {Paths: 40, Total: 16 << 20, MaxPath: 4 << 20, MinPath: 4 << 10, Seed: 9}, // a smoke test of the harness
	"small":  {Paths: 320, Total: 256 << 20, MaxPath: 48 << 20, MinPath: 4 << 10, Seed: 1},
	"medium": {Paths: 400, Total: 2 << 30, MaxPath: 1 << 30, MinPath: 4 << 10, Seed: 2},
	"large":  {Paths: 600, Total: 6 << 30, MaxPath: 1 << 30, MinPath: 4 << 10, Seed: 3},
}

// Results is everything one size's run measured: docs/bench/results-SIZE.json.
type Results struct {
	Size     string    `json:"size"`
	Started  time.Time `json:"started"`
	Machine  Machine   `json:"machine"`
	Closure  Summary   `json:"closure"`
	Runs     int       `json:"runs"`
	XzRuns   int       `json:"xzRuns"`
	Series   []*Series `json:"series"`
	Problems []string  `json:"problems,omitempty"`
}

// Summary describes the generated closure.
type Summary struct {
	Paths       int              `json:"paths"`
	NarBytes    int64            `json:"narBytes"`
	Largest     int64            `json:"largestNar"`
	Smallest    int64            `json:"smallestNar"`
	Quantiles   []int64          `json:"quantiles"` // NAR size at 10, 50, 90 %
	References  int              `json:"references"`
	StoreDir    string           `json:"storeDir"`
	Pool        map[string]int64 `json:"pool"`
	Sources     []string         `json:"sources"`
	ContentMix  map[string]int   `json:"kinds"`
	GenerateSec float64          `json:"generateSeconds"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "nix-airgap-bench:", err)
		os.Exit(1)
	}
}

type bench struct {
	log      *slog.Logger
	size     string
	runs     int
	work     string
	bin      string // nix-airgap
	env      []string
	storeDir storepath.Dir
	r        *Runner
	res      *Results
	closure  *Closure
	key, pub string // key files
	pubKey   string // NAME:BASE64
	duration time.Duration
	resFile  string
	xzRuns   int
}

func run() error {
	var (
		size     = flag.String("size", "small", "closure size: small, medium or large")
		runs     = flag.Int("runs", 0, "runs per measurement (0: 3)")
		work     = flag.String("work", "", "work dir (default /var/tmp/nix-airgap-bench/SIZE)")
		bin      = flag.String("nix-airgap", "", "nix-airgap binary to measure")
		docs     = flag.String("docs", "docs", "docs dir: results in DOCS/bench/results-SIZE.json, plots in DOCS/bench, report in DOCS/benchmarks.md")
		only     = flag.String("only", "gen,pack,upstream,serve,clients,verify,store,gc", "comma-separated sections to run")
		report   = flag.Bool("report-only", false, "only rewrite the report and plots from the results files")
		bindelta = flag.String("bindelta", "", "run only the binary-delta benchmark, on the Debian packages in DEBS/bookworm and DEBS/trixie (bench/bindelta.sh downloads them)")
		methods  = flag.Bool("bindelta-methods", true, "with -bindelta, compare the delta methods too (about 30 minutes); false keeps the last published comparison")
		duration = flag.Duration("wrk-duration", 5*time.Second, "length of each wrk run")
		verbose  = flag.Bool("v", false, "log every command")
		xzRuns   = flag.Int("xz-runs", 0, "runs that include the xz tools (0: all; -1: none), the first ones: Nix's xz takes ~5-10 minutes per GiB on 2 cores")
	)
	flag.Parse()
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	benchDir := filepath.Join(*docs, "bench")
	if *report {
		return writeReport(*docs, benchDir)
	}
	if *bindelta != "" {
		if *bin == "" {
			return errors.New("--nix-airgap is required")
		}
		if *runs == 0 {
			*runs = 3
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return runBinDelta(ctx, log, *bindelta, *work, *bin, *docs, *runs, *methods)
	}
	shape, ok := Sizes[*size]
	if !ok {
		return fmt.Errorf("unknown --size %q", *size)
	}
	if *runs == 0 {
		*runs = 3
	}
	if *xzRuns == 0 || *xzRuns > *runs {
		*xzRuns = *runs
	}
	if *work == "" {
		*work = filepath.Join("/var/tmp/nix-airgap-bench", *size)
	}
	if *bin == "" {
		return errors.New("--nix-airgap is required (bench/run.sh builds it)")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	b := &bench{log: log, size: *size, runs: *runs, work: *work, bin: *bin, duration: *duration, xzRuns: *xzRuns}
	b.storeDir = storepath.Dir(filepath.Join(*work, "store"))
	env, err := nixcli.IsolatedEnv(filepath.Join(*work, "nix"), b.storeDir, "")
	if err != nil {
		return err
	}
	b.env = env
	b.r = &Runner{Log: log, Env: env, Timeout: 2 * time.Hour}
	b.resFile = filepath.Join(benchDir, "results-"+*size+".json")
	b.res = &Results{Size: *size, Started: time.Now().UTC(), Runs: *runs, XzRuns: *xzRuns}
	if old, err := os.ReadFile(b.resFile); err == nil {
		// Sections not run this time keep their earlier results.
		var prev Results
		if json.Unmarshal(old, &prev) == nil {
			b.res.Series = prev.Series
			b.res.Closure = prev.Closure
		}
	}
	b.res.Machine = describeMachine(ctx)
	if err := os.MkdirAll(benchDir, 0o755); err != nil {
		return err
	}

	sections := map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		sections[strings.TrimSpace(s)] = true
	}
	if err := b.ensureClosure(ctx, shape, sections["gen"]); err != nil {
		return err
	}
	if err := b.keys(ctx); err != nil {
		return err
	}
	if err := b.runSections(ctx, sections); err != nil {
		return err
	}
	if err := b.save(); err != nil {
		return err
	}
	printTable(os.Stdout, b.res)
	return writeReport(*docs, benchDir)
}

// runSections runs the measurements sections names, in a fixed order,
// saving the results after each; a section that fails is recorded as a
// problem and the next one runs.
func (b *bench) runSections(ctx context.Context, sections map[string]bool) error {
	steps := []struct {
		name string
		f    func(context.Context) error
	}{
		{"pack", b.packLocal},
		{"upstream", b.packUpstream},
		{"serve", b.serve},
		{"clients", b.clientsSection},
		{"verify", b.verify},
		{"store", b.storeServe},
		{"gc", b.gc},
	}
	for _, s := range steps {
		if !sections[s.name] {
			continue
		}
		b.log.Info("section", "name", s.name, "load", load1())
		if err := s.f(ctx); err != nil {
			b.res.Problems = append(b.res.Problems, fmt.Sprintf("%s: %v", s.name, err))
			b.log.Error("section failed", "name", s.name, "err", err)
		}
		if err := b.save(); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

func (b *bench) save() error {
	return writeJSON(b.resFile, b.res)
}

// put replaces the series of the same scenario and tool.
func (b *bench) put(s *Series) *Series {
	for i, old := range b.res.Series {
		if old.Scenario == s.Scenario && old.Tool == s.Tool {
			if b.xzRuns < 0 && (s.Tool == toolNixXz || s.Tool == toolPackXz) {
				return old // not run now: keep the earlier results
			}
			b.res.Series[i] = s
			return s
		}
	}
	b.res.Series = append(b.res.Series, s)
	return s
}

// ensureClosure generates the closure unless the work dir has it.
func (b *bench) ensureClosure(ctx context.Context, shape Shape, gen bool) error {
	file := filepath.Join(b.work, "closure.json")
	if data, err := os.ReadFile(file); err == nil {
		var c Closure
		if err := json.Unmarshal(data, &c); err == nil && c.Shape == shape {
			nix := &nixcli.Runner{Env: b.env, KnownStoreDir: b.storeDir}
			top, err := b.storeDir.Parse(c.Top)
			if err == nil {
				if ok, err := nix.IsValid(ctx, top); err == nil && ok {
					b.closure = &c
					b.log.Info("gen: reusing closure", "top", c.Top)
					return nil
				}
			}
		}
	}
	if !gen {
		return errors.New("no generated closure in the work dir: run the gen section")
	}
	// A fresh store: the work dir may hold another shape's.
	for _, d := range []string{"store", "nix"} {
		if err := removeAll(filepath.Join(b.work, d)); err != nil {
			return err
		}
	}
	env, err := nixcli.IsolatedEnv(filepath.Join(b.work, "nix"), b.storeDir, "")
	if err != nil {
		return err
	}
	b.env = env
	b.r.Env = env
	roots := []string{}
	for _, r := range []string{"/usr/lib", "/usr/bin", "/usr/sbin", "/usr/libexec", "/usr/share", "/usr/include", "/usr/local/go"} {
		if _, err := os.Stat(r); err == nil {
			roots = append(roots, r)
		}
	}
	start := time.Now()
	c, err := Generate(ctx, b.log, b.env, b.storeDir, roots, shape)
	if err != nil {
		return err
	}
	b.closure = c
	b.res.Closure.GenerateSec = time.Since(start).Seconds()
	return writeJSON(file, c)
}

func (b *bench) keys(ctx context.Context) error {
	b.key = filepath.Join(b.work, "key.sec")
	b.pub = filepath.Join(b.work, "key.pub")
	if _, err := os.Stat(b.pub); err != nil {
		if _, err := b.r.Run(ctx, nil, "", "nix-store", "--generate-binary-cache-key", "bench-1", b.key, b.pub); err != nil {
			return err
		}
	}
	pub, err := os.ReadFile(b.pub)
	if err != nil {
		return err
	}
	b.pubKey = strings.TrimSpace(string(pub))
	return b.summarise(ctx)
}

// summarise records the closure's NAR sizes as Nix sees them.
func (b *bench) summarise(ctx context.Context) error {
	nix := &nixcli.Runner{Env: b.env, KnownStoreDir: b.storeDir}
	var paths []storepath.Path
	for _, p := range b.closure.Paths {
		sp, err := b.storeDir.Parse(p.Path)
		if err != nil {
			return err
		}
		paths = append(paths, sp)
	}
	infos, err := nix.PathInfo(ctx, paths...)
	if err != nil {
		return err
	}
	s := &b.res.Closure
	s.Paths, s.NarBytes, s.References = len(infos), 0, 0
	var sizes []int64
	for _, in := range infos {
		s.NarBytes += int64(in.NarSize)
		s.References += len(in.References)
		sizes = append(sizes, int64(in.NarSize))
	}
	sortInt64(sizes)
	s.Smallest, s.Largest = sizes[0], sizes[len(sizes)-1]
	s.Quantiles = []int64{sizes[len(sizes)/10], sizes[len(sizes)/2], sizes[len(sizes)*9/10]}
	s.StoreDir = string(b.storeDir)
	s.Pool = b.closure.Pool
	s.Sources = b.closure.Sources
	s.ContentMix = map[string]int{}
	for _, p := range b.closure.Paths {
		s.ContentMix[p.Kind]++
	}
	return nil
}

// freshEnv is the isolated environment with an empty narinfo cache, so
// that no run profits from an earlier one's lookups.
func (b *bench) freshEnv() []string {
	dir, _ := os.MkdirTemp(filepath.Join(b.work, "nix/tmp"), "cache-")
	env := make([]string, 0, len(b.env))
	for _, e := range b.env {
		if strings.HasPrefix(e, "XDG_CACHE_HOME=") {
			e = "XDG_CACHE_HOME=" + dir
		}
		env = append(env, e)
	}
	return env
}

// Machine describes where the numbers were taken.
type Machine struct {
	CPU      string   `json:"cpu"`
	Cores    int      `json:"cores"`
	MemGiB   float64  `json:"memGiB"`
	Kernel   string   `json:"kernel"`
	Disk     string   `json:"disk"`
	Versions []string `json:"versions"`
	GoArch   string   `json:"goarch"`
}

func describeMachine(ctx context.Context) Machine {
	m := Machine{Cores: runtime.NumCPU(), GoArch: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				m.CPU = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb float64
		fmt.Sscanf(strings.SplitN(string(b), "\n", 2)[0], "MemTotal: %f kB", &kb)
		m.MemGiB = kb / (1 << 20)
	}
	m.Kernel = cmdOut(ctx, "uname", "-sr")
	m.Disk = cmdOut(ctx, "sh", "-c", "df -hT /var/tmp | tail -1 | awk '{print $1\" \"$2\", \"$3\" total\"}'; cat /sys/block/$(lsblk -no pkname $(df /var/tmp | tail -1 | cut -d' ' -f1) 2>/dev/null | head -1)/queue/rotational 2>/dev/null | sed 's/0/(non-rotational)/;s/^1$/(rotational)/'")
	for _, v := range [][]string{
		{"nix", "--version"}, {"nginx", "-v"}, {"sh", "-c", "wrk -v 2>&1 | head -1"}, {"go", "version"},
	} {
		m.Versions = append(m.Versions, cmdOut(ctx, v...))
	}
	return m
}

func isolatedEnv(root string, b *bench) ([]string, error) {
	return nixcli.IsolatedEnv(root, b.storeDir, "")
}
