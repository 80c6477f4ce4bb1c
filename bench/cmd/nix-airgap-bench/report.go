package main

import (
	"encoding/json"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// metric says how a comparison's ratio is computed from paired samples.
type metric int

const (
	speedup    metric = iota // baseline seconds / tool seconds
	sizeRel                  // tool bytes / baseline bytes
	narSizeRel               // the same for the NAR files alone: compression, without a bundle's manifest
	rateRel                  // tool value / baseline value
	timeRel                  // tool seconds / baseline seconds
	cpuRel                   // tool CPU seconds / baseline CPU seconds
)

// comparison is one goal: a tool against its baseline, pair by pair.
type comparison struct {
	scenario, tool, baseline string
	metric                   metric
	goal                     string
	ok                       func(float64) bool // judged on the median ratio
}

func comparisons() []comparison {
	var cs = []comparison{
		{scPackLocal, toolPackZstd, toolNixZstd, speedup, "≥ 1.5x faster than nix copy zstd", func(r float64) bool { return r >= 1.5 }},
		{scPackLocal, toolPackZstd, toolNixZstd, narSizeRel, "≤ 1.02x nix copy zstd's size", func(r float64) bool { return r <= 1.02 }},
		{scPackLocal, toolPackZstd, toolNixZstd, sizeRel, "(no goal: the whole bundle, manifest included, against nix copy's whole cache)", nil},
		{scPackLocal, toolPackZstd, toolNixXz, speedup, "≥ 10x faster than nix copy's default (xz)", func(r float64) bool { return r >= 10 }},
		{scPackLocal, toolPackZstd, toolNixXz, sizeRel, "(no goal: the size the default costs against xz)", nil},
		{scPackLocal, toolPackXz, toolNixXz, speedup, "no slower than nix copy xz (≥ 1x)", func(r float64) bool { return r >= 1 }},
		{scPackLocal, toolPackXz, toolNixXz, narSizeRel, "no larger than nix copy xz (≤ 1x)", func(r float64) bool { return r <= 1.0 }},
		{scPackLocal, toolPackXz, toolNixXz, sizeRel, "(no goal: the whole bundle, manifest included, against nix copy's whole cache)", nil},
		{scPackUpstream, toolPackZstd, toolNixXz, speedup, "≥ 3x faster than nix copy --from http:// --to file://", func(r float64) bool { return r >= 3 }},
		{scPackUpstream, toolPackZstd, toolNixZstd, speedup, "(no goal: against nix copy re-compressing with zstd)", nil},
	}
	// Many connections are judged by what 32 clients see (scClients);
	// bench/analysis.md has the net/http floor under wrk's 16 and 64.
	cs = append(cs, comparison{scNarinfo(1), toolServe, toolNginx, rateRel, "narinfo req/s ≥ 0.8x nginx", func(r float64) bool { return r >= 0.8 }})
	for _, c := range wrkConns[1:] {
		cs = append(cs, comparison{scNarinfo(c), toolServe, toolNginx, rateRel, "(no goal: 32 nix copy clients are the goal with many connections; bench/analysis.md has net/http's floor)", nil})
	}
	cs = append(cs,
		comparison{scNAR, toolServe, toolNginx, rateRel, "NAR throughput ≥ 0.9x nginx", func(r float64) bool { return r >= 0.9 }},
		comparison{scClient, toolServe, toolNginx, timeRel, "nix copy --from takes ≤ 1.1x nginx's time", func(r float64) bool { return r <= 1.1 }},
		comparison{scClients, toolServe, toolNginx, timeRel, "32 clients' nix copy --from at once take ≤ 1.05x nginx's time", func(r float64) bool { return r <= 1.05 }},
		comparison{scVerify, toolVerifyCold, toolCatCold, speedup, "verify ≥ 80% of the disk's read rate (cat, cold cache)", func(r float64) bool { return r >= 0.8 }},
		comparison{scVerify, toolDeepCold, toolCatCold, speedup, "(no goal: verify --deep, which also decompresses every NAR and checks its NarHash, against cat, cold cache)", nil},
		comparison{scVerify, toolImportCold, toolCatCold, speedup, "(no goal: import, which verifies deeply, against cat, cold cache)", nil},
		comparison{scVerify, toolVerifyWarm, toolCatWarm, speedup, "(no goal: verify against cat from the page cache)", nil},
		comparison{scStoreNAR, toolServeStore, toolDumpZstd, speedup, "serve --nix-store NAR throughput ≥ 0.8x nix-store --dump PATH piped to zstd", func(r float64) bool { return r >= 0.8 }},
		comparison{scStoreBig, toolServeStore, toolDumpZstd, speedup, "serve --nix-store NAR throughput ≥ 0.8x nix-store --dump PATH piped to zstd", func(r float64) bool { return r >= 0.8 }},
		comparison{scStoreNarinfo, toolNarinfoAgain, toolNarinfoFirst, speedup, "(no goal: narinfos from memory against the first requests, which ask Nix)", nil},
		comparison{scGC, toolGCNoWait, toolRm, speedup, "(no goal: gc, which reads every narinfo and record first, against removing the same files)", nil},
	)
	return cs
}

func (r *Results) find(scenario, tool string) *Series {
	for _, s := range r.Series {
		if s.Scenario == scenario && s.Tool == tool {
			return s
		}
	}
	return nil
}

// ratios pairs run i of the tool with run i of the baseline.
func ratios(t, base *Series, m metric) []float64 {
	var out []float64
	for i := 0; i < len(t.Samples) && i < len(base.Samples); i++ {
		a, b := t.Samples[i], base.Samples[i]
		var r float64
		switch m {
		case speedup:
			r = b.Seconds / a.Seconds
		case sizeRel:
			r = float64(a.Bytes) / float64(b.Bytes)
		case narSizeRel:
			r = float64(a.NarBytes) / float64(b.NarBytes)
		case rateRel:
			r = a.Value / b.Value
		case timeRel:
			r = a.Seconds / b.Seconds
		case cpuRel:
			r = a.CPU / b.CPU
		}
		if !math.IsNaN(r) && !math.IsInf(r, 0) {
			out = append(out, r)
		}
	}
	return out
}

func mib(b float64) float64 { return b / (1 << 20) }

func fmtStat(s Stat, f string) string {
	return fmt.Sprintf(f+" ["+f+"–"+f+"]", s.Med, s.Min, s.Max)
}

// printTable prints the goals and every series' medians.
func printTable(w io.Writer, r *Results) {
	fmt.Fprintf(w, "\n%s closure: %d paths, %.0f MiB of NARs, %d runs each\n", r.Size, r.Closure.Paths, mib(float64(r.Closure.NarBytes)), r.Runs)
	fmt.Fprintf(w, "%-42s %-38s %-12s %s\n", "scenario", "tool", "median", "min–max")
	for _, s := range r.Series {
		st, unit := headline(s, r)
		fmt.Fprintf(w, "%-42s %-38s %-12s %.2f–%.2f %s\n", s.Scenario, s.Tool, fmt.Sprintf("%.2f", st.Med), st.Min, st.Max, unit)
	}
	fmt.Fprintln(w)
	for _, c := range comparisons() {
		t, b := r.find(c.scenario, c.tool), r.find(c.scenario, c.baseline)
		if t == nil || b == nil {
			continue
		}
		rs := ratios(t, b, c.metric)
		if len(rs) == 0 {
			fmt.Fprintf(w, "%-6s %-42s %s vs %s: not run at this size  %s\n", "-", c.scenario, c.tool, c.baseline, c.goal)
			continue
		}
		st := stat(rs)
		fmt.Fprintf(w, "%-6s %-42s %s vs %s: %.2fx [%.2f–%.2f]  %s\n", verdict(c, st), c.scenario, c.tool, c.baseline, st.Med, st.Min, st.Max, c.goal)
	}
}

func verdict(c comparison, s Stat) string {
	switch {
	case c.ok == nil:
		return "info"
	case c.ok(s.Med):
		return "MET"
	}
	return "NOT MET"
}

// headline is the number a series is judged by: seconds, or a rate.
func headline(s *Series, r *Results) (Stat, string) {
	if strings.HasPrefix(s.Scenario, "narinfo") {
		return stat(s.field(func(x Sample) float64 { return x.Value })), "req/s"
	}
	if s.Scenario == scNAR {
		return stat(s.field(func(x Sample) float64 { return mib(x.Value) })), "MiB/s"
	}
	return stat(s.field(func(x Sample) float64 { return x.Seconds })), "s"
}

// throughput is what a timed series moves per second, MiB/s: the
// closure's NAR bytes for pack and client copies, the bundle's bytes for
// verify.
func throughput(s *Series, r *Results) Stat {
	return stat(s.field(func(x Sample) float64 {
		n := float64(r.Closure.NarBytes)
		switch s.Scenario {
		case scVerify:
			n = float64(x.Bytes)
		case scStoreBig:
			n = float64(r.Closure.Largest)
		case scGC:
			n = 0 // nothing moves
		}
		return mib(n) / x.Seconds
	}))
}

func loadAll(benchDir string) ([]*Results, error) {
	var all []*Results
	for _, size := range []string{"tiny", "small", "medium", "large"} {
		data, err := os.ReadFile(filepath.Join(benchDir, "results-"+size+".json"))
		if err != nil {
			continue
		}
		var r Results
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, fmt.Errorf("results-%s.json: %w", size, err)
		}
		all = append(all, &r)
	}
	if len(all) == 0 {
		return nil, fmt.Errorf("no results-*.json in %s", benchDir)
	}
	return all, nil
}

// writeReport writes docs/benchmarks.md and the plots from every size's
// results.
func writeReport(docs, benchDir string) error {
	all, err := loadAll(benchDir)
	if err != nil {
		return err
	}
	plots, err := writePlots(benchDir, all)
	if err != nil {
		return err
	}
	var w strings.Builder
	renderMarkdown(&w, all, plots, benchDir, docs)
	return os.WriteFile(filepath.Join(docs, "benchmarks.md"), []byte(w.String()), 0o644)
}

// bar is one bar of a plot: a tool's median with its range, for a size.
type bar struct {
	label string
	size  string
	st    Stat
}

// barPlot draws horizontal bars grouped by label, one colour per size,
// with min–max error bars.
func barPlot(file, title, xlabel string, bars []bar) error {
	var labels, sizes []string
	for _, b := range bars {
		if !slices.Contains(labels, b.label) {
			labels = append(labels, b.label)
		}
		if !slices.Contains(sizes, b.size) {
			sizes = append(sizes, b.size)
		}
	}
	if len(labels) == 0 {
		return nil
	}
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xlabel
	p.X.Min = 0
	height := vg.Points(float64(80 + len(labels)*(14+22*len(sizes))))
	perUnit := float64(height-80) / float64(len(labels))
	group := 0.8
	for k, size := range sizes {
		vals := make(plotter.Values, len(labels))
		errs := make(errXY, len(labels))
		xmin := -group/2 + group/float64(len(sizes))*(float64(k)+0.5)
		for j, l := range labels {
			i := len(labels) - 1 - j // the first label on top
			errs[i] = errPoint{y: float64(i) + xmin}
			for _, b := range bars {
				if b.label == l && b.size == size {
					vals[i] = b.st.Med
					errs[i] = errPoint{x: b.st.Med, y: float64(i) + xmin, lo: b.st.Med - b.st.Min, hi: b.st.Max - b.st.Med}
				}
			}
		}
		bc, err := plotter.NewBarChart(vals, vg.Points(perUnit*group/float64(len(sizes))*0.9))
		if err != nil {
			return err
		}
		bc.Horizontal = true
		bc.XMin = xmin
		bc.Color = plotutil.Color(k)
		bc.LineStyle.Width = 0
		p.Add(bc)
		eb, err := plotter.NewXErrorBars(errs)
		if err != nil {
			return err
		}
		eb.LineStyle.Color = color.Black
		p.Add(eb)
		if len(sizes) > 1 {
			p.Legend.Add(size, bc)
		}
	}
	rev := slices.Clone(labels)
	slices.Reverse(rev)
	for i := range rev {
		rev[i] = "   " + rev[i] // gonum measures labels a little short
	}
	p.NominalY(rev...)
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	return p.Save(vg.Points(720), height, file)
}

type errPoint struct{ x, y, lo, hi float64 }
type errXY []errPoint

func (e errXY) Len() int                        { return len(e) }
func (e errXY) XY(i int) (float64, float64)     { return e[i].x, e[i].y }
func (e errXY) XError(i int) (float64, float64) { return e[i].lo, e[i].hi }

// writePlots draws every plot and returns their file names with titles.
func writePlots(benchDir string, all []*Results) ([][2]string, error) {
	var made [][2]string
	short := func(scenario, tool string) string {
		switch scenario {
		case scPackLocal:
			return "local: " + tool
		case scPackUpstream:
			return "upstream: " + tool
		case scClient:
			return "nix copy --from " + tool
		case scClients:
			return "32 clients from " + tool
		}
		return tool
	}
	collect := func(scenarios []string, f func(*Series, *Results) Stat) []bar {
		var bars []bar
		for _, r := range all {
			for _, s := range r.Series {
				if slices.Contains(scenarios, s.Scenario) && len(s.Samples) > 0 {
					bars = append(bars, bar{short(s.Scenario, s.Tool), r.Size, f(s, r)})
				}
			}
		}
		return bars
	}
	secs := func(s *Series, _ *Results) Stat { return stat(s.field(func(x Sample) float64 { return x.Seconds })) }
	plots := []struct {
		file, title, xlabel string
		bars                []bar
	}{
		{"pack-time.png", "Pack: wall time (median, min–max)", "seconds", collect([]string{scPackLocal, scPackUpstream}, secs)},
		{"pack-throughput.png", "Pack: NAR bytes per second (median, min–max)", "MiB/s of NAR", collect([]string{scPackLocal, scPackUpstream}, throughput)},
		{"pack-rss.png", "Pack: peak resident memory (median, min–max)", "MiB", collect([]string{scPackLocal, scPackUpstream}, func(s *Series, _ *Results) Stat {
			return stat(s.field(func(x Sample) float64 { return mib(float64(x.MaxRSS)) }))
		})},
		{"serve-client-time.png", "Serve: nix copy --from http://SERVER, fresh store (median, min–max)", "seconds", collect([]string{scClient}, secs)},
		{"serve-clients-time.png", "Serve: 32 clients' nix copy --from http://SERVER at once, fresh stores (median, min–max)", "seconds", collect([]string{scClients}, secs)},
		{"serve-nar-throughput.png", "Serve: NAR downloads, wrk with 4 connections (median, min–max)", "MiB/s", collect([]string{scNAR}, func(s *Series, _ *Results) Stat {
			return stat(s.field(func(x Sample) float64 { return mib(x.Value) }))
		})},
		{"verify-throughput.png", "Verify and import: bundle bytes per second (median, min–max)", "MiB/s", collect([]string{scVerify}, throughput)},
	}
	var narinfoBars []bar
	for _, r := range all {
		for _, c := range wrkConns {
			for _, tool := range []string{toolNginx, toolServe} {
				if s := r.find(scNarinfo(c), tool); s != nil && len(s.Samples) > 0 {
					narinfoBars = append(narinfoBars, bar{fmt.Sprintf("%s, %d conn.", tool, c), r.Size, stat(s.field(func(x Sample) float64 { return x.Value }))})
				}
			}
		}
	}
	plots = append(plots, struct {
		file, title, xlabel string
		bars                []bar
	}{"serve-narinfo-rps.png", "Serve: narinfo requests per second, wrk (median, min–max)", "requests/s", narinfoBars})
	for _, pl := range plots {
		if len(pl.bars) == 0 {
			continue
		}
		if err := barPlot(filepath.Join(benchDir, pl.file), pl.title, pl.xlabel, pl.bars); err != nil {
			return nil, fmt.Errorf("plot %s: %w", pl.file, err)
		}
		made = append(made, [2]string{pl.file, pl.title})
	}
	return made, nil
}

// renderMarkdown writes docs/benchmarks.md.
func renderMarkdown(w *strings.Builder, all []*Results, plots [][2]string, benchDir, docs string) {
	rel := func(p string) string {
		r, err := filepath.Rel(docs, p)
		if err != nil {
			return p
		}
		return r
	}
	fmt.Fprintf(w, "# Benchmarks\n\n")
	fmt.Fprintf(w, "<!-- Generated by bench/run.sh (bench/cmd/nix-airgap-bench): do not edit by hand; edit bench/analysis.md or the generator. -->\n\n")
	fmt.Fprintf(w, "nix-airgap against stock Nix (`nix copy`) and nginx on a generated closure shaped like real ones. ")
	fmt.Fprintf(w, "Every figure is the median of several runs with the minimum and maximum in brackets; a ratio is computed run by run (run *i* of the tool against run *i* of its baseline, which ran right before or after it) and then summarised the same way.\n\n")
	fmt.Fprintf(w, "## Reproduce\n\n```sh\nbench/run.sh large -- -xz-runs -1   # as published: every tool but the xz ones, 3 runs (about 20 minutes)\nbench/run.sh small -- -xz-runs 1    # as published: the xz tools in the first run only\nbench/run.sh tiny                   # a smoke test of the harness\nbench/bindelta.sh -- -runs 3        # binary deltas on Debian bookworm and trixie binaries (below)\n```\n\n")
	fmt.Fprintf(w, "`bench/run.sh` installs nginx, wrk and GNU time from Debian when they are missing (`bench/setup.sh`), builds `nix-airgap`, generates the closure into a hermetic Nix store under `/var/tmp/nix-airgap-bench/SIZE` (reused by later runs), runs every measurement, prints a table, and rewrites this file and the plots in `docs/bench/` from `docs/bench/results-SIZE.json`. It must run as root (the cold-cache runs write `/proc/sys/vm/drop_caches`). Servers listen on 127.0.0.1 only; every command has a time limit. `bench/run.sh --report-only` redraws this page from the JSON files.\n\n")

	if data, err := os.ReadFile(filepath.Join(filepath.Dir(docs), "bench", "analysis.md")); err == nil {
		w.Write(data)
		w.WriteString("\n")
	}

	for _, r := range all {
		renderSize(w, r)
	}
	renderBinDelta(w, benchDir)
	fmt.Fprintf(w, "## Plots\n\n")
	for _, p := range plots {
		fmt.Fprintf(w, "![%s](%s)\n\n", p[1], rel(filepath.Join(benchDir, p[0])))
	}
}

// renderSize writes the section of one size: how it ran, its goals and
// a table per scenario.
func renderSize(w *strings.Builder, r *Results) {
	m := r.Machine
	fmt.Fprintf(w, "## Size %s\n\n", r.Size)
	fmt.Fprintf(w, "Last invocation started %s (sections not run then keep their earlier results), %d runs per figure", r.Started.Format("2006-01-02 15:04 UTC"), r.Runs)
	switch {
	case r.XzRuns < 0 && slices.ContainsFunc(r.Series, func(s *Series) bool {
		return (s.Tool == toolNixXz || s.Tool == toolPackXz) && len(s.Samples) > 0
	}):
		w.WriteString(" (the xz tools were not run then: their figures come from an earlier invocation, whose runs the ratios against them pair with this one's)")
	case r.XzRuns < 0:
		w.WriteString(" (the xz tools were not run at this size: Nix's xz alone takes about 6 minutes per GiB here)")
	case r.XzRuns < r.Runs:
		fmt.Fprintf(w, " (%d for the xz tools, whose runs take minutes each: their ratios pair the first %d runs)", r.XzRuns, r.XzRuns)
	}
	w.WriteString(".\n\n")
	fmt.Fprintf(w, "**Machine**: %s, %d cores, %.1f GiB memory, %s, disk %s; %s.\n\n", m.CPU, m.Cores, m.MemGiB, m.Kernel, m.Disk, strings.Join(m.Versions, "; "))
	var loads []float64
	for _, s := range r.Series {
		loads = append(loads, s.field(func(x Sample) float64 { return x.Load1 })...)
	}
	ls := stat(loads)
	fmt.Fprintf(w, "**Load**: the one-minute load average before each run was %.1f median (%.1f–%.1f) on %d cores", ls.Med, ls.Min, ls.Max, m.Cores)
	// The benchmark's own runs load the machine too (wrk, a server
	// and the client each keep a core busy): only well beyond that
	// does someone else share it.
	if ls.Med > 2*float64(m.Cores) {
		fmt.Fprintf(w, ": **the machine was shared and loaded** (other engineers' builds and tests ran on the same cores), so absolute numbers are pessimistic and noisy; the pairwise ratios, whose two sides ran back to back, are the more trustworthy figures")
	}
	fmt.Fprintf(w, ".\n\n")
	c := r.Closure
	fmt.Fprintf(w, "**Closure**: %d store paths, %.1f MiB of NARs (%d references), NAR sizes from %.1f KiB to %.1f MiB (10%%/50%%/90%%: %s), in store dir `%s`. ",
		c.Paths, mib(float64(c.NarBytes)), c.References, float64(c.Smallest)/1024, mib(float64(c.Largest)), quantiles(c.Quantiles), c.StoreDir)
	fmt.Fprintf(w, "Path kinds: %s. Contents are this machine's own files (ELF binaries and libraries, text, already-compressed files) taken from %s, so compression ratios are those of real packages; each path also lists its references in `nix-support/references`, as real paths embed store paths. The generator streams each path in `nix-store --export` format into `nix-store --import`.\n\n", kindsText(c.ContentMix), "`"+strings.Join(c.Sources, "`, `")+"`")

	fmt.Fprintf(w, "**Setup**: `$WORK` is `/var/tmp/nix-airgap-bench/%s` and `$TOP` the closure's top path. Nix runs in `$WORK`'s own isolated environment (`NIX_STORE_DIR=$WORK/store`, `NIX_STATE_DIR=$WORK/nix/var/nix`, `NIX_CONF_DIR=$WORK/nix/etc` with `substituters =`, and a fresh, empty `XDG_CACHE_HOME` per run so no run profits from an earlier one's narinfo lookups). The key pair comes from `nix-store --generate-binary-cache-key bench-1 $WORK/key.sec $WORK/key.pub`; `$PUBKEY` is the public key's text. For the upstream scenario the closure is first put in an upstream cache with `nix copy --to 'file://$WORK/upstream-zstd?compression=zstd&secret-key=$WORK/key.sec' $TOP` (zstd, as cache.nixos.org's recent uploads are) and served by nginx on 127.0.0.1 (`$UPSTREAM`); both tools then run against a second Nix database (`$WORK/nix-empty`, emptied before every run) in which the closure is not valid, so everything comes from upstream. nginx runs as `nginx -p DIR -c DIR/nginx.conf` with `worker_processes auto; sendfile on; tcp_nopush on; access_log off; keepalive_requests 1000000;` and the served directory as `root`; `nix-airgap serve $WORK/out/pack-zstd --listen 127.0.0.1:PORT --log-level warn` serves the same bundle, without access logs as nginx (`$SERVER` is either's address). wrk uses 2 threads (1 for one connection) and a Lua script that cycles through every narinfo (or NAR) URL of the bundle. Times are wall clock; peak RSS is wait4's `ru_maxrss` of the measured process itself.\n\n", r.Size)
	renderGoals(w, r)
	for _, p := range r.Problems {
		fmt.Fprintf(w, "**Problem in this run**: %s\n\n", p)
	}

	canon := []string{scPackLocal, scPackUpstream}
	for _, c := range wrkConns {
		canon = append(canon, scNarinfo(c))
	}
	canon = append(canon, scNAR, scClient, scClients, scVerify, scStoreNAR, scStoreBig, scStoreNarinfo, scGC)
	var scenarios []string
	for _, sc := range canon {
		if slices.ContainsFunc(r.Series, func(s *Series) bool { return s.Scenario == sc }) {
			scenarios = append(scenarios, sc)
		}
	}
	for _, sc := range scenarios {
		renderScenario(w, r, sc)
	}
}

// renderGoals writes the table of goals, each with its paired ratio.
func renderGoals(w *strings.Builder, r *Results) {
	c := r.Closure
	fmt.Fprintf(w, "### Goals\n\n| | comparison | goal | ratio, median [min–max] |\n|---|---|---|---|\n")
	for _, cm := range comparisons() {
		t, b := r.find(cm.scenario, cm.tool), r.find(cm.scenario, cm.baseline)
		if t == nil || b == nil {
			continue
		}
		rs := ratios(t, b, cm.metric)
		if len(rs) == 0 {
			fmt.Fprintf(w, "| ➖ not measured | %s: %s vs %s | %s | (not run at this size) |\n", cm.scenario, cm.tool, cm.baseline, cm.goal)
			continue
		}
		st := stat(rs)
		what := map[metric]string{speedup: "speed-up", sizeRel: "size", narSizeRel: "size of the NAR files", rateRel: "rate", timeRel: "time", cpuRel: "CPU time"}[cm.metric]
		fmt.Fprintf(w, "| %s | %s: %s vs %s (%s) | %s | %.2fx [%.2f–%.2f] |\n", verdictMark(cm, st), cm.scenario, cm.tool, cm.baseline, what, cm.goal, st.Med, st.Min, st.Max)
	}
	if s := r.find(scPackLocal, toolPackZstd); s != nil {
		rss := stat(s.field(func(x Sample) float64 { return mib(float64(x.MaxRSS)) }))
		ok := "❌ not met"
		if rss.Max < 200 {
			ok = "✅ met"
		}
		note := ""
		if c.Largest < 1<<30 {
			note = fmt.Sprintf(" (this closure's largest path is %.0f MiB, not 1 GiB: the goal is judged on the medium and large sizes)", mib(float64(c.Largest)))
			if ok == "✅ met" {
				ok = "✅ met here"
			}
		}
		fmt.Fprintf(w, "| %s | peak RSS of nix-airgap pack | < 200 MiB for a closure with a 1 GiB path%s | %s MiB |\n", ok, note, fmtStat(rss, "%.0f"))
	}
	if s := r.find(scGC, toolGC); s != nil && len(s.Samples) > 0 {
		secs := stat(s.field(func(x Sample) float64 { return x.Seconds }))
		ok := "❌ not met"
		if secs.Max < 10 {
			ok = "✅ met"
		}
		fmt.Fprintf(w, "| %s | %s | takes seconds (< 10 s, the %.0f s it waits for servers included) | %s s |\n", ok, scGC, cache.RemovalGrace.Seconds(), fmtStat(secs, "%.2f"))
	}
	w.WriteString("\n")
}

// renderScenario writes one scenario's table and commands.
func renderScenario(w *strings.Builder, r *Results, sc string) {
	fmt.Fprintf(w, "### %s\n\n", sc)
	wrk := strings.HasPrefix(sc, "narinfo") || sc == scNAR
	hasCPU := false
	if wrk {
		fmt.Fprintf(w, "| tool | rate | p50 ms | p90 ms | p99 ms | socket errors, all runs |\n|---|---|---|---|---|---|\n")
	} else {
		hasCPU = slices.ContainsFunc(r.Series, func(s *Series) bool { return s.Scenario == sc && len(s.Samples) > 0 && s.Samples[0].CPU > 0 })
		if hasCPU {
			fmt.Fprintf(w, "| tool | time s | MiB/s | output MiB | peak RSS MiB | CPU s |\n|---|---|---|---|---|---|\n")
		} else {
			fmt.Fprintf(w, "| tool | time s | MiB/s | output MiB | peak RSS MiB |\n|---|---|---|---|---|\n")
		}
	}
	var cmds []string
	for _, s := range r.Series {
		if s.Scenario != sc || len(s.Samples) == 0 {
			continue
		}
		if c := "# " + s.Tool + "\n" + s.Command; !slices.ContainsFunc(cmds, func(x string) bool { return strings.HasSuffix(x, "\n"+s.Command) }) {
			cmds = append(cmds, c)
		} else {
			for i, x := range cmds {
				if strings.HasSuffix(x, "\n"+s.Command) {
					cmds[i] = strings.Replace(x, "\n", ", "+s.Tool+"\n", 1)
				}
			}
		}
		if wrk {
			st, unit := headline(s, r)
			f := func(g func(Sample) float64) string { return fmtStat(stat(s.field(g)), "%.3f") }
			errs := 0
			for _, x := range s.Samples {
				errs += x.Errors
			}
			fmt.Fprintf(w, "| %s | %s %s | %s | %s | %s | %d |\n", s.Tool, fmtStat(st, "%.0f"), unit,
				f(func(x Sample) float64 { return x.P50 }), f(func(x Sample) float64 { return x.P90 }), f(func(x Sample) float64 { return x.P99 }), errs)
		} else {
			out := "–"
			if s.Samples[0].Bytes > 0 {
				out = fmtStat(stat(s.field(func(x Sample) float64 { return mib(float64(x.Bytes)) })), "%.1f")
			}
			rss := fmtStat(stat(s.field(func(x Sample) float64 { return mib(float64(x.MaxRSS)) })), "%.0f")
			if strings.HasPrefix(s.Command, "bash") || strings.HasPrefix(s.Command, "sync") && strings.Contains(s.Command, "xargs") {
				rss = "–"
			}
			cpu := ""
			if hasCPU {
				cpu = " – |"
				if s.Samples[0].CPU > 0 {
					cpu = " " + fmtStat(stat(s.field(func(x Sample) float64 { return x.CPU })), "%.1f") + " |"
				}
			}
			rate := fmtStat(throughput(s, r), "%.1f")
			if sc == scStoreNarinfo || sc == scGC {
				rate = "–" // no NAR moves
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s |%s\n", s.Tool, fmtStat(headlineSecs(s), "%.2f"), rate, out, rss, cpu)
		}
	}
	w.WriteString("\n")
	for _, s := range r.Series {
		if s.Scenario == sc && s.Note != "" {
			fmt.Fprintf(w, "%s: %s.\n\n", s.Tool, s.Note)
		}
	}
	fmt.Fprintf(w, "Commands, in the order each run ran them:\n\n```sh\n%s\n```\n\n", strings.Join(cmds, "\n"))
}

func headlineSecs(s *Series) Stat { return stat(s.field(func(x Sample) float64 { return x.Seconds })) }

func verdictMark(c comparison, s Stat) string {
	switch verdict(c, s) {
	case "MET":
		return "✅ met"
	case "NOT MET":
		return "❌ not met"
	}
	return "ℹ️"
}

func quantiles(q []int64) string {
	var parts []string
	for _, v := range q {
		if v < 1<<20 {
			parts = append(parts, fmt.Sprintf("%.0f KiB", float64(v)/1024))
		} else {
			parts = append(parts, fmt.Sprintf("%.1f MiB", mib(float64(v))))
		}
	}
	return strings.Join(parts, " / ")
}

func kindsText(m map[string]int) string {
	var parts []string
	for _, k := range kinds {
		if n := m[k.name]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, k.name))
		}
	}
	return strings.Join(parts, ", ")
}
