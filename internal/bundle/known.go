package bundle

import (
	"slices"

	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// What a delta leaves out. A site that imported a base holds more than the
// paths the base carries: import accepts a bundle only when every path it
// refers to is in the cache or the bundle, and gc keeps closures, so the
// cache also holds what those paths refer to, and everything those refer
// to in turn. A delta's manifest also names the paths of its own bases it
// left out (bases[].provides: its references, and the sources and build
// outputs nothing refers to), which a site that imported the chain holds
// and gc keeps for it. So pack --since B3, where B3 is a delta of B2 and
// B2 of B1, leaves out what B1 brought that B3's targets still need.

// A cache inventory says exactly what the site holds, when it was taken
// after the last import, as the guide has it. So when --since names one,
// a bundle named beside it (for its NAR files, say) is not taken as held:
// the site may never have imported it, a crossing skipped, and a delta
// that left out its paths would be refused on import.

// Known is what a site that imported the bases holds, as far as the bases
// and a reference graph (the plan's) tell: each path with the indices of
// the bases that tell it.
type Known struct {
	b  *Bases
	in map[storepath.Path][]int
}

// told records that base i tells p is held (p is a path its carried
// paths refer to, or one its own bases provided), unless it carries p.
func (b *Bases) told(p storepath.Path, i int) {
	if b.tells == nil {
		b.tells = map[storepath.Path][]int{}
	}
	if !slices.Contains(b.tells[p], i) {
		b.tells[p] = append(b.tells[p], i)
	}
}

// Known returns what a site that imported the bases holds: the paths
// they carry, the paths those refer to, the paths their own bases
// provided for them, and the closure of all of those under refs (a
// path's references, as far as the caller knows them; nil when it does
// not).
func (b *Bases) Known(refs func(storepath.Path) []storepath.Path) *Known {
	k := &Known{b: b, in: make(map[storepath.Path][]int, len(b.paths)+len(b.tells))}
	var stack []storepath.Path
	add := func(p storepath.Path, in []int) {
		have := k.in[p]
		grown := have
		for _, i := range in {
			if !slices.Contains(grown, i) {
				grown = append(slices.Clip(grown), i)
			}
		}
		if len(grown) == len(have) {
			return
		}
		slices.Sort(grown)
		k.in[p] = grown
		stack = append(stack, p)
	}
	for _, be := range b.paths {
		add(be.e.Path, b.held(be.in))
	}
	for p, in := range b.tells {
		add(p, b.held(in))
	}
	for len(stack) > 0 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if refs == nil {
			continue
		}
		for _, r := range refs(p) {
			if r != p {
				add(r, k.in[p])
			}
		}
	}
	return k
}

// Has reports whether a site that imported the bases holds p: pack
// --since leaves it out.
func (k *Known) Has(p storepath.Path) bool { return len(k.in[p]) > 0 }

// Carried reports whether a base carries p itself, not only holds it
// through what it refers to or its own bases.
func (k *Known) Carried(p storepath.Path) bool { return k.b.Has(p) }

// Len is how many paths a site that imported the bases holds.
func (k *Known) Len() int { return len(k.in) }

// held returns those of the bases in (indices in list) that tell what
// the site holds: the cache inventories among the bases, if any, else
// all of them.
func (b *Bases) held(in []int) []int {
	if !slices.ContainsFunc(b.list, func(x Base) bool { return x.Kind == BaseInventory }) {
		return in
	}
	var out []int
	for _, i := range in {
		if b.list[i].Kind == BaseInventory {
			out = append(out, i)
		}
	}
	return out
}
