// Package derivation reads and writes Nix store derivations (.drv files
// in ATerm form) and predicts their output paths.
//
// It has its own small parser instead of go-nix's pkg/derivation because
// that one assumes /nix/store (Validate, DrvPath and CalculateOutputPaths
// use the constant storepath.StoreDir), reads its input without a size
// limit, and splits lists by counting brackets instead of following the
// grammar. The parser here is a strict recursive descent over the exact
// form Nix 2.8 writes: no whitespace, exact commas, sorted keys without
// duplicates, only the escapes \" \\ \n \r \t, nothing after the closing
// parenthesis. Every input it accepts serialises back byte for byte,
// which hashing modulo and .drv paths rely on. Nix writes names, paths and
// the platform between quotes without escaping them; a platform holding a
// backslash is therefore rejected, as Nix itself cannot read such a .drv
// back correctly.
package derivation

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// MaxSize caps the size of a .drv that Parse and ReadFile accept. The
// largest derivations in nixpkgs are a few MiB.
const MaxSize = 64 << 20

var (
	// ErrSyntax reports input that is not a derivation in Nix's ATerm form.
	ErrSyntax = errors.New("invalid derivation syntax")
	// ErrTooLarge reports a .drv bigger than MaxSize.
	ErrTooLarge = errors.New("derivation too large")
	// ErrNotFixedOutput reports a fixed-output question about a derivation
	// that is not one.
	ErrNotFixedOutput = errors.New("not a fixed-output derivation")
	// ErrUnsupported reports a derivation kind whose outputs cannot be
	// predicted here: content-addressed floating or deferred outputs.
	ErrUnsupported = errors.New("unsupported derivation kind")
	// ErrOutputMismatch reports a recorded output path that differs from
	// the predicted one.
	ErrOutputMismatch = errors.New("output path mismatch")
)

// Output is one output of a derivation as the .drv records it.
type Output struct {
	// Path is the output path; zero when the .drv leaves it empty
	// (deferred or floating content-addressed outputs).
	Path storepath.Path
	// HashAlgo is "" for input-addressed outputs, else the hash mode and
	// algorithm, such as "sha256" (flat) or "r:sha256" (recursive).
	HashAlgo string
	// Hash is the expected hash as written, hex in files Nix writes.
	Hash string
}

// Derivation is a parsed store derivation.
type Derivation struct {
	// StoreDir is the store directory all paths in the derivation live in.
	StoreDir storepath.Dir
	// Outputs maps output names to outputs.
	Outputs map[string]Output
	// InputDrvs maps input .drv paths to the sorted names of the outputs
	// used.
	InputDrvs map[storepath.Path][]string
	// InputSrcs are the input sources, sorted.
	InputSrcs []storepath.Path
	Platform  string
	Builder   string
	Args      []string
	Env       map[string]string
}

// ReadFile reads and parses the .drv at name, refusing files larger than
// MaxSize.
func ReadFile(name string, storeDir storepath.Dir) (*Derivation, error) {
	f, err := os.Open(name)
	if err != nil {
		if pe, ok := err.(*fs.PathError); ok {
			err = pe.Err // name it once
		}
		return nil, fmt.Errorf("read derivation %s: %w", name, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read derivation %s: %w", name, err)
	}
	d, err := Parse(data, storeDir)
	if err != nil {
		return nil, fmt.Errorf("read derivation %s: %w", name, err)
	}
	return d, nil
}

// Name is the derivation's name, from which Nix names the .drv and the
// outputs: the "name" variable of its environment, or the "name"
// attribute of its structured attrs.
func (d *Derivation) Name() string {
	if d.IsStructured() {
		var attrs struct {
			Name string `json:"name"`
		}
		d.structuredAttrs(&attrs)
		return attrs.Name
	}
	return d.Env["name"]
}

// IsFixedOutput reports whether d is a fixed-output derivation: exactly
// one output, "out", with a hash algorithm and a hash.
func (d *Derivation) IsFixedOutput() bool {
	if len(d.Outputs) != 1 {
		return false
	}
	o, ok := d.Outputs["out"]
	return ok && o.HashAlgo != "" && o.Hash != ""
}

// FixedOutput returns the hash mode and expected hash of a fixed-output
// derivation. The hash may be hex (as Nix writes it), nix32 or base64, as
// Nix accepts. ok is false when d is not a fixed-output derivation or its
// hash does not parse.
func (d *Derivation) FixedOutput() (method storepath.Method, h storepath.Hash, ok bool) {
	if !d.IsFixedOutput() {
		return 0, storepath.Hash{}, false
	}
	o := d.Outputs["out"]
	method = storepath.Flat
	algoName := o.HashAlgo
	if rest, found := strings.CutPrefix(algoName, "r:"); found {
		method, algoName = storepath.Recursive, rest
	}
	algo, err := storepath.ParseAlgo(algoName)
	if err != nil {
		return 0, storepath.Hash{}, false
	}
	h, err = storepath.ParseDigest(algo, o.Hash)
	if err != nil {
		return 0, storepath.Hash{}, false
	}
	return method, h, true
}

// PredictFixedOutputPath computes the output path of a fixed-output
// derivation from its hash mode, hash and name.
func (d *Derivation) PredictFixedOutputPath() (storepath.Path, error) {
	method, h, ok := d.FixedOutput()
	if !ok {
		return storepath.Path{}, fmt.Errorf("predict output path of %q: %w", d.Name(), ErrNotFixedOutput)
	}
	p, err := d.StoreDir.MakeFixedOutput(method, h, d.Name())
	if err != nil {
		return storepath.Path{}, fmt.Errorf("predict output path of %q: %w", d.Name(), err)
	}
	return p, nil
}

// OutputPaths returns the path of each output without building: as the
// .drv records it or, for a fixed-output derivation that leaves it empty,
// computed from its hash. A floating content-addressed or deferred
// output's path is known only after building: an error wrapping
// ErrUnsupported.
func (d *Derivation) OutputPaths() (map[string]storepath.Path, error) {
	fixed := d.IsFixedOutput()
	out := make(map[string]storepath.Path, len(d.Outputs))
	for name, o := range d.Outputs {
		switch {
		case o.Path != (storepath.Path{}):
			out[name] = o.Path
		case fixed:
			p, err := d.PredictFixedOutputPath()
			if err != nil {
				return nil, err
			}
			out[name] = p
		default:
			return nil, fmt.Errorf("output %s: %w: its path is known only after building (content-addressed)", name, ErrUnsupported)
		}
	}
	return out, nil
}

// FetchURLs returns the URLs a fixed-output derivation downloads from, as
// its environment or its structured attrs name them: "urls" (used by
// builtin:fetchurl and nixpkgs' fetchurl; space-separated in the
// environment, a list in structured attrs), then "url" (fetchgit's) if
// not already listed. It returns nil for other derivations and for
// fetchers that name no URL this way.
func (d *Derivation) FetchURLs() []string {
	if !d.IsFixedOutput() {
		return nil
	}
	var attrs struct {
		URLs stringOrList `json:"urls"`
		URL  stringOrList `json:"url"`
	}
	if !d.structuredAttrs(&attrs) {
		attrs.URLs, attrs.URL = strings.Fields(d.Env["urls"]), strings.Fields(d.Env["url"])
	}
	urls := []string(attrs.URLs)
	for _, u := range attrs.URL {
		if !slices.Contains(urls, u) {
			urls = append(urls, u)
		}
	}
	if len(urls) == 0 {
		return nil
	}
	return urls
}

// MirrorPath returns "ALGO/HEX", the path under a hashed mirror from which
// builtin:fetchurl fetches a flat fixed-output derivation. ok is false
// for recursive and non-fixed-output derivations, which no hashed mirror
// serves.
func (d *Derivation) MirrorPath() (p string, ok bool) {
	method, h, ok := d.FixedOutput()
	if !ok || method != storepath.Flat {
		return "", false
	}
	return h.Algo.String() + "/" + h.Hex(), true
}

// References are the store paths a .drv refers to: its input sources and
// input derivations, sorted.
func (d *Derivation) References() []storepath.Path {
	refs := slices.Clone(d.InputSrcs)
	for p := range d.InputDrvs {
		refs = append(refs, p)
	}
	slices.SortFunc(refs, storepath.Compare)
	return refs
}

// DrvPath computes the store path of d's .drv file as Nix writes it.
// Its references are the input sources and input .drvs.
func (d *Derivation) DrvPath() (storepath.Path, error) {
	name := d.Name()
	sum := sha256.Sum256(d.MarshalATerm())
	p, err := d.StoreDir.MakeText(storepath.Hash{Algo: storepath.SHA256, Digest: sum[:]}, name+".drv", d.References())
	if err != nil {
		return storepath.Path{}, fmt.Errorf("compute derivation path of %q: %w", name, err)
	}
	return p, nil
}

// MarshalATerm serialises d as Nix writes a .drv.
func (d *Derivation) MarshalATerm() []byte {
	var b bytes.Buffer
	d.writeATerm(&b, nil, false)
	return b.Bytes()
}

// WriteTo writes d's ATerm form to w.
func (d *Derivation) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(d.MarshalATerm())
	return int64(n), err
}

// writeATerm is Nix's Derivation::unparse. With inputs non-nil, it is
// written in place of InputDrvs (keys are hashes, not paths); mask writes
// empty output paths and empty values for output variables. Like Nix,
// it quotes names, paths and the platform without escaping, and escapes
// the builder, arguments and environment.
func (d *Derivation) writeATerm(b *bytes.Buffer, inputs map[string][]string, mask bool) {
	b.WriteString("Derive([")
	for i, name := range sortedKeys(d.Outputs) {
		o := d.Outputs[name]
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('(')
		quote(b, name)
		b.WriteByte(',')
		if mask || o.Path == (storepath.Path{}) {
			quote(b, "")
		} else {
			quote(b, o.Path.String())
		}
		b.WriteByte(',')
		quote(b, o.HashAlgo)
		b.WriteByte(',')
		quote(b, o.Hash)
		b.WriteByte(')')
	}
	b.WriteString("],[")
	if inputs == nil {
		inputs = make(map[string][]string, len(d.InputDrvs))
		for p, outs := range d.InputDrvs {
			inputs[p.String()] = outs
		}
	}
	for i, p := range sortedKeys(inputs) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('(')
		quote(b, p)
		b.WriteString(",[")
		for j, out := range inputs[p] {
			if j > 0 {
				b.WriteByte(',')
			}
			quote(b, out)
		}
		b.WriteString("])")
	}
	b.WriteString("],[")
	for i, p := range d.InputSrcs {
		if i > 0 {
			b.WriteByte(',')
		}
		quote(b, p.String())
	}
	b.WriteString("],")
	quote(b, d.Platform)
	b.WriteByte(',')
	escape(b, d.Builder)
	b.WriteString(",[")
	for i, a := range d.Args {
		if i > 0 {
			b.WriteByte(',')
		}
		escape(b, a)
	}
	b.WriteString("],[")
	for i, k := range sortedKeys(d.Env) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('(')
		escape(b, k)
		b.WriteByte(',')
		v := d.Env[k]
		if _, isOutput := d.Outputs[k]; mask && isOutput {
			v = ""
		}
		escape(b, v)
		b.WriteByte(')')
	}
	b.WriteString("])")
}

func sortedKeys[K ~string, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// quote is Nix's printUnquotedString.
func quote(b *bytes.Buffer, s string) {
	b.WriteByte('"')
	b.WriteString(s)
	b.WriteByte('"')
}

// escape is Nix's printString.
func escape(b *bytes.Buffer, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
}
