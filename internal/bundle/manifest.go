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
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/channel"
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
	// ErrCorrupt reports a file whose content is wrong: a bad hash or
	// size, an unparsable manifest or narinfo, a narinfo that disagrees
	// with the manifest.
	ErrCorrupt = errors.New("corrupt")
	// ErrMissing reports a file or store path that should be there and is
	// not, including a reference that resolves nowhere.
	ErrMissing = errors.New("missing")
	// ErrUnexpected reports a file the manifest does not account for.
	ErrUnexpected = errors.New("unexpected file")
	// ErrUnsupportedVersion reports a manifest of a newer format version.
	ErrUnsupportedVersion = errors.New("unsupported bundle version")
)

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

// Base is a bundle this one extends (pack --since), or a cache inventory
// it was packed against: information for people, since import checks
// references by content.
type Base struct {
	ID      storepath.Hash
	Created time.Time
	Paths   int
	// Provides are the base's paths that this bundle's targets need in
	// its mode and it does not carry itself, sorted: those its paths
	// refer to, which a cache must hold for the bundle to import, and, in
	// sources and build mode, the sources and build outputs nothing
	// refers to, which gc keeps for the bundle. Empty in manifests that
	// predate it.
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

// fileInfo is e's file as a narinfo says it, for cache.NARFileStats.
// narInfo is the narinfo of e, with the system and signatures given,
// which the manifest does not hold.
func (e *PathEntry) narInfo(system string, sigs []signing.Signature) *narinfo.NarInfo {
	return &narinfo.NarInfo{
		StorePath: e.Path, URL: e.URL, Compression: e.Compression, FileHash: e.FileHash, FileSize: e.FileSize,
		NarHash: e.NarHash, NarSize: e.NarSize, References: e.References, Deriver: e.Deriver,
		System: system, Sigs: sigs, CA: e.CA,
	}
}

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

// The JSON shapes, fields in the spec's order: encoding/json writes
// struct fields in declaration order.
type (
	jsonManifest struct {
		Format      string        `json:"format"`
		Version     int           `json:"version"`
		Tool        string        `json:"tool"`
		Created     string        `json:"created"`
		StoreDir    string        `json:"storeDir"`
		Mode        string        `json:"mode"`
		Derivations bool          `json:"derivations"`
		Targets     []jsonTarget  `json:"targets"`
		Bases       []jsonBase    `json:"bases"`
		Paths       []jsonPath    `json:"paths"`
		Files       []jsonFile    `json:"files"`
		Channels    []jsonChannel `json:"channels,omitempty"`
		VolumeSize  int64         `json:"volumeSize,omitempty"`
		Volumes     []jsonVolume  `json:"volumes,omitempty"`
	}
	jsonChannel struct {
		Name   string `json:"name"`
		Source string `json:"source"`
	}
	jsonTarget struct {
		Spec    string            `json:"spec"`
		DrvPath string            `json:"drvPath"`
		Outputs map[string]string `json:"outputs"`
	}
	jsonBase struct {
		ID       string   `json:"id"`
		Created  string   `json:"created"`
		Paths    int      `json:"paths"`
		Provides []string `json:"provides,omitempty"`
		Channels []string `json:"channels,omitempty"`
	}
	jsonPath struct {
		Path        string    `json:"path"`
		NarHash     string    `json:"narHash"`
		NarSize     uint64    `json:"narSize"`
		URL         string    `json:"url"`
		FileHash    string    `json:"fileHash"`
		FileSize    uint64    `json:"fileSize"`
		Compression string    `json:"compression"`
		References  []string  `json:"references"`
		Deriver     string    `json:"deriver"`
		CA          string    `json:"ca"`
		Roles       []string  `json:"roles"`
		Flat        *jsonFlat `json:"flat,omitempty"`
		jsonProvenance
		Delta *jsonDelta `json:"delta,omitempty"`
	}
	jsonFlat struct {
		MD5    string `json:"md5"`
		SHA1   string `json:"sha1"`
		SHA256 string `json:"sha256"`
		SHA512 string `json:"sha512"`
	}
	jsonFile struct {
		Name   string `json:"name"`
		SHA256 string `json:"sha256"`
		Size   int64  `json:"size"`
	}
)

// ParseManifest parses manifest.json. It refuses another format or a
// version other than Version (naming it), ignores unknown keys, and parses
// every store path in the manifest's storeDir. Errors wrap ErrCorrupt or
// ErrUnsupportedVersion.
func ParseManifest(data []byte) (*Manifest, error) {
	if len(data) > MaxManifestSize {
		return nil, fmt.Errorf("parse %s: %w: larger than %d bytes", ManifestName, ErrCorrupt, MaxManifestSize)
	}
	// Check format and version before the rest, so that a future
	// version with another shape is reported as such.
	var head struct {
		Format  *string `json:"format"`
		Version *int    `json:"version"`
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
	var j jsonManifest
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, fmt.Errorf("parse %s: %w: %v", ManifestName, ErrCorrupt, err)
	}
	m, err := fromJSON(&j)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w: %w", ManifestName, ErrCorrupt, err)
	}
	return m, nil
}

// fromJSON checks j and converts it; errors name the field at fault.
func fromJSON(j *jsonManifest) (*Manifest, error) {
	dir, err := storepath.ParseDir(j.StoreDir)
	if err != nil {
		return nil, fmt.Errorf("storeDir: %w", err)
	}
	created, err := parseTime(j.Created)
	if err != nil {
		return nil, fmt.Errorf("created: %w", err)
	}
	m := &Manifest{
		Format:      j.Format,
		Version:     j.Version,
		Tool:        j.Tool,
		Created:     created,
		StoreDir:    dir,
		Derivations: j.Derivations,
	}
	if m.Mode, err = role.ParseMode(j.Mode); err != nil {
		return nil, err
	}
	if m.Targets, err = targetsFromJSON(dir, j.Targets); err != nil {
		return nil, err
	}
	if m.Bases, err = basesFromJSON(dir, j.Bases); err != nil {
		return nil, err
	}
	if m.Paths, err = pathsFromJSON(dir, j.Version, j.Paths); err != nil {
		return nil, err
	}
	files, names, err := filesFromJSON(j.Files)
	if err != nil {
		return nil, err
	}
	m.Files = files
	if err := channelsFromJSON(m, j.Channels, names); err != nil {
		return nil, err
	}
	if len(j.Volumes) > 0 || j.VolumeSize != 0 {
		if j.Version < VolumesVersion {
			return nil, fmt.Errorf("volumes in a version %d manifest; a volume set's is version %d", j.Version, VolumesVersion)
		}
		if err := volumesFromJSON(m, j.VolumeSize, j.Volumes); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func targetsFromJSON(dir storepath.Dir, jts []jsonTarget) ([]Target, error) {
	var ts []Target
	for i, jt := range jts {
		t := Target{Spec: jt.Spec, Outputs: map[string]storepath.Path{}}
		var err error
		if jt.DrvPath != "" {
			if t.DrvPath, err = dir.Parse(jt.DrvPath); err != nil {
				return nil, fmt.Errorf("targets[%d].drvPath: %w", i, err)
			}
		}
		for name, p := range jt.Outputs {
			if t.Outputs[name], err = dir.Parse(p); err != nil {
				return nil, fmt.Errorf("targets[%d].outputs.%s: %w", i, name, err)
			}
		}
		ts = append(ts, t)
	}
	return ts, nil
}

func basesFromJSON(dir storepath.Dir, jbs []jsonBase) ([]Base, error) {
	var bs []Base
	for i, jb := range jbs {
		b := Base{Paths: jb.Paths}
		var err error
		if b.ID, err = parseSHA256(jb.ID); err != nil {
			return nil, fmt.Errorf("bases[%d].id: %w", i, err)
		}
		if b.Created, err = parseTime(jb.Created); err != nil {
			return nil, fmt.Errorf("bases[%d].created: %w", i, err)
		}
		for _, r := range jb.Provides {
			rp, err := dir.Base(r)
			if err != nil {
				return nil, fmt.Errorf("bases[%d].provides: %w", i, err)
			}
			b.Provides = append(b.Provides, rp)
		}
		for k, name := range jb.Channels {
			if err := channel.CheckName(name); err != nil {
				return nil, fmt.Errorf("bases[%d].channels: %w", i, err)
			}
			if k > 0 && jb.Channels[k-1] >= name {
				return nil, fmt.Errorf("bases[%d].channels: %s: not sorted and unique", i, name)
			}
		}
		b.Channels = jb.Channels
		bs = append(bs, b)
	}
	return bs, nil
}

// pathsFromJSON reads the paths of a manifest of the given version: they
// must be sorted and unique, which lets Manifest.path search them.
func pathsFromJSON(dir storepath.Dir, version int, jps []jsonPath) ([]PathEntry, error) {
	ps := make([]PathEntry, 0, len(jps))
	for i, jp := range jps {
		p, err := pathFromJSON(dir, &jp)
		if err != nil {
			return nil, fmt.Errorf("paths[%d] %s: %w", i, jp.Path, err)
		}
		if i > 0 {
			switch c := storepath.Compare(ps[i-1].Path, p.Path); {
			case c == 0:
				return nil, fmt.Errorf("paths[%d] %s: listed twice", i, jp.Path)
			case c > 0:
				return nil, fmt.Errorf("paths[%d] %s: paths not sorted", i, jp.Path)
			}
		}
		if p.Delta != nil && version < DeltasVersion {
			return nil, fmt.Errorf("paths[%d] %s: a delta in a version %d manifest", i, jp.Path, version)
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// filesFromJSON reads the files and returns their names too, for the
// channels to be checked against.
func filesFromJSON(jfs []jsonFile) ([]File, map[string]bool, error) {
	var fs []File
	names := map[string]bool{}
	for i, jf := range jfs {
		f := File{Name: jf.Name, Size: jf.Size}
		if err := checkFileName(jf.Name); err != nil {
			return nil, nil, fmt.Errorf("files[%d]: %w", i, err)
		}
		if names[jf.Name] {
			return nil, nil, fmt.Errorf("files[%d] %s: listed twice", i, jf.Name)
		}
		names[jf.Name] = true
		var err error
		if f.SHA256, err = parseHex(jf.SHA256, sha256.Size); err != nil {
			return nil, nil, fmt.Errorf("files[%d] %s: sha256: %w", i, jf.Name, err)
		}
		if f.Size < 0 {
			return nil, nil, fmt.Errorf("files[%d] %s: negative size", i, jf.Name)
		}
		fs = append(fs, f)
	}
	return fs, names, nil
}

// channelsFromJSON reads the channels: each names a file of the bundle,
// and every file under channels/ is a channel's.
func channelsFromJSON(m *Manifest, jcs []jsonChannel, files map[string]bool) error {
	declared := map[string]bool{}
	for i, jc := range jcs {
		if err := channel.CheckName(jc.Name); err != nil {
			return fmt.Errorf("channels[%d]: %w", i, err)
		}
		if declared[jc.Name] {
			return fmt.Errorf("channels[%d] %s: listed twice", i, jc.Name)
		}
		if i > 0 && jcs[i-1].Name > jc.Name {
			return fmt.Errorf("channels[%d] %s: channels not sorted", i, jc.Name)
		}
		if !files[channel.File(jc.Name)] {
			return fmt.Errorf("channels[%d] %s: its expressions, %s, are not in files", i, jc.Name, channel.File(jc.Name))
		}
		declared[jc.Name] = true
		m.Channels = append(m.Channels, Channel(jc))
	}
	for _, f := range m.Files {
		if strings.HasPrefix(f.Name, channel.Dir+"/") {
			if name, ok := channel.NameOf(f.Name); !ok || !declared[name] {
				return fmt.Errorf("files %s: under %s/ but no channel's", f.Name, channel.Dir)
			}
		}
	}
	return nil
}

func pathFromJSON(dir storepath.Dir, jp *jsonPath) (PathEntry, error) {
	var (
		p   PathEntry
		err error
	)
	if p.Path, err = dir.Parse(jp.Path); err != nil {
		return p, err
	}
	if p.NarHash, err = parseSHA256(jp.NarHash); err != nil {
		return p, fmt.Errorf("narHash: %w", err)
	}
	if p.NarSize = jp.NarSize; p.NarSize == 0 {
		return p, errors.New("narSize is 0")
	}
	if err := CheckURL(jp.URL); err != nil {
		return p, err
	}
	p.URL = jp.URL
	if p.FileHash, err = parseSHA256(jp.FileHash); err != nil {
		return p, fmt.Errorf("fileHash: %w", err)
	}
	p.FileSize = jp.FileSize
	if jp.Compression == "" {
		return p, errors.New("no compression")
	}
	p.Compression = jp.Compression
	for _, r := range jp.References {
		rp, err := dir.Base(r)
		if err != nil {
			return p, fmt.Errorf("references: %w", err)
		}
		p.References = append(p.References, rp)
	}
	if !slices.IsSortedFunc(p.References, storepath.Compare) || len(slices.CompactFunc(slices.Clone(p.References), func(a, b storepath.Path) bool { return a == b })) != len(p.References) {
		return p, errors.New("references not sorted and unique")
	}
	if jp.Deriver != "" {
		if p.Deriver, err = dir.Base(jp.Deriver); err != nil {
			return p, fmt.Errorf("deriver: %w", err)
		}
	}
	p.CA = jp.CA
	if len(jp.Roles) == 0 {
		return p, errors.New("no roles")
	}
	for _, r := range jp.Roles {
		rs, err := role.Parse(r)
		if err != nil {
			return p, err
		}
		p.Roles |= rs
	}
	if jf := jp.Flat; jf != nil {
		f := &FlatHashes{}
		for _, h := range []struct {
			name string
			s    string
			dst  *[]byte
			algo storepath.Algo
		}{{"md5", jf.MD5, &f.MD5, storepath.MD5}, {"sha1", jf.SHA1, &f.SHA1, storepath.SHA1}, {"sha256", jf.SHA256, &f.SHA256, storepath.SHA256}, {"sha512", jf.SHA512, &f.SHA512, storepath.SHA512}} {
			if *h.dst, err = parseHex(h.s, h.algo.Size()); err != nil {
				return p, fmt.Errorf("flat.%s: %w", h.name, err)
			}
		}
		p.Flat = f
	}
	if p.Origin, err = originFromJSON(jp.Origin); err != nil {
		return p, err
	}
	if p.Fetch, err = fetchFromJSON(jp.Fetch); err != nil {
		return p, err
	}
	if p.Delta, err = deltaFromJSON(dir, jp.Delta, p.URL); err != nil {
		return p, err
	}
	return p, nil
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339, s)
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func parseSHA256(s string) (storepath.Hash, error) {
	h, err := storepath.ParseHash(s)
	if err != nil {
		return h, err
	}
	if h.Algo != storepath.SHA256 {
		return h, fmt.Errorf("%q: want sha256", s)
	}
	return h, nil
}

func parseHex(s string, size int) ([]byte, error) {
	if len(s) != 2*size || strings.ToLower(s) != s {
		return nil, fmt.Errorf("%q: want %d lower-case hex digits", s, 2*size)
	}
	return hex.DecodeString(s)
}

// Marshal writes m as manifest.json: keys in the spec's order, paths
// sorted by path, hashes as "sha256:NIX32", two-space indentation and a
// final newline. The same Manifest always gives the same bytes.
func (m *Manifest) Marshal() ([]byte, error) {
	j, err := m.toJSON()
	if err != nil {
		return nil, fmt.Errorf("marshal %s: %w", ManifestName, err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(j); err != nil {
		return nil, fmt.Errorf("marshal %s: %w", ManifestName, err)
	}
	return buf.Bytes(), nil
}

// toJSON is m in manifest.json's shape. The lists the spec requires are
// empty rather than nil, so that they encode as [].
func (m *Manifest) toJSON() (*jsonManifest, error) {
	if _, err := storepath.ParseDir(string(m.StoreDir)); err != nil {
		return nil, fmt.Errorf("storeDir: %w", err)
	}
	paths, err := pathsToJSON(m.Paths)
	if err != nil {
		return nil, err
	}
	j := &jsonManifest{
		Format:      m.Format,
		Version:     m.Version,
		Tool:        m.Tool,
		Created:     formatTime(m.Created),
		StoreDir:    string(m.StoreDir),
		Mode:        m.Mode.String(),
		Derivations: m.Derivations,
		Targets:     targetsToJSON(m.Targets),
		Bases:       basesToJSON(m.Bases),
		Paths:       paths,
		Files:       filesToJSON(m.Files),
		Channels:    channelsToJSON(m.Channels),
	}
	if j.Format == "" {
		j.Format = Format
	}
	if j.Version == 0 {
		j.Version = m.version()
	}
	if len(m.Volumes) > 0 {
		j.Version, j.VolumeSize, j.Volumes = VolumesVersion, m.VolumeSize, volumesToJSON(m.Volumes)
	}
	return j, nil
}

func targetsToJSON(ts []Target) []jsonTarget {
	jts := make([]jsonTarget, 0, len(ts))
	for _, t := range ts {
		jt := jsonTarget{Spec: t.Spec, Outputs: map[string]string{}}
		if t.DrvPath != (storepath.Path{}) {
			jt.DrvPath = t.DrvPath.String()
		}
		for name, p := range t.Outputs {
			jt.Outputs[name] = p.String()
		}
		jts = append(jts, jt)
	}
	return jts
}

func basesToJSON(bs []Base) []jsonBase {
	jbs := make([]jsonBase, 0, len(bs))
	for _, b := range bs {
		jb := jsonBase{ID: b.ID.String(), Created: formatTime(b.Created), Paths: b.Paths}
		provides := slices.Clone(b.Provides)
		slices.SortFunc(provides, storepath.Compare)
		for _, p := range slices.Compact(provides) {
			jb.Provides = append(jb.Provides, p.Base())
		}
		jb.Channels = slices.Compact(slices.Sorted(slices.Values(b.Channels)))
		jbs = append(jbs, jb)
	}
	return jbs
}

// pathsToJSON sorts a copy of ps by path and refuses a path listed twice.
func pathsToJSON(ps []PathEntry) ([]jsonPath, error) {
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b PathEntry) int { return storepath.Compare(a.Path, b.Path) })
	jps := make([]jsonPath, 0, len(ps))
	for i := range ps {
		p := &ps[i]
		if i > 0 && ps[i-1].Path == p.Path {
			return nil, fmt.Errorf("%s listed twice", p.Path)
		}
		jp, err := p.toJSON()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.Path, err)
		}
		jps = append(jps, jp)
	}
	return jps, nil
}

// toJSON is p's entry in manifest.json, its references sorted and unique.
func (p *PathEntry) toJSON() (jsonPath, error) {
	jp := jsonPath{
		Path:        p.Path.String(),
		NarHash:     p.NarHash.String(),
		NarSize:     p.NarSize,
		URL:         p.URL,
		FileHash:    p.FileHash.String(),
		FileSize:    p.FileSize,
		Compression: p.Compression,
		References:  []string{},
		CA:          p.CA,
		Roles:       append([]string{}, p.Roles.Names()...),
	}
	refs := slices.Clone(p.References)
	slices.SortFunc(refs, storepath.Compare)
	for _, r := range slices.Compact(refs) {
		jp.References = append(jp.References, r.Base())
	}
	if p.Deriver != (storepath.Path{}) {
		jp.Deriver = p.Deriver.Base()
	}
	if f := p.Flat; f != nil {
		jp.Flat = &jsonFlat{MD5: hex.EncodeToString(f.MD5), SHA1: hex.EncodeToString(f.SHA1), SHA256: hex.EncodeToString(f.SHA256), SHA512: hex.EncodeToString(f.SHA512)}
	}
	jp.Origin = p.Origin.toJSON()
	jp.Delta = p.Delta.toJSON()
	var err error
	jp.Fetch, err = p.Fetch.toJSON()
	return jp, err
}

func filesToJSON(fs []File) []jsonFile {
	fs = slices.Clone(fs)
	slices.SortFunc(fs, func(a, b File) int { return strings.Compare(a.Name, b.Name) })
	jfs := make([]jsonFile, 0, len(fs))
	for _, f := range fs {
		jfs = append(jfs, jsonFile{Name: f.Name, SHA256: hex.EncodeToString(f.SHA256), Size: f.Size})
	}
	return jfs
}

func channelsToJSON(cs []Channel) []jsonChannel {
	cs = slices.Clone(cs)
	slices.SortFunc(cs, func(a, b Channel) int { return strings.Compare(a.Name, b.Name) })
	var jcs []jsonChannel
	for _, c := range cs {
		jcs = append(jcs, jsonChannel(c))
	}
	return jcs
}
