package main

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
)

// renderBinDelta writes the binary-delta section from bindelta.json, if
// there is one.
func renderBinDelta(w *strings.Builder, benchDir string) {
	r, err := loadBinDelta(benchDir)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		fmt.Fprintf(w, "## Binary deltas\n\n%v\n\n", err)
		return
	}
	m := r.Machine
	fmt.Fprintf(w, "## Binary deltas\n\n")
	fmt.Fprintf(w, "`bench/bindelta.sh` (run %s, %d runs per figure): %d Debian packages of real binaries, in a hermetic store under `/var/tmp/nix-airgap-bench/bindelta`, one store path each (`dpkg-deb -x` of bookworm's .deb) plus a top path; each path refers to up to three others, and its own store path and its references' are written into every file (a block of store paths at the start and every 256 KiB, as rpaths and shebangs carry them). The base is packed whole and imported into a cache; each update is then packed `--since` the base with `--binary-deltas=false` (the plain delta) and with binary deltas, in alternating runs, and each bundle imported into a fresh copy of the cache.\n\n",
		r.Started.Format("2006-01-02 15:04 UTC"), r.Runs, r.Packages)
	fmt.Fprintf(w, "- **mass rebuild**: every path rebuilt, new store hashes written in its files, nothing else changed.\n")
	fmt.Fprintf(w, "- **version bumps**: the mass rebuild, and %d of the %d packages (every tenth by name: %s) replaced by trixie's build of the same package.\n\n", len(r.Bumped), r.Packages, strings.Join(r.Bumped, ", "))
	fmt.Fprintf(w, "**Machine**: %s, %d cores, %.1f GiB memory; %s.\n\n", m.CPU, m.Cores, m.MemGiB, r.Load)
	fmt.Fprintf(w, "| scenario | NAR | plain delta | with binary deltas | ratio (goal) | paths as deltas | pack, plain | pack, deltas | pack ratio (goal ≤ 2) / of CPU | import, plain / deltas | rebuilt NAR per second of wall (goal ≥ 100 MiB/s) / of CPU | peak RSS pack / import |\n")
	fmt.Fprintf(w, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, sc := range r.Scenarios {
		goal := "≤ 3%"
		if sc.Name == "version bumps" {
			goal = "≤ 25%"
		}
		pp, pd := stat(sc.PackPlain.field(secs)), stat(sc.PackDelta.field(secs))
		id := stat(sc.ImportDelta.field(secs))
		ip := stat(sc.ImportPlain.field(secs))
		cpuRate := stat(sc.ImportDelta.field(func(s Sample) float64 { return float64(sc.RebuiltNar) / s.CPU / (1 << 20) }))
		ratio := stat(ratios(sc.PackDelta, sc.PackPlain, timeRel))
		cpuRatio := stat(ratios(sc.PackDelta, sc.PackPlain, cpuRel))
		rate := stat(sc.ImportDelta.field(func(s Sample) float64 { return float64(sc.RebuiltNar) / s.Seconds }))
		rss := stat(sc.PackDelta.field(func(s Sample) float64 { return float64(s.MaxRSS) }))
		irss := stat(sc.ImportDelta.field(func(s Sample) float64 { return float64(s.MaxRSS) }))
		fmt.Fprintf(w, "| %s | %.1f MiB, %d paths | %.1f MiB | %.2f MiB | **%.2f%%** (%s) | %d | %s s | %s s | **%s** / %.2f | %s / %s s | **%s** / %s MiB/s | %.0f / %.0f MiB |\n",
			sc.Name, mib(float64(sc.NarBytes)), sc.Paths, mib(float64(sc.PlainBytes)), mib(float64(sc.DeltaBytes)),
			100*float64(sc.DeltaBytes)/float64(sc.PlainBytes), goal, sc.DeltaPaths, fmtStat(pp, "%.1f"), fmtStat(pd, "%.1f"), fmtStat(ratio, "%.2f"), cpuRatio.Med, fmtStat(ip, "%.1f"), fmtStat(id, "%.1f"),
			fmtStat(Stat{rate.Med / (1 << 20), rate.Min / (1 << 20), rate.Max / (1 << 20)}, "%.0f"), fmtStat(cpuRate, "%.0f"), mib(rss.Med), mib(irss.Med))
	}
	w.WriteString("\n")
	for _, sc := range r.Scenarios {
		fmt.Fprintf(w, "- %s: %s.\n", sc.Name, sc.RoundTrip)
	}
	if b := r.Big; b != nil {
		fmt.Fprintf(w, "- one path of %.2f GiB (every package of both suites in one path), updated as in version bumps: its delta is %.1f MiB; `pack --since` took %.0f s with a peak RSS of %.0f MiB, `import` %.0f s with a peak RSS of %.0f MiB (%.0f MiB/s of NAR rebuilt, %.0f per CPU second).\n",
			float64(b.NarBytes)/(1<<30), mib(float64(b.DeltaBytes)), b.Pack.Seconds, mib(float64(b.Pack.MaxRSS)), b.Import.Seconds, mib(float64(b.Import.MaxRSS)), mib(float64(b.NarBytes))/b.Import.Seconds, mib(float64(b.NarBytes))/b.Import.CPU)
	}
	w.WriteString("\n")
	if len(r.Methods) > 0 {
		fmt.Fprintf(w, "### Delta methods compared\n\nThe candidates measured in-process on the same NAR pairs (each updated path against its base path), encoding on one core; sizes add up over the paths, as a bundle would carry them. docs/design.md draws the conclusion.")
		if !r.MethodsRun.IsZero() {
			fmt.Fprintf(w, " Measured in the run of %s.", r.MethodsRun.Format("2006-01-02 15:04 UTC"))
		}
		w.WriteString("\n\n")
		fmt.Fprintf(w, "| scenario | method | bytes | vs zstd NAR | encode time | paths |\n| --- | --- | --- | --- | --- | --- |\n")
		plain := map[string]int64{}
		for _, me := range r.Methods {
			if me.Method == mPlain {
				plain[me.Scenario] = me.Bytes
			}
		}
		for _, me := range r.Methods {
			ratio := "—"
			if p := plain[me.Scenario]; p > 0 && me.Method != mBsdiff {
				ratio = fmt.Sprintf("%.2f%%", 100*float64(me.Bytes)/float64(p))
			}
			note := ""
			if me.Note != "" {
				note = " (" + me.Note + ")"
			}
			fmt.Fprintf(w, "| %s | %s%s | %.2f MiB | %s | %.1f s | %d |\n", me.Scenario, me.Method, note, mib(float64(me.Bytes)), ratio, me.Seconds, me.Paths)
		}
		w.WriteString("\n")
	}
}

func secs(s Sample) float64 { return s.Seconds }
