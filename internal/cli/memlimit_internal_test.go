package cli

import (
	"io"
	"log/slog"
	"math"
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/pack"
	"github.com/nix-airgap/nix-airgap/internal/progress"
)

// TestMemoryLimiter checks that pack's and import's memory limit is set
// once, when the first of their phases starts with a number of paths:
// the floor for a small closure, and for a channel-sized one the live
// heap and an allowance per path and for buffers.
func TestMemoryLimiter(t *testing.T) {
	tests := []struct {
		cmd     string
		before  string // a phase that sets no limit
		phases  []string
		perPath int64
	}{
		{"pack", pack.PhasePlan, []string{pack.PhaseCopy}, packMemoryPerPath},
		{"import", bundle.PhaseVerify, []string{bundle.PhaseVerify, bundle.PhaseImport}, importMemoryPerPath},
	}
	for _, tt := range tests {
		t.Run(tt.cmd, func(t *testing.T) {
			defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
			newLimiter := func() *memoryLimiter {
				return &memoryLimiter{Reporter: progress.New(io.Discard, progress.Lines), log: slog.New(slog.DiscardHandler), phases: tt.phases, perPath: tt.perPath}
			}
			m := newLimiter()
			m.Phase(tt.before, 0, 1<<30) // planning, or a stream whose count is not known yet
			if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
				t.Fatalf("%s with no paths known: memory limit %d", tt.before, got)
			}
			m.Phase(tt.phases[0], 100, 1<<30)
			if got := debug.SetMemoryLimit(-1); got != memoryFloor {
				t.Errorf("100 paths: memory limit %d, want %d", got, int64(memoryFloor))
			}

			debug.SetMemoryLimit(math.MaxInt64)
			m = newLimiter()
			const paths = 100_000
			m.Phase(tt.phases[0], paths, 1<<30)
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			got := debug.SetMemoryLimit(-1)
			if live := got - (paths*tt.perPath + memoryBuffers); live <= 0 || live > int64(ms.HeapAlloc)+1<<20 {
				t.Errorf("%d paths: memory limit %d, %d over the allowance for them; want the live heap (%d after a collection)", paths, got, live, ms.HeapAlloc)
			}
			m.Phase(tt.phases[len(tt.phases)-1], paths*2, 0)
			if again := debug.SetMemoryLimit(-1); again != got {
				t.Errorf("a later phase: memory limit %d, want it left at %d", again, got)
			}
		})
	}
}
