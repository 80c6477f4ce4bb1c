package cli

import (
	"io"
	"log/slog"
	"math"
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/progress"
)

// TestImportMemoryLimiter checks that import's memory limit is set once
// the number of paths is first known, to the live heap and an allowance
// per path and for buffers, and not changed by the phases after.
func TestImportMemoryLimiter(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	m := &importMemoryLimiter{Reporter: progress.New(io.Discard, progress.Lines), log: slog.New(slog.DiscardHandler)}
	m.Phase(bundle.PhaseVerify, 0, 1<<30) // a stream: no count yet
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Fatalf("no paths known: memory limit %d", got)
	}
	const paths = 100_000
	m.Phase(bundle.PhaseVerify, paths, 1<<30)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	got := debug.SetMemoryLimit(-1)
	base := int64(paths*importMemoryPerPath + importMemoryBuffers)
	if live := got - base; live <= 0 || live > int64(ms.HeapAlloc)+1<<20 {
		t.Errorf("%d paths: memory limit %d, %d over the allowance for them; want the live heap (%d after a collection)", paths, got, live, ms.HeapAlloc)
	}
	m.Phase(bundle.PhaseImport, paths, 0)
	if again := debug.SetMemoryLimit(-1); again != got {
		t.Errorf("import phase: memory limit %d, want it left at %d", again, got)
	}
}
