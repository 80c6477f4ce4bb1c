package check

import (
	"fmt"
	"maps"
	"slices"

	"github.com/nix-airgap/nix-airgap/internal/derivation"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// drvInfo is what a check needs of a .drv. A build closure has
// thousands, and their environments (build scripts) are most of their size.
type drvInfo struct {
	// outputs are the output paths: as recorded, or computed from the
	// hash for a fixed-output derivation.
	outputs   map[string]storepath.Path
	fod       bool         // fixed-output, even if its hash does not parse
	fixed     *FixedOutput // set for a fixed-output derivation with a valid hash
	mirror    string       // its path under a hashed mirror (derivation.MirrorPath), or ""
	inputDrvs map[storepath.Path][]string
	inputSrcs []storepath.Path
	// err is why its output paths are unknown: Check fails with it once
	// the whole closure is read.
	err error
}

// newDrvInfo keeps of drv, read from the store path d, what a check needs.
func newDrvInfo(d storepath.Path, drv *derivation.Derivation) (*drvInfo, error) {
	info := &drvInfo{fod: drv.IsFixedOutput(), inputDrvs: drv.InputDrvs, inputSrcs: drv.InputSrcs}
	if method, h, ok := drv.FixedOutput(); ok {
		info.fixed = &FixedOutput{URLs: drv.FetchURLs(), Hash: h.String(), Recursive: method == storepath.Recursive, Builder: drv.Builder}
	}
	info.mirror, _ = drv.MirrorPath()
	outs, err := drv.OutputPaths()
	if err != nil {
		info.err = fmt.Errorf("check: derivation %s: %w", d, err)
		return info, nil
	}
	info.outputs = outs
	return info, nil
}

// addOutputs makes a node for every output and input source.
func (r *run) addOutputs() error {
	for d, drv := range r.drvs {
		if drv.err != nil {
			return drv.err
		}
		for _, p := range drv.outputs {
			n := r.add(p, KindOutput)
			n.drv, n.fixed = d, drv.fixed
		}
		for _, s := range drv.inputSrcs {
			r.add(s, KindInputSource)
		}
	}
	return nil
}

// output returns the path of output name of derivation d, if read.
func (r *run) output(d storepath.Path, name string) (storepath.Path, bool) {
	drv := r.drvs[d]
	if drv == nil {
		return storepath.Path{}, false
	}
	p, ok := drv.outputs[name]
	return p, ok
}

// targetPaths returns the paths target t stands for.
func (r *run) targetPaths(t Target) ([]storepath.Path, error) {
	if t.DrvPath == (storepath.Path{}) {
		if t.Path == (storepath.Path{}) {
			return nil, fmt.Errorf("check target %q: no derivation and no path", t.Name)
		}
		kind := KindOutput
		if t.Local {
			kind = KindInputSource
		}
		r.add(t.Path, kind)
		return []storepath.Path{t.Path}, nil
	}
	var outs map[string]storepath.Path
	if drv := r.drvs[t.DrvPath]; drv != nil {
		outs = drv.outputs
	}
	if t.Path != (storepath.Path{}) {
		for _, o := range outs {
			if o == t.Path {
				return []storepath.Path{o}, nil
			}
		}
		return nil, fmt.Errorf("check target %q: %s is not an output of %s", t.Name, t.Path, t.DrvPath)
	}
	names := t.Outputs
	if names == nil {
		names = slices.Sorted(maps.Keys(outs))
	}
	var ps []storepath.Path
	for _, name := range names {
		o, ok := outs[name]
		if !ok {
			return nil, fmt.Errorf("check target %q: %s has no output %q", t.Name, t.DrvPath, name)
		}
		ps = append(ps, o)
	}
	return ps, nil
}
