package nixcli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Derivation is a store derivation as nix show-derivation or nix
// derivation show prints it, normalised across Nix versions.
type Derivation struct {
	Path storepath.Path // the .drv
	Name string
	// Outputs maps output names to outputs.
	Outputs map[string]Output
	// InputSrcs are the sources the build reads, sorted.
	InputSrcs []storepath.Path
	// InputDrvs maps each input derivation to the output names used,
	// sorted.
	InputDrvs map[storepath.Path][]string
	Platform  string
	Builder   string
	Args      []string
	// Env is the builder's environment. For a derivation with
	// structured attrs it lacks __json: see StructuredAttrs.
	Env map[string]string
	// StructuredAttrs are the attributes of a derivation with
	// __structuredAttrs = true, as compact JSON, or nil. Nix before 2.30
	// prints them as the string env.__json, later Nix as the object
	// structuredAttrs.
	StructuredAttrs json.RawMessage
}

// Output is one derivation output.
type Output struct {
	// Path is the zero Path when it is not known before the build
	// (floating content-addressed and deferred outputs).
	Path storepath.Path
	// Method is the content-addressing method, "flat", "nar", "text" or
	// "git", or "" for an input-addressed output.
	Method string
	// HashAlgo is set for content-addressed outputs.
	HashAlgo storepath.Algo
	// Hash is the expected hash of a fixed output; zero otherwise.
	Hash storepath.Hash
	// Impure marks an impure derivation's output.
	Impure bool
}

// IsFixedOutput reports whether d is a fixed-output derivation: one
// output, out, with a hash known in advance.
func (d Derivation) IsFixedOutput() bool {
	out, ok := d.Outputs["out"]
	return len(d.Outputs) == 1 && ok && !out.Hash.IsZero()
}

// derivationJSON is one derivation in any shape Nix prints:
//   - version 1 (Nix ≤ 2.18): absolute paths, hashAlgo "r:sha256",
//     inputDrvs DRV → [outputs], no name;
//   - version 2 (2.19–2.31): method and hashAlgo apart, inputDrvs
//     DRV → {outputs, dynamicOutputs}, name;
//   - version 3 (2.32): base names, fixed outputs without path;
//   - version 4 (2.33+): inputs {srcs, drvs}, fixed outputs as
//     {method, hash: SRI}.
//
// Structured attrs are env.__json up to 2.29 and structuredAttrs since.
type derivationJSON struct {
	Name      *string                    `json:"name"`
	Outputs   map[string]outputJSON      `json:"outputs"`
	InputSrcs []string                   `json:"inputSrcs"`
	InputDrvs map[string]json.RawMessage `json:"inputDrvs"`
	Inputs    *struct {
		Srcs []string                   `json:"srcs"`
		Drvs map[string]json.RawMessage `json:"drvs"`
	} `json:"inputs"`
	System          string            `json:"system"`
	Builder         string            `json:"builder"`
	Args            []string          `json:"args"`
	Env             map[string]string `json:"env"`
	StructuredAttrs json.RawMessage   `json:"structuredAttrs"`
}

type outputJSON struct {
	Path     *string `json:"path"`
	Method   string  `json:"method"`
	HashAlgo string  `json:"hashAlgo"`
	Hash     string  `json:"hash"`
	Impure   bool    `json:"impure"`
}

// ParseDerivations parses the output of nix show-derivation or nix
// derivation show from any Nix version (see derivationJSON), keyed by
// absolute path, by base name, or wrapped in {"version",
// "derivations"}. Store paths are parsed in dir. The result is sorted by
// path.
func ParseDerivations(dir storepath.Dir, r io.Reader) ([]Derivation, error) {
	var top map[string]json.RawMessage
	if err := json.NewDecoder(r).Decode(&top); err != nil {
		return nil, fmt.Errorf("parse derivation JSON: %w: %w", ErrUnexpectedOutput, err)
	}
	if inner, ok := top["derivations"]; ok {
		if _, versioned := top["version"]; versioned {
			top = nil
			if err := json.Unmarshal(inner, &top); err != nil {
				return nil, fmt.Errorf("parse derivation JSON: derivations: %w: %w", ErrUnexpectedOutput, err)
			}
		}
	}
	var drvs []Derivation
	for key, raw := range top {
		p, err := parsePath(dir, key)
		if err != nil {
			return nil, fmt.Errorf("parse derivation JSON: %w", err)
		}
		var j derivationJSON
		if err := json.Unmarshal(raw, &j); err != nil {
			return nil, fmt.Errorf("parse derivation JSON for %s: %w: %w", p, ErrUnexpectedOutput, err)
		}
		d, err := j.normalise(dir, p)
		if err != nil {
			return nil, fmt.Errorf("parse derivation JSON for %s: %w", p, err)
		}
		drvs = append(drvs, d)
	}
	slices.SortFunc(drvs, func(a, b Derivation) int { return storepath.Compare(a.Path, b.Path) })
	return drvs, nil
}

func (j *derivationJSON) normalise(dir storepath.Dir, p storepath.Path) (Derivation, error) {
	name, ok := strings.CutSuffix(p.Name, ".drv")
	if !ok {
		return Derivation{}, fmt.Errorf("%s is not a .drv: %w", p, ErrUnexpectedOutput)
	}
	if j.Name != nil {
		name = *j.Name
	}
	d := Derivation{
		Path:      p,
		Name:      name,
		Outputs:   make(map[string]Output, len(j.Outputs)),
		InputDrvs: make(map[storepath.Path][]string),
		Platform:  j.System,
		Builder:   j.Builder,
		Args:      j.Args,
		Env:       j.Env,
	}
	attrs := j.StructuredAttrs
	if js, ok := j.Env["__json"]; ok {
		attrs = json.RawMessage(js)
		d.Env = maps.Clone(j.Env)
		delete(d.Env, "__json")
	}
	if len(attrs) > 0 && string(attrs) != "null" {
		var b bytes.Buffer
		if err := json.Compact(&b, attrs); err != nil {
			return Derivation{}, fmt.Errorf("structured attrs: %w: %w", ErrUnexpectedOutput, err)
		}
		d.StructuredAttrs = b.Bytes()
	}
	for outName, o := range j.Outputs {
		out, err := o.normalise(dir, name, outName)
		if err != nil {
			return Derivation{}, fmt.Errorf("output %s: %w", outName, err)
		}
		d.Outputs[outName] = out
	}
	srcs, drvs := j.InputSrcs, j.InputDrvs
	if j.Inputs != nil {
		srcs, drvs = j.Inputs.Srcs, j.Inputs.Drvs
	}
	var err error
	if d.InputSrcs, err = parsePaths(dir, srcs); err != nil {
		return Derivation{}, fmt.Errorf("input source: %w", err)
	}
	slices.SortFunc(d.InputSrcs, storepath.Compare)
	for key, raw := range drvs {
		dp, err := parsePath(dir, key)
		if err != nil {
			return Derivation{}, fmt.Errorf("input derivation: %w", err)
		}
		outs, err := parseInputOutputs(raw)
		if err != nil {
			return Derivation{}, fmt.Errorf("input derivation %s: %w", dp, err)
		}
		d.InputDrvs[dp] = outs
	}
	return d, nil
}

// parseInputOutputs accepts [outputs] or {outputs, dynamicOutputs}.
func parseInputOutputs(raw json.RawMessage) ([]string, error) {
	var outs []string
	if err := json.Unmarshal(raw, &outs); err != nil {
		var obj struct {
			Outputs        []string                   `json:"outputs"`
			DynamicOutputs map[string]json.RawMessage `json:"dynamicOutputs"`
		}
		if err := json.Unmarshal(raw, &obj); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnexpectedOutput, err)
		}
		if len(obj.DynamicOutputs) > 0 {
			return nil, fmt.Errorf("dynamic derivation outputs: %w", ErrUnsupported)
		}
		outs = obj.Outputs
	}
	slices.Sort(outs)
	return outs, nil
}

func (o outputJSON) normalise(dir storepath.Dir, drvName, outName string) (Output, error) {
	out := Output{Method: o.Method, Impure: o.Impure}
	var err error
	if o.Path != nil && *o.Path != "" {
		if out.Path, err = parsePath(dir, *o.Path); err != nil {
			return Output{}, err
		}
	}
	algo := o.HashAlgo
	if out.Method == "" && algo != "" {
		// Version 1 folds the method into hashAlgo: "r:sha256", "sha256".
		out.Method = "flat"
		for _, m := range []struct{ prefix, method string }{{"r:", "nar"}, {"text:", "text"}, {"git:", "git"}} {
			if rest, ok := strings.CutPrefix(algo, m.prefix); ok {
				out.Method, algo = m.method, rest
			}
		}
	}
	switch out.Method {
	case "", "flat", "nar", "text", "git":
	default:
		return Output{}, fmt.Errorf("method %q: %w", out.Method, ErrUnexpectedOutput)
	}
	if algo != "" {
		if out.HashAlgo, err = storepath.ParseAlgo(algo); err != nil {
			return Output{}, err
		}
	}
	if o.Hash != "" {
		if out.HashAlgo != 0 {
			out.Hash, err = storepath.ParseDigest(out.HashAlgo, o.Hash)
		} else {
			out.Hash, err = storepath.ParseHash(o.Hash) // version 4: SRI
			out.HashAlgo = out.Hash.Algo
		}
		if err != nil {
			return Output{}, err
		}
		if out.Method == "" {
			return Output{}, fmt.Errorf("hash without method: %w", ErrUnexpectedOutput)
		}
	}
	if out.Path.Hash == "" && !out.Hash.IsZero() {
		// Versions 3 and 4 leave out a fixed output's path.
		name := drvName
		if outName != "out" {
			name += "-" + outName
		}
		switch out.Method {
		case "flat":
			out.Path, err = dir.MakeFixedOutput(storepath.Flat, out.Hash, name)
		case "nar":
			out.Path, err = dir.MakeFixedOutput(storepath.Recursive, out.Hash, name)
		}
		if err != nil {
			return Output{}, err
		}
	}
	return out, nil
}

// ShowDerivations reads store derivations (nix show-derivation, or nix
// derivation show on Nix 2.15 and later).
func (r *Runner) ShowDerivations(ctx context.Context, drvs ...storepath.Path) ([]Derivation, error) {
	return r.showDerivations(ctx, false, drvs)
}

// ShowDerivationClosure reads store derivations and every derivation
// they depend on (show-derivation --recursive).
func (r *Runner) ShowDerivationClosure(ctx context.Context, drvs ...storepath.Path) ([]Derivation, error) {
	return r.showDerivations(ctx, true, drvs)
}

func (r *Runner) showDerivations(ctx context.Context, recursive bool, drvs []storepath.Path) ([]Derivation, error) {
	if len(drvs) == 0 {
		return nil, nil
	}
	dir, err := r.StoreDir(ctx)
	if err != nil {
		return nil, err
	}
	v, err := r.Version(ctx)
	if err != nil {
		return nil, err
	}
	args := nixArgs("show-derivation")
	if v.AtLeast(2, 15) {
		args = nixArgs("derivation", "show")
	}
	if recursive {
		args = append(args, "--recursive")
	}
	args = append(args, "--")
	for _, p := range drvs {
		if !p.IsDerivation() {
			return nil, fmt.Errorf("show derivation %s: not a .drv: %w", p, storepath.ErrBadPath)
		}
		args = append(args, p.String())
	}
	var out []Derivation
	err = r.stream(ctx, r.nix(), args, func(rd io.Reader) error {
		var err error
		out, err = ParseDerivations(dir, rd)
		return err
	})
	return out, err
}
