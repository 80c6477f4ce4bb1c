package derivation

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// ErrCycle reports input derivations that depend on themselves, which no
// real store holds but a Loader could produce.
var ErrCycle = errors.New("derivation depends on itself")

// Loader loads the input derivations that hashing modulo needs.
type Loader interface {
	Load(ctx context.Context, drvPath storepath.Path) (*Derivation, error)
}

// LoaderFunc adapts a function to a Loader.
type LoaderFunc func(ctx context.Context, drvPath storepath.Path) (*Derivation, error)

// Load calls f.
func (f LoaderFunc) Load(ctx context.Context, drvPath storepath.Path) (*Derivation, error) {
	return f(ctx, drvPath)
}

// FileLoader loads .drv files from the local file system, where a local
// store keeps them at their store path.
type FileLoader struct{}

// Load reads the .drv at drvPath.
func (FileLoader) Load(_ context.Context, drvPath storepath.Path) (*Derivation, error) {
	return ReadFile(drvPath.String(), drvPath.Dir)
}

// Hasher computes Nix's hashDerivationModulo, which names input-addressed
// outputs. It remembers the hash of every .drv it loads, so a closure's
// shared inputs are read once. It is safe for concurrent use.
type Hasher struct {
	loader Loader

	mu   sync.Mutex
	memo map[storepath.Path]map[string]storepath.Hash
}

// NewHasher returns a Hasher that loads input derivations with l.
func NewHasher(l Loader) *Hasher {
	return &Hasher{loader: l, memo: map[storepath.Path]map[string]storepath.Hash{}}
}

// HashModulo returns, per output, the hash Nix puts in place of d when d
// is an input of another derivation: for a fixed-output derivation the
// hash of its fixed output, else the sha256 of d's ATerm with each input
// .drv replaced by its own hash modulo.
func (h *Hasher) HashModulo(ctx context.Context, d *Derivation) (map[string]storepath.Hash, error) {
	return h.modulo(ctx, d, false, map[storepath.Path]bool{})
}

// PredictOutputPaths computes the output paths Nix gives d: from the hash
// for a fixed-output derivation, else from the hash modulo of d with its
// output paths masked, so the paths d records need not be filled in.
func (d *Derivation) PredictOutputPaths(ctx context.Context, h *Hasher) (map[string]storepath.Path, error) {
	if d.IsFixedOutput() {
		p, err := d.PredictFixedOutputPath()
		if err != nil {
			return nil, err
		}
		return map[string]storepath.Path{"out": p}, nil
	}
	hashes, err := h.modulo(ctx, d, true, map[storepath.Path]bool{})
	if err != nil {
		return nil, err
	}
	paths := make(map[string]storepath.Path, len(hashes))
	for out, hash := range hashes {
		name := d.Name()
		if out != "out" {
			name += "-" + out
		}
		p, err := d.StoreDir.Make("output:"+out, hash, name)
		if err != nil {
			return nil, fmt.Errorf("predict output %q of %q: %w", out, d.Name(), err)
		}
		paths[out] = p
	}
	return paths, nil
}

// PredictOutputPath computes the path of one output of d.
func (d *Derivation) PredictOutputPath(ctx context.Context, h *Hasher, output string) (storepath.Path, error) {
	if _, ok := d.Outputs[output]; !ok {
		return storepath.Path{}, fmt.Errorf("predict output %q of %q: no such output", output, d.Name())
	}
	paths, err := d.PredictOutputPaths(ctx, h)
	if err != nil {
		return storepath.Path{}, err
	}
	return paths[output], nil
}

// VerifyOutputPaths checks that every output path d records is the one
// Nix would compute, and returns an error wrapping ErrOutputMismatch if
// not.
func (d *Derivation) VerifyOutputPaths(ctx context.Context, h *Hasher) error {
	paths, err := d.PredictOutputPaths(ctx, h)
	if err != nil {
		return err
	}
	for _, out := range sortedKeys(d.Outputs) {
		if got, want := d.Outputs[out].Path, paths[out]; got != want {
			return fmt.Errorf("verify output %q of %q: records %s, Nix computes %s: %w", out, d.Name(), got, want, ErrOutputMismatch)
		}
	}
	return nil
}

func (h *Hasher) modulo(ctx context.Context, d *Derivation, mask bool, visiting map[storepath.Path]bool) (map[string]storepath.Hash, error) {
	if d.IsFixedOutput() {
		method, fixed, ok := d.FixedOutput()
		if !ok {
			o := d.Outputs["out"]
			return nil, fmt.Errorf("hash derivation %q: bad fixed output hash %q %q: %w", d.Name(), o.HashAlgo, o.Hash, ErrSyntax)
		}
		p, err := d.PredictFixedOutputPath()
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256([]byte("fixed:out:" + method.Prefix() + fixed.Algo.String() + ":" + fixed.Hex() + ":" + p.String()))
		return map[string]storepath.Hash{"out": {Algo: storepath.SHA256, Digest: sum[:]}}, nil
	}
	for _, out := range sortedKeys(d.Outputs) {
		o := d.Outputs[out]
		if o.HashAlgo != "" || o.Hash != "" {
			return nil, fmt.Errorf("hash derivation %q: output %q is content-addressed but not fixed: %w", d.Name(), out, ErrUnsupported)
		}
		if !mask && o.Path == (storepath.Path{}) {
			return nil, fmt.Errorf("hash derivation %q: output %q is deferred: %w", d.Name(), out, ErrUnsupported)
		}
	}
	inputs := make(map[string][]string, len(d.InputDrvs))
	for _, drvPath := range sortedPaths(d.InputDrvs) {
		hashes, err := h.pathModulo(ctx, drvPath, visiting)
		if err != nil {
			return nil, fmt.Errorf("hash derivation %q: %w", d.Name(), err)
		}
		for _, out := range d.InputDrvs[drvPath] {
			hash, ok := hashes[out]
			if !ok {
				return nil, fmt.Errorf("hash derivation %q: input %s has no output %q", d.Name(), drvPath, out)
			}
			// Inputs with equal hashes, such as two fetches of the same
			// fixed output, merge as in Nix's map.
			key := hash.Hex()
			if !slices.Contains(inputs[key], out) {
				inputs[key] = append(inputs[key], out)
				slices.Sort(inputs[key])
			}
		}
	}
	var b bytes.Buffer
	d.writeATerm(&b, inputs, mask)
	sum := sha256.Sum256(b.Bytes())
	hashes := make(map[string]storepath.Hash, len(d.Outputs))
	for out := range d.Outputs {
		hashes[out] = storepath.Hash{Algo: storepath.SHA256, Digest: sum[:]}
	}
	return hashes, nil
}

func (h *Hasher) pathModulo(ctx context.Context, drvPath storepath.Path, visiting map[storepath.Path]bool) (map[string]storepath.Hash, error) {
	h.mu.Lock()
	hashes, ok := h.memo[drvPath]
	h.mu.Unlock()
	if ok {
		return hashes, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if visiting[drvPath] {
		return nil, fmt.Errorf("input %s: %w", drvPath, ErrCycle)
	}
	visiting[drvPath] = true
	defer delete(visiting, drvPath)
	d, err := h.loader.Load(ctx, drvPath)
	if err != nil {
		return nil, fmt.Errorf("load input %s: %w", drvPath, err)
	}
	hashes, err = h.modulo(ctx, d, false, visiting)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.memo[drvPath] = hashes
	h.mu.Unlock()
	return hashes, nil
}

func sortedPaths(m map[storepath.Path][]string) []storepath.Path {
	keys := make([]storepath.Path, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, storepath.Compare)
	return keys
}
