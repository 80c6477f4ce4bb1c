package cli

import (
	"io"
	"log/slog"
	"math"
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/pack"
	"github.com/nix-airgap/nix-airgap/internal/progress"
)

// TestMemoryLimiter checks that pack's memory limit is set when the copy
// starts, not while planning: the fixed limit for a small closure, and
// for a channel-sized one the live heap and an allowance per path and for
// buffers.
func TestMemoryLimiter(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	m := memoryLimiter{progress.New(io.Discard, progress.Lines), slog.New(slog.DiscardHandler)}
	m.Phase(pack.PhasePlan, 0, 0)
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Fatalf("planning set a memory limit of %d", got)
	}
	m.Phase(pack.PhaseCopy, 100, 1<<30)
	if got := debug.SetMemoryLimit(-1); got != packMemoryLimit {
		t.Errorf("copying 100 paths: memory limit %d, want %d", got, packMemoryLimit)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	const paths = 100_000
	m.Phase(pack.PhaseCopy, paths, 1<<30)
	got := debug.SetMemoryLimit(-1)
	base := int64(paths*packMemoryPerPath + packMemoryBuffers)
	if live := got - base; live <= 0 || live > int64(ms.HeapAlloc)+1<<20 {
		t.Errorf("copying %d paths: memory limit %d, %d over the allowance for them; want the live heap (%d after a collection)", paths, got, live, ms.HeapAlloc)
	}
}
