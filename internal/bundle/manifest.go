// Package bundle writes, verifies and imports nix-airgap bundles: binary
// caches that carry a signed manifest.json saying what they hold and why.
// docs/bundle-format.md is the normative description of the format.
//
// A bundle exists as a directory (a cache.Cache plus the manifest) or as a
// tar stream of the same files. Writer writes either form; Verify checks
// either form against trusted keys, streaming and hashing every file;
// Import merges a verified bundle into a long-lived cache directory
// without ever exposing a narinfo whose NAR is not complete and durable.
package bundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Format and Version are what manifest.json's "format" and "version" must
// say for this package to read it.
const (
	Format  = "nix-airgap-bundle"
	Version = 1
)

// Sentinel errors. Callers branch on them with errors.Is; the CLI maps
// them to exit codes.
var (
	// ErrUntrusted reports a bundle no trusted key signed.
	ErrUntrusted = errors.New("not signed by a trusted key")
	// ErrUnsigned reports a bundle with no signature at all. It wraps
	// ErrUntrusted.
	ErrUnsigned = fmt.Errorf("unsigned (%w)", ErrUntrusted)
	// ErrBadSignature reports signatures, each by a key trusted by name,
	// of which none matches what it signs: that, or the signature, was
	// changed after signing. It matches ErrUntrusted too: nothing a
	// trusted key signed is there.
	ErrBadSignature error = badSignature{}
	// ErrCorrupt reports a file whose content is wrong: a bad hash or
	// size, an unparsable manifest or narinfo, a narinfo that disagrees
	// with the manifest.
	ErrCorrupt = errors.New("corrupt")
	// ErrMissing reports a file or store path that should be there and is
	// not, including a reference that resolves nowhere.
	ErrMissing = errors.New("missing")
	// ErrUnexpected reports a file the manifest does not account for.
	ErrUnexpected = errors.New("unexpected file")
	// ErrUnreadable reports a file the store would not give (no
	// permission to read it): neither damaged nor missing, and not
	// mended by a repair.
	ErrUnreadable = errors.New("unreadable")
	// ErrUnsupportedVersion reports a manifest of a newer format version.
	ErrUnsupportedVersion = errors.New("unsupported bundle version")
)

type badSignature struct{}

func (badSignature) Error() string        { return "bad signature" }
func (badSignature) Is(target error) bool { return target == ErrUntrusted }

// Manifest is manifest.json: what a bundle holds and why.
type Manifest struct {
	// Format and Version are Format and Version; Marshal fills them in
	// when empty.
	Format  string
	Version int
	// Tool is the program and version that packed the bundle.
	Tool    string
	Created time.Time
	// StoreDir is the store dir of every path; it must equal
	// nix-cache-info's StoreDir.
	StoreDir    storepath.Dir
	Mode        role.Mode
	Derivations bool
	Targets     []Target
	Bases       []Base
	// Paths are sorted by Path after ParseManifest, and Marshal sorts
	// them.
	Paths []PathEntry
	Files []File
	// Channels are the nixpkgs channels the bundle carries, sorted by
	// name; each one's expressions are the file channel.File(Name).
	Channels []Channel
	// VolumeSize and Volumes describe a volume set (version 2): the
	// most bytes a volume holds, and what each volume holds, in order.
	// Both are zero for a bundle in one piece.
	VolumeSize int64
	Volumes    []Volume
}

// Channel is a nixpkgs channel a bundle carries, for nix-channel and
// NIX_PATH users: import installs it into the cache and serve publishes
// it under /channels/NAME.
type Channel struct {
	Name string
	// Source is what pack took it from, as given: a directory, a
	// tarball, a URL, or a NIX_PATH lookup such as <nixpkgs>.
	Source string
}

// Target is one thing the user asked for and what it resolved to.
type Target struct {
	// Spec is the target as typed (".#hello", "./default.nix -A x").
	Spec string
	// DrvPath is the zero Path when the target has no derivation (a flake
	// input, a plain store path).
	DrvPath storepath.Path
	// Outputs maps output names to paths.
	Outputs map[string]storepath.Path
}

// The kinds of base (Base.Kind).
const (
	BaseBundle    = "bundle"
	BaseInventory = "inventory"
)

// Base is a bundle this one extends (pack --since), or a cache inventory
// it was packed against: import checks by content, not by which bases
// were imported, that the cache holds what the bases provide.
type Base struct {
	ID      storepath.Hash
	Created time.Time
	Paths   int
	// Kind is BaseBundle or BaseInventory (pack --since inventory.json,
	// whose ID is the file's sha256, which no command prints); "" in
	// manifests that predate it; another value is taken as unknown.
	Kind string
	// Provides are the paths the base holds (carries, or holds through
	// what those refer to and its own bases provided: a delta of a
	// delta) that this bundle's targets need in its mode and it does not
	// carry itself, sorted: those its paths
	// refer to, which a cache must hold for the bundle to import, and, in
	// sources and build mode, the sources and build outputs nothing
	// refers to, which gc keeps for the bundle. Nil in manifests that
	// predate it; empty, not nil, when the base provides nothing.
	Provides []storepath.Path
	// Channels are the channels this bundle was asked to carry and
	// leaves out because the base carries the very same tarball, sorted:
	// gc keeps them for the bundle. Empty in manifests that predate it.
	Channels []string
}

// PathEntry is one store path of a bundle. Every field agrees with the
// path's narinfo.
type PathEntry struct {
	Path        storepath.Path
	NarHash     storepath.Hash
	NarSize     uint64
	URL         string
	FileHash    storepath.Hash
	FileSize    uint64
	Compression string
	// References are sorted, in the manifest's store dir.
	References []storepath.Path
	// Deriver is the zero Path when unknown.
	Deriver storepath.Path
	CA      string
	Roles   role.Set
	// Flat is set only for the output of a flat fixed-output derivation.
	Flat *FlatHashes
	// Origin is where pack took the path from; Fetch is set for the
	// output of a fixed-output derivation whose .drv pack read. Both are
	// nil in manifests that predate them.
	Origin *Origin
	Fetch  *Fetch
	// Delta is set when the path's NAR travels as a binary delta.
	Delta *Delta
}

// path finds the entry with hash part h.
func (m *Manifest) path(h string) (*PathEntry, bool) {
	i, ok := slices.BinarySearchFunc(m.Paths, h, func(e PathEntry, h string) int { return strings.Compare(e.Path.Hash, h) })
	if !ok {
		return nil, false
	}
	return &m.Paths[i], true
}

// narInfo is the narinfo of e, with the system and signatures given,
// which the manifest does not hold.
func (e *PathEntry) narInfo(system string, sigs []signing.Signature) *narinfo.NarInfo {
	return &narinfo.NarInfo{
		StorePath: e.Path, URL: e.URL, Compression: e.Compression, FileHash: e.FileHash, FileSize: e.FileSize,
		NarHash: e.NarHash, NarSize: e.NarSize, References: e.References, Deriver: e.Deriver,
		System: system, Sigs: sigs, CA: e.CA,
	}
}

// fileInfo is e's file as a narinfo says it, for cache.NARFileStats.
func (e *PathEntry) fileInfo() *narinfo.NarInfo {
	return &narinfo.NarInfo{
		StorePath: e.Path, URL: e.URL, Compression: e.Compression,
		FileHash: e.FileHash, FileSize: e.FileSize, NarHash: e.NarHash, NarSize: e.NarSize,
	}
}

// File is a bundle file that is neither a narinfo, a NAR file,
// nix-cache-info, nor the manifest and its signatures.
type File struct {
	// Name is slash-separated and relative: "flake-registry.json",
	// "log/HASH-NAME.drv".
	Name   string
	SHA256 []byte
	Size   int64
}

// ParseManifest parses manifest.json. It refuses another format or a
// version other than Version (naming it), ignores unknown keys, and parses
// every store path in the manifest's storeDir. Errors wrap ErrCorrupt or
// ErrUnsupportedVersion.
func ParseManifest(data []byte) (*Manifest, error) { return parseManifest(data, true) }

// parseManifest is ParseManifest, keeping the targets only if targets:
// import never reads them, and a channel's 100,000 hold 80 MB.
func parseManifest(data []byte, targets bool) (*Manifest, error) {
	if len(data) > MaxManifestSize {
		return nil, fmt.Errorf("parse %s: %w: larger than %d bytes", ManifestName, ErrCorrupt, MaxManifestSize)
	}
	// Check format and version before the rest, so that a future
	// version with another shape is reported as such.
	var head struct {
		Format   *string         `json:"format"`
		Version  *int            `json:"version"`
		StoreDir json.RawMessage `json:"storeDir"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("parse %s: %w: %v", ManifestName, ErrCorrupt, err)
	}
	if head.Format == nil || *head.Format != Format {
		got := "none"
		if head.Format != nil {
			got = fmt.Sprintf("%q", *head.Format)
		}
		return nil, fmt.Errorf("parse %s: %w: format is %s, want %q", ManifestName, ErrCorrupt, got, Format)
	}
	if head.Version == nil {
		return nil, fmt.Errorf("parse %s: %w: no version", ManifestName, ErrCorrupt)
	}
	if *head.Version < Version || *head.Version > VolumesVersion {
		if *head.Version > VolumesVersion {
			return nil, fmt.Errorf("parse %s: %w: version %d is newer than the %d this nix-airgap reads; upgrade nix-airgap", ManifestName, ErrUnsupportedVersion, *head.Version, VolumesVersion)
		}
		return nil, fmt.Errorf("parse %s: %w: version %d, want %d to %d", ManifestName, ErrCorrupt, *head.Version, Version, VolumesVersion)
	}
	// The targets and paths are checked as they are decoded, in the
	// store dir, if it is good (else fromJSON says so first).
	ts, ps := &targetList{keep: targets}, &pathList{version: *head.Version}
	var storeDir string
	if json.Unmarshal(head.StoreDir, &storeDir) == nil {
		if dir, err := storepath.ParseDir(storeDir); err == nil {
			ts.dir, ps.dir = dir, dir
		}
	}
	var j jsonManifest
	if err := decodeManifest(data, &j, ts, ps); err != nil {
		return nil, fmt.Errorf("parse %s: %w: %v", ManifestName, ErrCorrupt, err)
	}
	m, err := fromJSON(&j, ts, ps)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w: %w", ManifestName, ErrCorrupt, err)
	}
	return m, nil
}

// Marshal writes m as manifest.json: keys in the spec's order, paths
// sorted by path, hashes as "sha256:NIX32", two-space indentation and a
// final newline. The same Manifest always gives the same bytes.
//
// Targets and paths are encoded one at a time, first only to count the
// bytes, so that a channel-sized manifest (100 MB for 100,000 paths) is
// held once, in a buffer of its exact size, rather than as JSON-shaped
// values plus encoding/json's buffers, which took four times its size.
func (m *Manifest) Marshal() ([]byte, error) {
	n, err := m.size()
	if err != nil {
		return nil, err
	}
	buf := bytes.NewBuffer(make([]byte, 0, n))
	if err := m.writeJSON(buf); err != nil {
		return nil, fmt.Errorf("marshal %s: %w", ManifestName, err)
	}
	return buf.Bytes(), nil
}

// size is the length of what Marshal returns, counted without holding it.
func (m *Manifest) size() (int64, error) {
	n := nar.CountingWriter{W: io.Discard}
	if err := m.writeJSON(&n); err != nil {
		return 0, fmt.Errorf("marshal %s: %w", ManifestName, err)
	}
	return n.N, nil
}

// writeJSON writes what Marshal returns to w: the rest of the manifest
// as encoding/json indents it, with its empty targets and paths lists
// filled in element by element, each indented as it would be there.
func (m *Manifest) writeJSON(w io.Writer) error {
	paths := m.Paths
	cmpPath := func(a, b PathEntry) int { return storepath.Compare(a.Path, b.Path) }
	if !slices.IsSortedFunc(paths, cmpPath) {
		paths = slices.Clone(paths)
		slices.SortFunc(paths, cmpPath)
	}
	for i := 1; i < len(paths); i++ {
		if paths[i-1].Path == paths[i].Path {
			return fmt.Errorf("%s listed twice", paths[i].Path)
		}
	}
	j, err := m.headJSON()
	if err != nil {
		return err
	}
	var head bytes.Buffer
	if err := newJSONEncoder(&head, "").Encode(j); err != nil {
		return err
	}
	// Inside the indented head, a newline is one only between keys, so
	// these occur once, as the empty lists.
	rest := head.Bytes()
	tgts, ok1 := cutAfter(&rest, "\n  \"targets\": [")
	pths, ok2 := cutAfter(&rest, "\n  \"paths\": [")
	if !ok1 || !ok2 {
		return errors.New("no targets or paths in the manifest's head")
	}
	var elem bytes.Buffer
	enc := newJSONEncoder(&elem, "    ")
	list := func(before []byte, n int, encode func(i int) error) error {
		if _, err := w.Write(before); err != nil {
			return err
		}
		for i := range n {
			elem.Reset()
			if i > 0 {
				elem.WriteByte(',')
			}
			elem.WriteString("\n    ")
			if err := encode(i); err != nil {
				return err
			}
			elem.Truncate(elem.Len() - 1) // Encode's newline
			if i == n-1 {
				elem.WriteString("\n  ")
			}
			if _, err := w.Write(elem.Bytes()); err != nil {
				return err
			}
		}
		return nil
	}
	if err := list(tgts, len(m.Targets), func(i int) error { return enc.Encode(m.Targets[i].toJSON()) }); err != nil {
		return err
	}
	if err := list(pths, len(paths), func(i int) error {
		jp, err := paths[i].toJSON()
		if err != nil {
			return fmt.Errorf("%s: %w", paths[i].Path, err)
		}
		return enc.Encode(jp)
	}); err != nil {
		return err
	}
	_, err = w.Write(rest)
	return err
}

// newJSONEncoder encodes as Marshal does, each line after the first
// starting with prefix.
func newJSONEncoder(w io.Writer, prefix string) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent(prefix, "  ")
	return enc
}

// cutAfter returns the bytes of *b up to and including sep, and leaves
// the rest in *b.
func cutAfter(b *[]byte, sep string) ([]byte, bool) {
	i := bytes.Index(*b, []byte(sep))
	if i < 0 {
		return nil, false
	}
	before := (*b)[:i+len(sep)]
	*b = (*b)[i+len(sep):]
	return before, true
}
