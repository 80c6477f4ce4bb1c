package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Sample is one timed run of a command.
type Sample struct {
	Seconds   float64 `json:"seconds"`
	MaxRSS    int64   `json:"maxRSS"`              // peak resident set of the process, bytes
	CPU       float64 `json:"cpu,omitempty"`       // user+system seconds of the process and its waited-for children
	ServerCPU float64 `json:"serverCPU,omitempty"` // user+system seconds of the server a client ran against, during the run
	Bytes     int64   `json:"bytes"`               // what it wrote or served, when known
	NarBytes  int64   `json:"narBytes,omitempty"`  // of Bytes, the NAR files (nar/) of a cache written
	Load1     float64 `json:"load1"`               // one-minute load average just before
	Value     float64 `json:"value"`               // a rate (req/s, B/s) when the run measures one
	Errors    int     `json:"errors,omitempty"`    // wrk's socket errors and timeouts
	P50       float64 `json:"p50,omitempty"`       // latency percentiles, ms
	P90       float64 `json:"p90,omitempty"`
	P99       float64 `json:"p99,omitempty"`
}

// Series is the runs of one tool in one scenario.
type Series struct {
	Scenario string   `json:"scenario"`
	Tool     string   `json:"tool"`
	Baseline string   `json:"baseline,omitempty"` // tool to compare with, pair by pair
	Command  string   `json:"command"`
	Samples  []Sample `json:"samples"`
	Note     string   `json:"note,omitempty"`
}

// Runner runs and times commands.
type Runner struct {
	Log *slog.Logger
	Env []string
	// Timeout bounds each command.
	Timeout time.Duration
}

// Run times one command and reports its peak RSS, as GNU time reports
// it, of the process itself, which for nix and nix-airgap does the work.
//
// wait4's own maxrss would be wrong: Go starts a child with CLONE_VM, and
// the exec that follows records the bench's peak RSS as the child's.
// GNU time forks without sharing memory, so its child starts from zero.
func (r *Runner) Run(ctx context.Context, env []string, dir string, argv ...string) (Sample, error) {
	ctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	rss, err := os.CreateTemp("", "nix-airgap-bench-rss-*")
	if err != nil {
		return Sample{}, err
	}
	rss.Close()
	defer os.Remove(rss.Name())
	cmd := exec.CommandContext(ctx, "/usr/bin/time", append([]string{"-f", "%M", "-o", rss.Name(), "--"}, argv...)...)
	if env == nil {
		env = r.Env
	}
	// Stop the command too, not only GNU time, when ctx ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.Env = env
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	s := Sample{Load1: load1()}
	start := time.Now()
	err = cmd.Run()
	s.Seconds = time.Since(start).Seconds()
	if cmd.ProcessState != nil {
		// GNU time's usage includes its child's; its own is a few ms.
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			s.CPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
		}
		s.MaxRSS = peakRSS(rss.Name())
	}
	r.Log.Debug("ran", "cmd", strings.Join(argv, " "), "seconds", s.Seconds, "maxrss", s.MaxRSS)
	if err != nil {
		out := stderr.String()
		if len(out) > 4000 {
			out = out[len(out)-4000:]
		}
		return s, fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, out)
	}
	return s, nil
}

// peakRSS reads the KiB that GNU time wrote last into file, in bytes; 0
// if it wrote none (a command killed before it exited).
func peakRSS(file string) int64 {
	b, _ := os.ReadFile(file)
	lines := strings.Fields(string(b))
	if len(lines) == 0 {
		return 0
	}
	kib, err := strconv.ParseInt(lines[len(lines)-1], 10, 64)
	if err != nil {
		return 0
	}
	return kib * 1024
}

// Shell runs a shell command and times it.
func (r *Runner) Shell(ctx context.Context, env []string, script string) (Sample, error) {
	return r.Run(ctx, env, "", "bash", "-c", script)
}

func load1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	var l float64
	fmt.Sscan(string(b), &l)
	return l
}

// dirSize adds up the sizes of regular files under dir.
func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// dropCaches empties the page cache so reads come from the disk.
func dropCaches() error {
	exec.Command("sync").Run()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0)
}

// makeWritable undoes the read-only modes Nix puts on store paths, so a
// chroot store can be removed.
func removeAll(dir string) error {
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(path, 0o755)
		}
		return nil
	})
	return os.RemoveAll(dir)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Stat is a median with its range.
type Stat struct{ Med, Min, Max float64 }

func stat(xs []float64) Stat {
	if len(xs) == 0 {
		return Stat{}
	}
	return Stat{median(xs), slices.Min(xs), slices.Max(xs)}
}

func (s *Series) field(f func(Sample) float64) []float64 {
	out := make([]float64, len(s.Samples))
	for i, x := range s.Samples {
		out[i] = f(x)
	}
	return out
}
