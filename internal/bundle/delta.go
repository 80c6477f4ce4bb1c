package bundle

import (
	"errors"
	"fmt"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/nardelta"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// deltasVersion is the manifest version of a bundle that carries binary
// deltas (docs/bundle-format.md §10): a reader of version 1 would look for
// NAR files that are not there, so it must refuse the bundle instead.
// Bundles without deltas are still written as Version.
const deltasVersion = 2

// DeltaExt is a delta file's extension, as a compression's is a NAR
// file's: nar/NIX32(sha256(file)).nar.delta.
const DeltaExt = ".delta"

// isDeltaFile tells a delta file by its name.
func isDeltaFile(name string) bool { return strings.HasSuffix(name, ".nar"+DeltaExt) }

// Delta is set for a path whose NAR travels as a binary delta against a
// base path the cache it is imported into holds. The path's URL, FileHash
// and FileSize are then the delta file's; its Compression, NarHash and
// NarSize are the NAR import rebuilds and stores. Such a path has no
// narinfo in the bundle: stock Nix could not use one, and what the
// cache's narinfo needs beyond the entry, the signatures and the system,
// is here.
type Delta struct {
	Base        storepath.Path
	BaseNarHash storepath.Hash
	BaseNarSize uint64
	System      string
	// Sigs are the narinfo's signatures: they cover the NAR's
	// fingerprint, not its file, so they hold for the rebuilt NAR.
	Sigs []signing.Signature
}

type jsonDelta struct {
	Base        string   `json:"base"`
	BaseNarHash string   `json:"baseNarHash"`
	BaseNarSize uint64   `json:"baseNarSize"`
	System      string   `json:"system"`
	Sigs        []string `json:"sigs"`
}

func (d *Delta) toJSON() *jsonDelta {
	if d == nil {
		return nil
	}
	j := &jsonDelta{Base: d.Base.String(), BaseNarHash: d.BaseNarHash.String(), BaseNarSize: d.BaseNarSize, System: d.System, Sigs: []string{}}
	for _, s := range d.Sigs {
		j.Sigs = append(j.Sigs, s.String())
	}
	return j
}

func deltaFromJSON(dir storepath.Dir, j *jsonDelta, url string) (*Delta, error) {
	isDelta := isDeltaFile(url)
	switch {
	case j == nil && isDelta:
		return nil, fmt.Errorf("url %q: a delta file, but no delta", url)
	case j == nil:
		return nil, nil
	case !isDelta:
		return nil, fmt.Errorf("delta: url %q does not end in .nar%s", url, DeltaExt)
	}
	d := &Delta{BaseNarSize: j.BaseNarSize, System: j.System}
	var err error
	if d.Base, err = dir.Parse(j.Base); err != nil {
		return nil, fmt.Errorf("delta.base: %w", err)
	}
	if d.BaseNarHash, err = parseSHA256(j.BaseNarHash); err != nil {
		return nil, fmt.Errorf("delta.baseNarHash: %w", err)
	}
	if d.BaseNarSize == 0 {
		return nil, errors.New("delta.baseNarSize is 0")
	}
	for _, s := range j.Sigs {
		sig, err := signing.ParseSignature(s)
		if err != nil {
			return nil, fmt.Errorf("delta.sigs: %w", err)
		}
		d.Sigs = append(d.Sigs, sig)
	}
	return d, nil
}

// version is the manifest version m is written with: deltasVersion when a
// path is a delta.
func (m *Manifest) version() int {
	if len(m.Volumes) > 0 {
		return VolumesVersion
	}
	for i := range m.Paths {
		if m.Paths[i].Delta != nil {
			return deltasVersion
		}
	}
	return Version
}

// rebuiltNarInfo is the narinfo a cache holds for a delta's path once
// its NAR is rebuilt and stored as f.
func (e *PathEntry) rebuiltNarInfo(f rebuiltFile) *narinfo.NarInfo {
	ni := e.narInfo(e.Delta.System, e.Delta.Sigs)
	ni.URL, ni.FileHash, ni.FileSize = f.url, f.hash, f.size
	return ni
}

// checkDeltaHeader compares what a delta file says with its manifest
// entry.
func checkDeltaHeader(h *nardelta.Header, e *PathEntry) string {
	var d []string
	if !h.NarHash.Equal(e.NarHash) || h.NarSize != e.NarSize {
		d = append(d, fmt.Sprintf("makes a NAR with hash %s and size %d, manifest says %s and %d", h.NarHash, h.NarSize, e.NarHash, e.NarSize))
	}
	if !h.BaseNarHash.Equal(e.Delta.BaseNarHash) || h.BaseNarSize != e.Delta.BaseNarSize {
		d = append(d, fmt.Sprintf("is against a base with hash %s and size %d, manifest says %s and %d", h.BaseNarHash, h.BaseNarSize, e.Delta.BaseNarHash, e.Delta.BaseNarSize))
	}
	return strings.Join(d, "; ")
}
