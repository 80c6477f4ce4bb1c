// Package inventory says what bundles and caches hold, for the people and
// the tools that review a crossing: the packages by name and version (as
// builtins.parseDrvName splits store path names), the sources with the
// URLs they were fetched from, where each path came from, sizes, signers,
// and, between two of them, what changed. `nix-airgap show` and `diff`
// print it; internal/sbom turns it into an SBOM.
//
// It reads only manifests (and their signatures): showing a bundle does
// not verify its files, which `verify` does.
package inventory

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/drvname"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Inventory is what one bundle, manifest or cache holds.
type Inventory struct {
	// Source is what was opened, as given.
	Source string `json:"source"`
	// Kind is KindBundle, KindManifest or KindCache.
	Kind     string        `json:"kind"`
	StoreDir storepath.Dir `json:"storeDir"`
	// Bundles are the bundle's manifest, or the cache's imported
	// bundles, oldest first.
	Bundles []Bundle `json:"bundles"`
	// Packages are the paths that are neither sources nor .drv files,
	// grouped by package name and version, sorted.
	Packages []Package `json:"packages"`
	// Sources are the fixed-output paths, sorted by name.
	Sources []Source `json:"sources"`
	// Totals count every path, .drv files included.
	Totals Totals `json:"totals"`

	paths []Path // sorted by path
	// alsoIDs are ids inv stands for besides its bundles': an inventory
	// file's own, which deltas packed against it name as their base.
	alsoIDs []string
	// merged says inv is a Merge of bundles, which diff reads as it
	// reads a bundle: a delta stands for what its bases provide too.
	merged bool
}

// Bundle is one bundle's manifest, without its paths.
type Bundle struct {
	ID      string    `json:"id"`
	Tool    string    `json:"tool"`
	Created time.Time `json:"created"`
	// Mode is "" where a cache inventory, which does not record it,
	// names the bundle.
	Mode        string    `json:"mode"`
	Derivations bool      `json:"derivations"`
	Targets     []Target  `json:"targets"`
	Bases       []string  `json:"bases"`
	Paths       int       `json:"paths"`
	Files       []string  `json:"files"`
	Signature   Signature `json:"signature"`
	manifest    *bundle.Manifest
}

// Target is one thing the bundle was packed for.
type Target struct {
	Spec    string            `json:"spec"`
	DrvPath string            `json:"drvPath,omitempty"`
	Outputs map[string]string `json:"outputs"`
}

// Signature says who signed a manifest.
type Signature struct {
	// Keys are the key names on manifest.json.sig; none for an unsigned
	// bundle.
	Keys []string `json:"keys"`
	// Trusted is the trusted key whose signature verified, when Open was
	// given keys; "" otherwise.
	Trusted string `json:"trusted"`
	// Checked says whether Open was given keys to check against.
	Checked bool `json:"checked"`
}

// Path is one store path with what the inventory makes of it.
type Path struct {
	bundle.PathEntry
	// Package is the path's package name and version: of its deriver's
	// name when the path is one of its outputs, else of its own name.
	Package drvname.Name
	// Output is the output name the deriver gives the path ("out",
	// "man"); "" when there is no deriver to tell.
	Output string
	// Bundle is the id of the bundle that brought the path.
	Bundle string

	// sizeUnknown says the path's sizes are not known: a path a delta's
	// bases provide, which its manifest names alone.
	sizeUnknown bool
}

// Package is the paths of one package name and version.
type Package struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// Outputs are the paths' output names, sorted ("" when unknown).
	Outputs []string `json:"outputs"`
	Paths   []string `json:"paths"`
	// Builds counts the builds of the version, as diff does: the most
	// paths of any one output (a cache keeps an old build beside a
	// rebuild).
	Builds int `json:"builds"`
	// NarSize and FileSize add up the paths' NAR and compressed sizes.
	NarSize  uint64 `json:"narBytes"`
	FileSize uint64 `json:"fileBytes"`
	// Roles are every role of the paths.
	Roles []string `json:"roles"`
	// Origins are where the paths came from, as Origin.String spells it.
	Origins []string `json:"origins"`
}

// Source is one fixed-output path: a tarball, a git checkout, a bootstrap
// binary, a flake input.
type Source struct {
	Name string `json:"name"`
	Path string `json:"path"`
	// URLs are what its derivation fetched from; empty when the manifest
	// does not say (packed in runtime mode, by an older nix-airgap, or a
	// fetcher naming none).
	URLs []string `json:"urls"`
	// Hash is the fixed-output hash, as Nix's content address spells it
	// ("fixed:r:sha256:NIX32" for a recursive one); "" when unknown.
	Hash     string   `json:"hash"`
	NarSize  uint64   `json:"narSize"`
	FileSize uint64   `json:"fileSize"`
	Roles    []string `json:"roles"`
	Origin   string   `json:"origin"`
	// Flat are the file's hashes, for a flat one.
	Flat *bundle.FlatHashes `json:"-"`
}

// Totals count paths and bytes. FileSize counts a NAR file several paths
// share (their NARs are the same bytes) once, as a bundle or cache holds
// it.
type Totals struct {
	Paths       int            `json:"paths"`
	Derivations int            `json:"derivations"`
	NarSize     uint64         `json:"narBytes"`
	FileSize    uint64         `json:"fileBytes"`
	Roles       map[string]int `json:"roles"`
	// Origins count paths by where they came from, as Origin spells it.
	Origins map[string]int `json:"origins"`
}

// FromManifest makes an inventory of one manifest (pack's, before it is
// written). source names it.
func FromManifest(source string, m *bundle.Manifest) *Inventory {
	inv := &Inventory{Source: source, Kind: KindManifest, StoreDir: m.StoreDir}
	b := newBundle(m, "")
	inv.Bundles = []Bundle{b}
	inv.addPaths([]*bundle.Manifest{m}, []string{""}, nil, nil)
	return inv
}

// build makes the inventory of the manifests recs. present, if not nil,
// holds the hash parts of the paths there are, a cache's narinfos: the
// paths the manifests list and present lacks are left out.
func build(src, kind string, recs []record, keys *signing.Keyring, present map[string]bool, stored func(*bundle.PathEntry)) (*Inventory, error) {
	inv := &Inventory{Source: src, Kind: kind, Bundles: []Bundle{}}
	var ms []*bundle.Manifest
	var ids []string
	for _, r := range recs {
		m, err := bundle.ParseManifest(r.data)
		if err != nil {
			return nil, r.named(err)
		}
		if inv.StoreDir == "" {
			inv.StoreDir = m.StoreDir
		} else if m.StoreDir != inv.StoreDir {
			return nil, fmt.Errorf("bundles of two store dirs, %s and %s", inv.StoreDir, m.StoreDir)
		}
		id := bundle.ID(r.data).String()
		b := newBundle(m, id)
		sigs, err := bundle.ParseSigs(r.sig)
		if err != nil {
			return nil, r.named(err)
		}
		for _, s := range sigs {
			b.Signature.Keys = append(b.Signature.Keys, s.KeyName)
		}
		if keys != nil {
			b.Signature.Checked = true
			pk, err := bundle.VerifySignatures(r.data, r.sig, keys)
			if err == nil {
				b.Signature.Trusted = pk.Name
			} else if errors.Is(err, bundle.ErrCorrupt) {
				return nil, err
			}
		}
		inv.Bundles = append(inv.Bundles, b)
		ms, ids = append(ms, m), append(ids, id)
	}
	slices.SortStableFunc(inv.Bundles, func(a, b Bundle) int { return a.Created.Compare(b.Created) })
	inv.addPaths(ms, ids, present, stored)
	return inv, nil
}

// emptyCache reports whether inv is a cache that holds nothing and has
// no bundle imported: one just made, or a directory of nix-cache-info
// alone.
func (inv *Inventory) emptyCache() bool {
	return inv.Kind == KindCache && len(inv.Bundles) == 0 && inv.Totals.Paths == 0
}

// emptyCacheText says so, for show and diff.
const emptyCacheText = "an empty cache: it holds no store path, and no bundle was imported into it"

func newBundle(m *bundle.Manifest, id string) Bundle {
	b := Bundle{
		ID: id, Tool: m.Tool, Created: m.Created, Mode: m.Mode.String(), Derivations: m.Derivations,
		Paths: len(m.Paths), Targets: []Target{}, Bases: []string{}, Files: []string{}, manifest: m,
	}
	b.Signature.Keys = []string{}
	for _, t := range m.Targets {
		jt := Target{Spec: t.Spec, Outputs: map[string]string{}}
		if t.DrvPath != (storepath.Path{}) {
			jt.DrvPath = t.DrvPath.String()
		}
		for name, p := range t.Outputs {
			jt.Outputs[name] = p.String()
		}
		b.Targets = append(b.Targets, jt)
	}
	for _, base := range m.Bases {
		b.Bases = append(b.Bases, base.ID.String())
	}
	for _, f := range m.Files {
		b.Files = append(b.Files, f.Name)
	}
	return b
}

// addPaths adds the manifests' paths, each once, and groups them. stored,
// if not nil, gives a cache's own file of a path carried as a delta.
func (inv *Inventory) addPaths(ms []*bundle.Manifest, ids []string, present map[string]bool, stored func(*bundle.PathEntry)) {
	seen := map[storepath.Path]bool{}
	for i, m := range ms {
		for _, e := range m.Paths {
			if seen[e.Path] || present != nil && !present[e.Path.Hash] {
				continue
			}
			seen[e.Path] = true
			if e.Delta != nil && stored != nil {
				stored(&e)
			}
			inv.paths = append(inv.paths, newPath(e, ids[i]))
		}
	}
	slices.SortFunc(inv.paths, func(a, b Path) int { return storepath.Compare(a.Path, b.Path) })
	inv.group()
}

func newPath(e bundle.PathEntry, id string) Path {
	p := Path{PathEntry: e, Bundle: id}
	name := e.Path.Name
	if d := e.Deriver; d != (storepath.Path{}) {
		drvName := strings.TrimSuffix(d.Name, ".drv")
		switch {
		case name == drvName:
			name, p.Output = drvName, "out"
		case strings.HasPrefix(name, drvName+"-"):
			name, p.Output = drvName, name[len(drvName)+1:]
		}
	}
	p.Package = drvname.Parse(name)
	return p
}

// IsSource reports whether p is a fixed-output path: a fetched source, or
// a flake input.
func (p *Path) IsSource() bool {
	return p.Fetch != nil || strings.HasPrefix(p.CA, "fixed:") || p.Roles.Has(role.FlakeInput)
}

// IsDerivation reports whether p is a .drv file.
func (p *Path) IsDerivation() bool { return p.Path.IsDerivation() }

// OriginString spells where a path came from: "store", "build",
// "upstream URL (signed by KEYS)", or "unknown" for manifests that
// predate it.
func OriginString(o *bundle.Origin) string {
	switch {
	case o == nil:
		return "unknown"
	case o.From != bundle.FromUpstream:
		return o.From
	case len(o.Keys) == 0:
		return "upstream " + o.URL + " (unsigned, content-addressed)"
	}
	return "upstream " + o.URL + " (signed by " + strings.Join(o.Keys, ", ") + ")"
}

func (inv *Inventory) group() {
	inv.Packages, inv.Sources = []Package{}, []Source{}
	inv.Totals = totals(inv.paths, nil)
	type key struct{ name, version string }
	pkgs := map[key]*Package{}
	for i := range inv.paths {
		p := &inv.paths[i]
		switch {
		case p.IsDerivation():
			continue
		case p.IsSource():
			inv.Sources = append(inv.Sources, newSource(p))
			continue
		}
		k := key{p.Package.Name, p.Package.Version}
		pkg := pkgs[k]
		if pkg == nil {
			pkg = &Package{Name: k.name, Version: k.version}
			pkgs[k] = pkg
		}
		pkg.Outputs = append(pkg.Outputs, p.Output)
		pkg.Paths = append(pkg.Paths, p.Path.String())
		pkg.NarSize += p.NarSize
		pkg.FileSize += p.FileSize
		pkg.Roles = append(pkg.Roles, p.Roles.Names()...)
		pkg.Origins = append(pkg.Origins, OriginString(p.Origin))
	}
	for _, pkg := range pkgs {
		perOutput := map[string]int{}
		for _, o := range pkg.Outputs {
			perOutput[o]++
			pkg.Builds = max(pkg.Builds, perOutput[o])
		}
		roles, _ := parseRoles(pkg.Roles)
		pkg.Roles = roles.Names()
		pkg.Outputs = sortedSet(pkg.Outputs)
		pkg.Origins = sortedSet(pkg.Origins)
		inv.Packages = append(inv.Packages, *pkg)
	}
	slices.SortFunc(inv.Packages, func(a, b Package) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.Version, b.Version))
	})
	slices.SortFunc(inv.Sources, func(a, b Source) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.Path, b.Path))
	})
}

func newSource(p *Path) Source {
	s := Source{
		Name: p.Path.Name, Path: p.Path.String(), URLs: []string{}, NarSize: p.NarSize, FileSize: p.FileSize,
		Roles: p.Roles.Names(), Origin: OriginString(p.Origin), Flat: p.Flat, Hash: p.CA,
	}
	if f := p.Fetch; f != nil {
		s.URLs = append(s.URLs, f.URLs...)
		s.Hash = "fixed:" + f.Method.Prefix() + f.Hash.String()
	}
	return s
}

func parseRoles(names []string) (role.Set, error) {
	var s role.Set
	for _, n := range names {
		r, err := role.Parse(n)
		if err != nil {
			return s, err
		}
		s |= r
	}
	return s, nil
}

func sortedSet(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}

// Paths returns every path, sorted.
func (inv *Inventory) Paths() []Path { return inv.paths }
