package cli

import (
	"log/slog"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"slices"

	"github.com/nix-airgap/nix-airgap/internal/progress"
)

// pack's and import's soft memory limit, unless GOMEMLIMIT sets one.
//
// Compressing a large path in parallel frames leaves buffers as garbage
// between collections: packing a closure with a 1 GiB path peaked at 265
// MiB without a limit and 165 MiB with one of memoryFloor, in about the
// same time (bench/pack-pair.sh). A channel-sized pack or import holds
// more than that (manifest entries, narinfos), and a limit below the live
// heap makes the collector run back to back, while the default headroom
// doubles the heap. So once the number of paths is known the limit
// becomes the larger of memoryFloor and the live heap plus an allowance
// per path plus memoryBuffers. Other commands keep far less live and gain
// nothing from one (plan on 10,000 derivations, verify --deep of the 2
// GiB closure: bench/plan-memory.sh, docs/design.md).
const (
	memoryFloor = 160 << 20
	// memoryBuffers is what memoryFloor leaves for buffers beyond a small
	// closure's live heap.
	memoryBuffers = 128 << 20
	// packMemoryPerPath is how much pack's live heap grows per path
	// copied, up to the written manifest: 1.4 KB at 20,000 small paths,
	// 1.9 KB at 100,000 (bench/analysis.md).
	packMemoryPerPath = 2 << 10
	// importMemoryPerPath is how much import's grows per path once the
	// manifest is parsed: about 1.2 KB (48 MB live at 20,000 small paths,
	// 23 MB of it the parsed manifest; bench/analysis.md).
	importMemoryPerPath = 3 << 9
)

// memoryLimiter sets the soft memory limit when one of its phases first
// starts with a number of paths: for pack the copy, once the plan is in
// the heap (planning runs without one, as plan does); for import, the
// check, once the manifest is parsed.
type memoryLimiter struct {
	*progress.Reporter
	log     *slog.Logger
	phases  []string
	perPath int64
	set     bool
}

func (m *memoryLimiter) Phase(name string, paths int, bytes int64) {
	if !m.set && paths > 0 && slices.Contains(m.phases, name) {
		m.set = true
		runtime.GC() // what is live, without the garbage of getting here
		s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		metrics.Read(s)
		limit := max(memoryFloor, int64(s[0].Value.Uint64())+m.perPath*int64(paths)+memoryBuffers)
		debug.SetMemoryLimit(limit)
		m.log.Debug("memory limit", "MiB", limit>>20, "paths", paths)
	}
	m.Reporter.Phase(name, paths, bytes)
}
