package check

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// substitutable reports whether n and its whole reference closure can
// be had without building.
func (r *run) substitutable(n *node) bool {
	switch n.subst {
	case decidedYes, deciding: // deciding: a reference cycle, which only a path's self-reference makes
		return true
	case decidedNo:
		return false
	}
	if n.local {
		n.subst = decidedYes
		return true
	}
	if n.ni == nil {
		n.subst = decidedNo
		return false
	}
	n.subst = deciding
	ok := true
	for _, ref := range n.ni.References {
		if ref == n.path {
			continue
		}
		if m := r.nodes[ref]; m == nil || !r.substitutable(m) {
			ok = false
			if n.reason == "" {
				n.reason = fmt.Sprintf("its narinfo's reference %s cannot be substituted", ref)
			}
		}
	}
	n.subst = decide(ok)
	return ok
}

// buildable reports whether derivation d can be built offline, and
// records what blocks it.
func (r *run) buildable(d storepath.Path) bool {
	switch r.drvState[d] {
	case decidedYes:
		return true
	case decidedNo, deciding: // deciding: a cycle, which no real store holds
		return false
	}
	drv := r.drvs[d]
	if drv == nil || drv.fod {
		r.drvState[d] = decidedNo
		return false
	}
	r.drvState[d] = deciding
	var why []storepath.Path
	for _, in := range slices.SortedFunc(maps.Keys(drv.inputDrvs), storepath.Compare) {
		for _, name := range drv.inputDrvs[in] {
			o, ok := r.output(in, name)
			if !ok {
				continue
			}
			if r.classify(r.nodes[o]) == Blocked {
				why = append(why, o)
			}
		}
	}
	for _, s := range drv.inputSrcs {
		if r.classify(r.nodes[s]) == Blocked {
			why = append(why, s)
		}
	}
	r.drvWhy[d] = why
	r.drvState[d] = decide(len(why) == 0)
	return len(why) == 0
}

// classify decides n's class.
func (r *run) classify(n *node) Class {
	if n.class != 0 {
		return n.class
	}
	switch {
	case r.substitutable(n), n.mirror >= 0:
		n.class = Available
	case n.drv != (storepath.Path{}) && r.buildable(n.drv):
		n.class = Buildable
	default:
		n.class = Blocked
		switch {
		case n.drv == (storepath.Path{}) && n.kind == KindInputSource:
			n.reason = "input source in neither the local store nor any --against source"
		case n.drv == (storepath.Path{}):
			if n.reason == "" {
				n.reason = "in no --against source, and no derivation is known to build it"
			}
		case n.fixed != nil:
			n.reason = "fixed-output derivation in no --against source: its builder needs the network"
		default:
			n.blockedBy = r.drvWhy[n.drv]
		}
	}
	return n.class
}

// need marks p as needed, and what realising it needs.
func (r *run) need(p storepath.Path) {
	stack := []storepath.Path{p}
	for len(stack) > 0 {
		q := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		n := r.nodes[q]
		if n == nil || n.needed {
			continue
		}
		n.needed = true
		switch {
		case n.class == Available && n.subst == decidedYes && n.ni != nil:
			stack = append(stack, n.ni.References...)
		case n.class == Available:
			// Local (its closure is local too) or a mirror file.
		case n.fixed != nil:
			// A missing fixed output cannot be fetched offline: its
			// fetcher's inputs are of no use.
		case n.drv != (storepath.Path{}):
			drv := r.drvs[n.drv]
			for in, names := range drv.inputDrvs {
				for _, name := range names {
					if o, ok := r.output(in, name); ok {
						stack = append(stack, o)
					}
				}
			}
			stack = append(stack, drv.inputSrcs...)
		}
	}
}

// localClosure marks the runtime closures of needed local paths needed,
// when the local store can list them.
func (r *run) localClosure(ctx context.Context) error {
	lc, ok := r.c.Local.(LocalClosure)
	if !r.c.UseLocal || !ok {
		return nil
	}
	var ps []storepath.Path
	for p, n := range r.nodes {
		if n.needed && n.local {
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		return nil
	}
	closure, err := nixcli.Chunked(ctx, ps, localParallel, lc.Requisites)
	if err != nil {
		return fmt.Errorf("check: local store: %w", err)
	}
	for _, q := range closure {
		n := r.nodes[q]
		if n == nil {
			n = r.add(q, KindReference)
			n.local, n.subst, n.class = true, decidedYes, Available
		}
		n.needed = true
	}
	return nil
}
