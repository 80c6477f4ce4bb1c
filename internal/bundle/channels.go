package bundle

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/channel"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Channels in a long-lived cache (docs/bundle-format.md §9): import
// installs a bundle's channels as CACHE/channels/NAME/nixexprs.tar.xz,
// which serve publishes, and records where each came from in
// CACHE/nix-airgap/channels/NAME.json, written after the tarball. A
// bundle packed no later than the one that installed a channel replaces
// it; an older one, imported again to mend something say, does not roll
// it back.

// channelRecordDir is where a cache records its channels.
const channelRecordDir = recordRoot + "/channels"

// channelRecord is CACHE/nix-airgap/channels/NAME.json.
type channelRecord struct {
	Name    string    `json:"name"`
	Bundle  string    `json:"bundle"`
	Created time.Time `json:"created"`
	SHA256  string    `json:"sha256"`
	Size    int64     `json:"size"`
}

// ChannelResult is what import did with a bundle's channel.
type ChannelResult struct {
	Name string
	// Installed is false when the cache's channel came from a bundle
	// packed later, and was kept.
	Installed bool
	// Kept, when not Installed, is when the cache's was packed.
	Kept time.Time
	// Absent is set for a channel the bundle left out because Base
	// carried it, when the cache has no channel of that name: the base
	// was never imported here (deltas go by content, not by base), or a
	// gc that did not know of this bundle removed it.
	Absent bool
	Base   storepath.Hash
}

// installChannels installs the bundle's channels into d from staging,
// after its paths.
func installChannels(ctx context.Context, c *checker, st *staging, d *cache.Cache, rep *ImportReport) error {
	m := c.manifest
	files := map[string]File{}
	for _, f := range m.Files {
		files[f.Name] = f
	}
	b := d.Backend()
	for _, ch := range m.Channels {
		name := channel.File(ch.Name)
		recName := path.Join(channelRecordDir, ch.Name+".json")
		old, err := readChannelRecord(ctx, b, recName)
		if err != nil && !storage.IsNotExist(err) && !errors.Is(err, ErrCorrupt) {
			// Not a channel without a record: an older bundle's
			// tarball would replace a newer one's.
			return fmt.Errorf("channel %s: %w", ch.Name, err)
		}
		if err == nil && old.Created.After(m.Created) {
			rep.Channels = append(rep.Channels, ChannelResult{Name: ch.Name, Kept: old.Created})
			continue
		}
		f := files[name]
		rec := channelRecord{Name: ch.Name, Bundle: rep.ID.String(), Created: m.Created, SHA256: hex.EncodeToString(f.SHA256), Size: f.Size}
		if old.SHA256 != rec.SHA256 || !st.hasSize(name, f.Size) {
			if err := st.commit(name, name); err != nil {
				return fmt.Errorf("channel %s: %w", ch.Name, err)
			}
			// The tarball is durable before the record that names it.
			if err := d.Sync(ctx); err != nil {
				return err
			}
		}
		data, err := json.MarshalIndent(rec, "", "  ")
		if err != nil {
			return err
		}
		data = append(data, '\n')
		if old, _, err := storage.ReadFile(ctx, b, recName, maxChannelRecord); err != nil || !bytes.Equal(old, data) {
			if err := d.WriteFile(ctx, recName, data); err != nil {
				return fmt.Errorf("channel %s: %w", ch.Name, err)
			}
		}
		rep.Channels = append(rep.Channels, ChannelResult{Name: ch.Name, Installed: true})
	}
	return checkBaseChannels(ctx, m, b, rep)
}

// checkBaseChannels reports the channels the bundle relies on its bases
// for and the cache lacks.
func checkBaseChannels(ctx context.Context, m *Manifest, b storage.Backend, rep *ImportReport) error {
	for _, base := range m.Bases {
		for _, name := range base.Channels {
			if slices.ContainsFunc(rep.Channels, func(r ChannelResult) bool { return r.Name == name }) {
				continue
			}
			_, err := b.Stat(ctx, channel.File(name))
			if err == nil {
				continue
			}
			if !storage.IsNotExist(err) {
				return fmt.Errorf("channel %s: %w", name, err)
			}
			rep.Channels = append(rep.Channels, ChannelResult{Name: name, Absent: true, Base: base.ID})
		}
	}
	return nil
}

// maxChannelRecord caps a channel record, which is read whole.
const maxChannelRecord = 64 << 10

// readChannelRecord reads a channel record of the cache in b.
func readChannelRecord(ctx context.Context, b storage.Backend, name string) (channelRecord, error) {
	var rec channelRecord
	data, _, err := storage.ReadFile(ctx, b, name, maxChannelRecord)
	if err != nil {
		return rec, err
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		return rec, fmt.Errorf("%s: %w: %v", name, ErrCorrupt, err)
	}
	if rec.Size < 0 {
		return rec, fmt.Errorf("%s: %w: negative size", name, ErrCorrupt)
	}
	return rec, nil
}

// storedChannelRecord is a channel record and the file that holds it.
type storedChannelRecord struct {
	channelRecord
	file string
}

// listChannelRecords reads the channel records of the cache in b, each
// checked to be named for the channel it records.
func listChannelRecords(ctx context.Context, b storage.Backend) ([]storedChannelRecord, error) {
	var out []storedChannelRecord
	for info, err := range b.List(ctx, channelRecordDir) {
		if err != nil {
			return nil, err
		}
		if info.Dir || !strings.HasSuffix(info.Name, ".json") {
			continue
		}
		rec, err := readChannelRecord(ctx, b, info.Name)
		if err != nil {
			return nil, err
		}
		if channel.CheckName(rec.Name) != nil || path.Base(info.Name) != rec.Name+".json" {
			return nil, fmt.Errorf("%s: %w: not a channel record", info.Name, ErrCorrupt)
		}
		out = append(out, storedChannelRecord{rec, info.Name})
	}
	return out, nil
}

// InstalledChannel is a channel a cache serves: its tarball, its record
// and the bundle that installed it.
type InstalledChannel struct {
	Name string
	// Bundle is the id of the bundle that installed it, as records
	// name bundles; "" for a tarball without a record (an import killed
	// between the two).
	Bundle string
	// File is the tarball, channel.File(Name), and Record the record,
	// "" when there is none.
	File, Record string
	Size         int64
}

// CacheChannels lists the channels of the cache in b, by name: those
// recorded, and tarballs without a record.
func CacheChannels(ctx context.Context, b storage.Backend) ([]InstalledChannel, error) {
	byName := map[string]*InstalledChannel{}
	for info, err := range b.List(ctx, channel.Dir) {
		if err != nil {
			return nil, err
		}
		name := path.Base(info.Name)
		if !info.Dir || channel.CheckName(name) != nil {
			continue
		}
		fi, err := b.Stat(ctx, channel.File(name))
		if storage.IsNotExist(err) {
			continue
		}
		if err != nil {
			// Not a channel without a tarball: gc would remove its
			// record and report it gone, and leave the tarball.
			return nil, err
		}
		byName[name] = &InstalledChannel{Name: name, File: channel.File(name), Size: fi.Size}
	}
	recs, err := listChannelRecords(ctx, b)
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		c := byName[r.Name]
		if c == nil {
			c = &InstalledChannel{Name: r.Name}
			byName[r.Name] = c
		}
		c.Bundle, c.Record = r.Bundle, r.file
	}
	out := make([]InstalledChannel, 0, len(byName))
	for _, c := range byName {
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b InstalledChannel) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
