package bundle

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/channel"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// A cache inventory (docs/bundle-format.md §7) is what a long-lived cache
// holds, in a file small enough to carry back out of the airgap: the
// connected side packs deltas against it (pack --since) instead of keeping
// every bundle it sent. It is not signed: it grants nothing. A delta
// packed against a wrong inventory lacks paths the cache lacks too, and
// import, which checks every reference against the cache itself, refuses
// it naming them.

// InventoryFormat and InventoryVersion are what an inventory's "format"
// and "version" say.
const (
	InventoryFormat  = "nix-airgap-inventory"
	InventoryVersion = 1
)

// CacheInventory is a cache inventory file.
type CacheInventory struct {
	Tool     string
	Created  time.Time
	StoreDir storepath.Dir
	// Bundles are the bundles imported into the cache (their records),
	// oldest first; Provides is unused.
	Bundles []Base
	// Paths are the store paths the cache has a narinfo for, sorted.
	Paths []InventoryPath
	// Channels are the channels the cache serves, sorted by name.
	Channels []InventoryChannel
}

// InventoryChannel is a channel a cache serves: its tarball's sha256 and
// size, so that a delta need not carry an unchanged channel again.
type InventoryChannel struct {
	Name   string
	SHA256 []byte
	Size   int64
}

// InventoryPath is one store path a cache holds.
type InventoryPath struct {
	Path    storepath.Path
	NarHash storepath.Hash
	NarSize uint64
	// Deriver and CA are the narinfo's, zero when it has none: they let
	// show and diff name the path's package and tell sources apart.
	Deriver storepath.Path
	CA      string
	// Bundles are the indices in CacheInventory.Bundles of the bundles
	// that carried the path; empty when no record names it.
	Bundles []int
}

type (
	jsonInventory struct {
		Format   string              `json:"format"`
		Version  int                 `json:"version"`
		Tool     string              `json:"tool"`
		Created  string              `json:"created"`
		StoreDir string              `json:"storeDir"`
		Bundles  []jsonBase          `json:"bundles"`
		Paths    []jsonInventoryPath `json:"paths"`
		Channels []jsonFile          `json:"channels"`
	}
	jsonInventoryPath struct {
		Path    string `json:"path"`
		NarHash string `json:"narHash"`
		NarSize uint64 `json:"narSize"`
		Deriver string `json:"deriver,omitempty"`
		CA      string `json:"ca,omitempty"`
		Bundles []int  `json:"bundles"`
	}
)

// InventoryCache makes the inventory of the long-lived cache at location
// (a directory or an s3:// URL): every narinfo it holds, and which
// imported bundles carried each path. tool names the program.
func InventoryCache(ctx context.Context, location, tool string) (*CacheInventory, error) {
	dir := location
	if err := CheckCache(location, CacheOnly); err != nil {
		return nil, fmt.Errorf("inventory %s: %w", location, err)
	}
	d, err := cache.OpenStored(ctx, location)
	if err != nil {
		return nil, CacheOpenError("inventory", location, err)
	}
	defer d.Close()
	inv := &CacheInventory{Tool: tool, Created: time.Now().UTC().Truncate(time.Second), StoreDir: d.StoreDir()}
	carried := map[storepath.Path][]int{}
	recs, err := readRecords(ctx, d.Backend())
	if err != nil {
		return nil, fmt.Errorf("inventory %s: %w", dir, err)
	}
	for i, r := range recs {
		inv.Bundles = append(inv.Bundles, Base{ID: r.id, Created: r.m.Created, Paths: len(r.m.Paths)})
		for _, e := range r.m.Paths {
			carried[e.Path] = append(carried[e.Path], i)
		}
	}
	for ni, err := range d.NarInfos(ctx) {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil {
			return nil, fmt.Errorf("inventory %s: %w", dir, err)
		}
		inv.Paths = append(inv.Paths, InventoryPath{Path: ni.StorePath, NarHash: ni.NarHash, NarSize: ni.NarSize, Deriver: ni.Deriver, CA: ni.CA, Bundles: carried[ni.StorePath]})
	}
	slices.SortFunc(inv.Paths, func(a, b InventoryPath) int { return storepath.Compare(a.Path, b.Path) })
	if inv.Channels, err = readChannelRecords(ctx, d.Backend()); err != nil {
		return nil, fmt.Errorf("inventory %s: %w", dir, err)
	}
	return inv, nil
}

// readChannelRecords reads the records of the channels the cache in b
// serves.
func readChannelRecords(ctx context.Context, b storage.Backend) ([]InventoryChannel, error) {
	recs, err := listChannelRecords(ctx, b)
	if err != nil {
		return nil, err
	}
	out := make([]InventoryChannel, 0, len(recs))
	for _, r := range recs {
		sum, err := parseHex(r.SHA256, 32)
		if err != nil {
			return nil, fmt.Errorf("%s: %w: sha256: %v", r.file, ErrCorrupt, err)
		}
		out = append(out, InventoryChannel{Name: r.Name, SHA256: sum, Size: r.Size})
	}
	slices.SortFunc(out, func(a, b InventoryChannel) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// record is a bundle imported into a cache: its manifest and id.
type record struct {
	id   storepath.Hash
	name string // in the cache, RecordDir/RecordName(id)
	m    *Manifest
}

// readRecords reads the manifests of every bundle imported into the cache
// in b, oldest first.
func readRecords(ctx context.Context, b storage.Backend) ([]record, error) {
	var recs []record
	for info, err := range b.List(ctx, RecordDir) {
		if err != nil {
			return nil, err
		}
		if info.Dir || !strings.HasSuffix(info.Name, ".json") {
			continue
		}
		data, _, err := storage.ReadFile(ctx, b, info.Name, MaxManifestSize)
		if err != nil {
			return nil, err
		}
		m, err := ParseManifest(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", info.Name, err)
		}
		recs = append(recs, record{id: ID(data), name: info.Name, m: m})
	}
	slices.SortStableFunc(recs, func(a, b record) int { return a.m.Created.Compare(b.m.Created) })
	return recs, nil
}

// Marshal writes the inventory as JSON, in the format's key order, with
// a final newline.
func (inv *CacheInventory) Marshal() ([]byte, error) {
	j := jsonInventory{
		Format: InventoryFormat, Version: InventoryVersion, Tool: inv.Tool, Created: formatTime(inv.Created),
		StoreDir: string(inv.StoreDir), Bundles: []jsonBase{}, Paths: []jsonInventoryPath{},
	}
	for _, b := range inv.Bundles {
		j.Bundles = append(j.Bundles, jsonBase{ID: b.ID.String(), Created: formatTime(b.Created), Paths: b.Paths})
	}
	j.Channels = []jsonFile{}
	for _, c := range inv.Channels {
		j.Channels = append(j.Channels, jsonFile{Name: c.Name, SHA256: hex.EncodeToString(c.SHA256), Size: c.Size})
	}
	for _, p := range inv.Paths {
		jp := jsonInventoryPath{Path: p.Path.String(), NarHash: p.NarHash.String(), NarSize: p.NarSize, CA: p.CA, Bundles: p.Bundles}
		if p.Deriver != (storepath.Path{}) {
			jp.Deriver = p.Deriver.String()
		}
		if jp.Bundles == nil {
			jp.Bundles = []int{}
		}
		j.Paths = append(j.Paths, jp)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(&j); err != nil {
		return nil, fmt.Errorf("marshal inventory: %w", err)
	}
	return buf.Bytes(), nil
}

// ErrNotInventory reports JSON that is not a cache inventory.
var ErrNotInventory = errors.New("not a nix-airgap cache inventory")

// ParseCacheInventory parses an inventory file. It refuses another format
// and a newer version, naming it; errors wrap ErrCorrupt,
// ErrNotInventory or ErrUnsupportedVersion.
func ParseCacheInventory(data []byte) (*CacheInventory, error) {
	if len(data) > MaxManifestSize {
		return nil, fmt.Errorf("parse inventory: %w: larger than %d bytes", ErrCorrupt, MaxManifestSize)
	}
	var j jsonInventory
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, fmt.Errorf("parse inventory: %w: %v", ErrCorrupt, err)
	}
	switch {
	case j.Format != InventoryFormat:
		return nil, fmt.Errorf("parse inventory: %w: format is %q", ErrNotInventory, j.Format)
	case j.Version > InventoryVersion:
		return nil, fmt.Errorf("parse inventory: %w: version %d is newer than the %d this nix-airgap reads; upgrade nix-airgap", ErrUnsupportedVersion, j.Version, InventoryVersion)
	case j.Version != InventoryVersion:
		return nil, fmt.Errorf("parse inventory: %w: version %d, want %d", ErrCorrupt, j.Version, InventoryVersion)
	}
	inv, err := inventoryFromJSON(&j)
	if err != nil {
		return nil, fmt.Errorf("parse inventory: %w: %w", ErrCorrupt, err)
	}
	return inv, nil
}

func inventoryFromJSON(j *jsonInventory) (*CacheInventory, error) {
	dir, err := storepath.ParseDir(j.StoreDir)
	if err != nil {
		return nil, fmt.Errorf("storeDir: %w", err)
	}
	inv := &CacheInventory{Tool: j.Tool, StoreDir: dir}
	if inv.Created, err = parseTime(j.Created); err != nil {
		return nil, fmt.Errorf("created: %w", err)
	}
	for i, jb := range j.Bundles {
		b := Base{Paths: jb.Paths}
		if b.ID, err = parseSHA256(jb.ID); err != nil {
			return nil, fmt.Errorf("bundles[%d].id: %w", i, err)
		}
		if b.Created, err = parseTime(jb.Created); err != nil {
			return nil, fmt.Errorf("bundles[%d].created: %w", i, err)
		}
		inv.Bundles = append(inv.Bundles, b)
	}
	inv.Paths = make([]InventoryPath, 0, len(j.Paths))
	for i, jp := range j.Paths {
		p := InventoryPath{NarSize: jp.NarSize, CA: jp.CA}
		if len(jp.Bundles) > 0 {
			p.Bundles = jp.Bundles
		}
		if p.Path, err = dir.Parse(jp.Path); err != nil {
			return nil, fmt.Errorf("paths[%d]: %w", i, err)
		}
		if p.NarHash, err = parseSHA256(jp.NarHash); err != nil {
			return nil, fmt.Errorf("paths[%d] %s: narHash: %w", i, jp.Path, err)
		}
		if jp.Deriver != "" {
			if p.Deriver, err = dir.Parse(jp.Deriver); err != nil {
				return nil, fmt.Errorf("paths[%d] %s: deriver: %w", i, jp.Path, err)
			}
		}
		if i > 0 && storepath.Compare(inv.Paths[i-1].Path, p.Path) >= 0 {
			return nil, fmt.Errorf("paths[%d] %s: paths not sorted and unique", i, jp.Path)
		}
		for _, b := range p.Bundles {
			if b < 0 || b >= len(inv.Bundles) {
				return nil, fmt.Errorf("paths[%d] %s: bundle %d out of range", i, jp.Path, b)
			}
		}
		inv.Paths = append(inv.Paths, p)
	}
	for i, jc := range j.Channels {
		c := InventoryChannel{Name: jc.Name, Size: jc.Size}
		if err := channel.CheckName(jc.Name); err != nil {
			return nil, fmt.Errorf("channels[%d]: %w", i, err)
		}
		if c.SHA256, err = parseHex(jc.SHA256, 32); err != nil {
			return nil, fmt.Errorf("channels[%d] %s: sha256: %w", i, jc.Name, err)
		}
		if jc.Size < 0 {
			return nil, fmt.Errorf("channels[%d] %s: negative size", i, jc.Name)
		}
		inv.Channels = append(inv.Channels, c)
	}
	return inv, nil
}
