package inventory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// The kinds of thing Open reads.
const (
	KindBundle   = "bundle"   // a bundle directory or .tar file
	KindManifest = "manifest" // a manifest.json on its own
	KindCache    = "cache"    // a long-lived cache: every bundle imported into it
	// KindInventory is a cache inventory file (nix-airgap inventory): the
	// paths a cache holds and the bundles that brought them, without the
	// rest of their manifests.
	KindInventory = "inventory"
)

// Open reads what src holds: a bundle directory or .tar file, a
// manifest.json (with its .sig beside it, if any), or a long-lived cache,
// whose imported bundles' records it reads. Only manifests and their
// signatures are read; keys, if given, check the signatures (a bundle
// whose signatures none of them verifies is still read, and says so).
func Open(src string, keys *signing.Keyring) (*Inventory, error) {
	shape := bundle.ShapeCache
	if _, local := storage.LocalPath(src); local {
		var err error
		if shape, err = bundle.IdentifyBundle(src, true); err != nil {
			return nil, fmt.Errorf("open %s: %w", src, err)
		}
	}
	var recs []record
	var err error
	var present map[string]bool // a cache's narinfos, by hash part
	var stored func(*bundle.PathEntry)
	var storeDir storepath.Dir // a cache's, which nix-cache-info names
	kind := KindBundle
	switch {
	case shape == bundle.ShapeCache:
		kind = KindCache
		ctx := context.Background()
		b, err := storage.Open(ctx, src)
		if err != nil {
			return nil, err
		}
		defer b.Close()
		if recs, present, err = cacheRecords(ctx, b); err != nil {
			return nil, err // it names src, or the file of it that failed
		}
		d, err := cache.OpenBackend(ctx, b)
		if errors.Is(err, cache.ErrNoCacheInfo) {
			return nil, err // no cache: the caller names src, as other commands do
		}
		if err == nil {
			defer d.Close() // after build, which reads narinfos through it
			stored, storeDir = storedFile(ctx, d), d.StoreDir()
		}
	case shape == bundle.ShapeBundle:
		recs, err = fileRecord(filepath.Join(src, bundle.ManifestName))
	case shape == bundle.ShapeInventory || filepath.Base(src) == bundle.ManifestName || strings.HasSuffix(src, ".json"):
		kind = KindManifest
		recs, err = fileRecord(src)
		if err == nil && isInventory(recs[0].data) {
			return openInventory(src, recs[0].data)
		}
	default:
		var rec record
		rec.data, rec.sig, err = bundle.ReadTarManifest(src)
		recs = []record{rec}
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", src, err)
	}
	inv, err := build(src, kind, recs, keys, present, stored)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", src, err)
	}
	if inv.StoreDir == "" {
		inv.StoreDir = storeDir // a cache no bundle was imported into
	}
	return inv, nil
}

// record is one bundle's manifest.json and manifest.json.sig bytes; name
// is a cache's record file, which errors name ("" for a bundle's own).
type record struct {
	data, sig []byte
	name      string
}

// named says which record err is about, when it is a cache's.
func (r record) named(err error) error {
	if r.name == "" {
		return err
	}
	return fmt.Errorf("%s: %w", r.name, err)
}

func readLimited(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, limit)
	}
	return data, nil
}

// fileRecord reads a manifest file and the .sig beside it.
func fileRecord(name string) ([]record, error) {
	data, err := readLimited(name, bundle.MaxManifestSize)
	if err != nil {
		return nil, err
	}
	sig, err := readLimited(name+".sig", bundle.MaxSigSize)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return []record{{data: data, sig: sig}}, nil
}

// cacheRecords reads every imported bundle's record, by name, from the
// cache in b.
func cacheRecords(ctx context.Context, b storage.Backend) ([]record, map[string]bool, error) {
	var recs []record
	for info, err := range b.List(ctx, bundle.RecordDir) {
		if err != nil {
			return nil, nil, err
		}
		if info.Dir || !strings.HasSuffix(info.Name, ".json") {
			continue
		}
		data, _, err := storage.ReadFile(ctx, b, info.Name, bundle.MaxManifestSize)
		if err != nil {
			return nil, nil, err
		}
		sig, _, err := storage.ReadFile(ctx, b, info.Name+".sig", bundle.MaxSigSize)
		if err != nil && !storage.IsNotExist(err) {
			return nil, nil, err
		}
		recs = append(recs, record{data: data, sig: sig, name: info.Name})
	}
	// What the records list, gc may have removed since (a record stays
	// while any of its paths does): the narinfos say what is there.
	present := map[string]bool{}
	for info, err := range b.List(ctx, "") {
		if err != nil {
			return nil, nil, err
		}
		if h, ok := cache.NarInfoHashPart(info.Name); ok && !info.Dir {
			present[h] = true
		}
	}
	return recs, present, nil
}

// storedFile gives, for a path a bundle carried as a binary delta, the
// NAR file the cache d keeps of it, which import rebuilt: the manifest
// describes the delta. Where the narinfo cannot be read, the manifest's
// word stands.
func storedFile(ctx context.Context, d *cache.Cache) func(*bundle.PathEntry) {
	return func(e *bundle.PathEntry) {
		ni, err := d.NarInfo(ctx, e.Path.Hash)
		if err != nil {
			return
		}
		e.URL, e.FileHash, e.FileSize, e.Compression, e.Delta = ni.URL, ni.FileHash, ni.FileSize, ni.Compression, nil
	}
}

func isInventory(data []byte) bool {
	var head struct {
		Format string `json:"format"`
	}
	return json.Unmarshal(data, &head) == nil && head.Format == bundle.InventoryFormat
}

// openInventory reads a cache inventory file: each bundle it names, with
// the paths it says that bundle brought (a path no record names goes with
// the inventory itself). An inventory says only the paths' hashes and
// sizes, so it tells no sources from packages.
func openInventory(src string, data []byte) (*Inventory, error) {
	ci, err := bundle.ParseCacheInventory(data)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", src, err)
	}
	inv := &Inventory{Source: src, Kind: KindInventory, StoreDir: ci.StoreDir}
	ms := make([]*bundle.Manifest, len(ci.Bundles)+1)
	for i, b := range ci.Bundles {
		ms[i] = &bundle.Manifest{Created: b.Created, StoreDir: ci.StoreDir}
	}
	own := &bundle.Manifest{Tool: ci.Tool, Created: ci.Created, StoreDir: ci.StoreDir}
	ms[len(ci.Bundles)] = own
	for _, p := range ci.Paths {
		m := own
		if len(p.Bundles) > 0 {
			m = ms[p.Bundles[0]]
		}
		m.Paths = append(m.Paths, bundle.PathEntry{Path: p.Path, NarHash: p.NarHash, NarSize: p.NarSize, Deriver: p.Deriver, CA: p.CA})
	}
	ids := make([]string, len(ms))
	for i, b := range ci.Bundles {
		ids[i] = b.ID.String()
	}
	ids[len(ci.Bundles)] = bundle.ID(data).String()
	for i, m := range ms {
		if len(m.Paths) > 0 || i < len(ci.Bundles) {
			b := newBundle(m, ids[i])
			b.Mode = "" // not recorded
			if i < len(ci.Bundles) {
				b.Paths = ci.Bundles[i].Paths
			}
			inv.Bundles = append(inv.Bundles, b)
		}
	}
	inv.alsoIDs = []string{ids[len(ci.Bundles)]}
	inv.addPaths(ms, ids, nil, nil)
	return inv, nil
}
