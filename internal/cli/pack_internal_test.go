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
// starts, from the heap then live and the number of paths, and not while
// planning.
func TestMemoryLimiter(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	m := memoryLimiter{progress.New(io.Discard, progress.Lines), slog.New(slog.DiscardHandler)}
	m.Phase(pack.PhasePlan, 0, 0)
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Fatalf("planning set a memory limit of %d", got)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	const paths = 100_000
	m.Phase(pack.PhaseCopy, paths, 1<<30)
	got := debug.SetMemoryLimit(-1)
	base := int64(packMemoryLimit + paths*packMemoryPerPath)
	if live := got - base; live <= 0 || live > int64(ms.HeapAlloc)+1<<20 {
		t.Errorf("copying %d paths: memory limit %d, %d over the allowance for them; want the live heap (%d after a collection)", paths, got, live, ms.HeapAlloc)
	}
}
