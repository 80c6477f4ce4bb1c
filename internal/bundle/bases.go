package bundle

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/channel"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/drvname"
	"github.com/nix-airgap/nix-airgap/internal/nardelta"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Deltas by content. A delta leaves out what its bases carry; whether it
// imports depends only on whether every path it refers to is in the cache
// or in the delta, whichever bundle brought it. This file is where bases
// are looked up on both sides: Bases reads what pack --since names, and
// missingReferences says, for import, which bases carried a path the
// cache lacks.

// Bases are what the bases of a delta carry: the bundles, manifests and
// cache inventories pack --since names. A Bases is also a check source
// (NarInfo) for what they hold.
type Bases struct {
	storeDir storepath.Dir
	list     []Base
	paths    map[string]*baseEntry // by hash part
	flat     FlatIndex
	// dirs are the bundle directories among the bases, by index in
	// list: where a base path's NAR file can be read.
	dirs map[int]string
	// byName are the paths by package name (drvname), for Similar.
	byName   map[string][]*baseEntry
	channels map[string][]baseChannel // by name
	// tells are the paths the bases' carried paths refer to and their
	// own bases provided, with the indices in list of the bases that
	// tell (known.go).
	tells map[storepath.Path][]int
}

// baseChannel is a channel tarball a base carries.
type baseChannel struct {
	sha256 string // hex
	in     int    // index in list
}

type baseEntry struct {
	// e is the manifest's entry, or what an inventory says: path, NAR
	// hash and size.
	e  PathEntry
	in []int // indices in list
	// latest is when the newest bundle that carried it was packed (zero
	// when unknown): of equally similar paths, a binary delta is made
	// against the newest, the one the connected machine most likely
	// still has and whose content is nearest.
	latest time.Time
}

// OpenBases reads what each of srcs holds: a bundle directory, a bundle
// tar or any volume of a set, a manifest.json, a cache inventory file, or
// a long-lived cache directory (inventoried as it is). Only manifests and
// inventories are read, not checked against signatures: a base says what
// to leave out, and a delta that leaves out too much is refused on import,
// naming what is missing. The same base named twice counts once.
func OpenBases(ctx context.Context, srcs []string) (*Bases, error) {
	b := &Bases{paths: map[string]*baseEntry{}, flat: FlatIndex{}, dirs: map[int]string{}, channels: map[string][]baseChannel{}}
	for _, src := range srcs {
		if err := b.add(ctx, src); err != nil {
			return nil, fmt.Errorf("base %s: %w", storage.Redact(src), storage.UnwrapPath(err)) // src names the file
		}
	}
	return b, nil
}

func (b *Bases) add(ctx context.Context, src string) error {
	src = volumeSetBase(src)
	data, err := readBase(ctx, src)
	if err != nil {
		return err
	}
	id := ID(data)
	if slices.ContainsFunc(b.list, func(x Base) bool { return x.ID.Equal(id) }) {
		return nil
	}
	if isInventory(data) {
		inv, err := ParseCacheInventory(data)
		if err != nil {
			return err
		}
		return b.addInventory(id, inv)
	}
	m, err := ParseManifest(data)
	if err != nil {
		return err
	}
	if err := b.setStoreDir(m.StoreDir); err != nil {
		return err
	}
	i := len(b.list)
	b.list = append(b.list, Base{ID: id, Created: m.Created, Paths: len(m.Paths), Kind: BaseBundle})
	for _, e := range m.Paths {
		b.addPath(e, i, m.Created)
		for _, r := range e.References {
			b.told(r, i)
		}
	}
	for _, base := range m.Bases {
		for _, p := range base.Provides {
			b.told(p, i)
		}
	}
	b.flat.Add(m)
	if fi, err := os.Stat(src); err == nil && fi.IsDir() {
		b.dirs[i] = src
	}
	for _, f := range m.Files {
		if name, ok := channel.NameOf(f.Name); ok {
			b.channels[name] = append(b.channels[name], baseChannel{hex.EncodeToString(f.SHA256), i})
		}
	}
	return nil
}

func (b *Bases) addInventory(id storepath.Hash, inv *CacheInventory) error {
	if err := b.setStoreDir(inv.StoreDir); err != nil {
		return err
	}
	i := len(b.list)
	b.list = append(b.list, Base{ID: id, Created: inv.Created, Paths: len(inv.Paths), Kind: BaseInventory})
	for _, p := range inv.Paths {
		var latest time.Time
		for _, j := range p.Bundles {
			if j >= 0 && j < len(inv.Bundles) && inv.Bundles[j].Created.After(latest) {
				latest = inv.Bundles[j].Created
			}
		}
		b.addPath(PathEntry{Path: p.Path, NarHash: p.NarHash, NarSize: p.NarSize}, i, latest)
	}
	for _, c := range inv.Channels {
		b.channels[c.Name] = append(b.channels[c.Name], baseChannel{hex.EncodeToString(c.SHA256), i})
	}
	return nil
}

func (b *Bases) setStoreDir(dir storepath.Dir) error {
	if b.storeDir != "" && dir != b.storeDir {
		return fmt.Errorf("for store %s, but another base is for %s", dir, b.storeDir)
	}
	b.storeDir = dir
	return nil
}

func (b *Bases) addPath(e PathEntry, base int, created time.Time) {
	if be, ok := b.paths[e.Path.Hash]; ok {
		be.in = append(be.in, base)
		if created.After(be.latest) {
			be.latest = created
		}
		return
	}
	be := &baseEntry{e: e, in: []int{base}, latest: created}
	b.paths[e.Path.Hash] = be
	if b.byName == nil {
		b.byName = map[string][]*baseEntry{}
	}
	name := drvname.Parse(e.Path.Name).Name
	b.byName[name] = append(b.byName[name], be)
}

// volumeSetBase is src, or, for the NAME.tar a pack --volume-size was
// given as --out and that is not there, the set's first volume,
// NAME.001.tar: every volume carries the whole manifest.
func volumeSetBase(src string) string {
	if !strings.HasSuffix(src, ".tar") {
		return src
	}
	if _, err := os.Lstat(src); !errors.Is(err, fs.ErrNotExist) {
		return src
	}
	if first := firstVolume(src); first != "" {
		return first
	}
	return src
}

// readBase reads the manifest (or inventory) src holds.
func readBase(ctx context.Context, src string) ([]byte, error) {
	shape, err := IdentifyBundle(src, true)
	if err != nil {
		return nil, err
	}
	switch shape {
	case ShapeBundle:
		return readLimited(filepath.Join(src, ManifestName))
	case ShapeCache:
		inv, err := InventoryCache(ctx, src, "")
		if err != nil {
			return nil, err
		}
		return inv.Marshal()
	}
	f, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	head := make([]byte, 512)
	n, _ := io.ReadFull(f, head)
	if t := bytes.TrimLeft(head[:n], " \t\r\n"); len(t) > 0 && t[0] == '{' {
		data, err := readLimited(src)
		if err != nil {
			return nil, err
		}
		// Not "parse manifest.json: corrupt" of a file that is no
		// manifest.json: say what a base may be.
		var j struct {
			Format string `json:"format"`
		}
		if err := json.Unmarshal(data, &j); err != nil {
			return nil, inputError(ErrNotBundle, "neither a bundle tar, a %s nor a cache inventory (it starts as JSON, but %v)", ManifestName, err)
		}
		if j.Format != Format && j.Format != InventoryFormat {
			of := "with no format"
			if j.Format != "" {
				of = fmt.Sprintf("of format %q", j.Format)
			}
			return nil, inputError(ErrNotBundle, "JSON %s, neither a bundle's %s (%q) nor a cache inventory (%q)", of, ManifestName, Format, InventoryFormat)
		}
		return data, nil
	}
	data, _, err := ReadTarManifest(src)
	return data, err
}

func isInventory(data []byte) bool {
	var head struct {
		Format string `json:"format"`
	}
	return json.Unmarshal(data, &head) == nil && head.Format == InventoryFormat
}

func readLimited(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxManifestSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxManifestSize {
		return nil, fmt.Errorf("%s: %w: larger than %d bytes", name, ErrCorrupt, MaxManifestSize)
	}
	return data, nil
}

// Len is how many paths the bases carry.
func (b *Bases) Len() int { return len(b.paths) }

// StoreDir is the bases' store dir; "" when there are none.
func (b *Bases) StoreDir() storepath.Dir { return b.storeDir }

// Has reports whether a base carries p.
func (b *Bases) Has(p storepath.Path) bool {
	be, ok := b.paths[p.Hash]
	return ok && be.e.Path == p
}

// HasChannel reports whether a base carries the channel name with the
// tarball whose sha256 is sum: a delta need not carry it again.
func (b *Bases) HasChannel(name string, sum []byte) bool {
	return len(b.channelIn(name, sum)) > 0
}

// channelIn returns the indices in list of the bases that carry the
// channel name with the tarball whose sha256 is sum.
func (b *Bases) channelIn(name string, sum []byte) []int {
	var in []int
	for _, c := range b.channels[name] {
		if c.sha256 == hex.EncodeToString(sum) {
			in = append(in, c.in)
		}
	}
	return b.held(in)
}

// For returns the manifest's bases for a bundle of paths: every base,
// each with the paths it holds (carries, or tells a site that imported
// it holds: Known) that paths refer to and do not carry themselves, and
// those of needed (the paths the bundle's targets need in
// its mode that it leaves out, such as the sources of a sources-mode
// delta, which nothing refers to) that it holds, and the channels of
// leftOut (by name, with their tarballs' sha256) that it carries as they
// are.
func (k *Known) For(paths []PathEntry, needed []storepath.Path, leftOut map[string][]byte) []Base {
	b := k.b
	out := slices.Clone(b.list)
	for i := range out {
		out[i].Provides, out[i].Channels = []storepath.Path{}, nil
	}
	for name, sum := range leftOut {
		for _, i := range b.channelIn(name, sum) {
			out[i].Channels = append(out[i].Channels, name)
		}
	}
	own := make(map[string]bool, len(paths))
	for _, e := range paths {
		own[e.Path.Hash] = true
	}
	seen := map[storepath.Path]bool{}
	provide := func(p storepath.Path) {
		if own[p.Hash] || seen[p] {
			return
		}
		seen[p] = true
		for _, i := range k.in[p] {
			out[i].Provides = append(out[i].Provides, p)
		}
	}
	for _, e := range paths {
		for _, r := range e.References {
			provide(r)
		}
	}
	for _, p := range needed {
		provide(p)
	}
	for i := range out {
		slices.SortFunc(out[i].Provides, storepath.Compare)
		slices.Sort(out[i].Channels)
	}
	return out
}

// NarInfo answers for a path the bases carry, as far as they say: a
// manifest gives everything but signatures, an inventory the NAR's hash
// and size. It makes the bases a check source.
func (b *Bases) NarInfo(_ context.Context, hashPart string) (*narinfo.NarInfo, error) {
	be, ok := b.paths[hashPart]
	if !ok {
		return nil, fmt.Errorf("%s.narinfo in the bases: %w", hashPart, cache.ErrNotFound)
	}
	e := be.e
	return &narinfo.NarInfo{
		StorePath: e.Path, URL: e.URL, Compression: e.Compression, FileHash: e.FileHash, FileSize: e.FileSize,
		NarHash: e.NarHash, NarSize: e.NarSize, References: e.References, Deriver: e.Deriver, CA: e.CA,
	}, nil
}

// Flat is the hashed-mirror index of the bases' manifests.
func (b *Bases) Flat() FlatIndex { return b.flat }

// missingReferences names, for import, each path the bundle's paths refer
// to that neither the bundle nor the cache holds: which paths refer to
// it, which of the bundle's bases provide it and when they were packed,
// and which bundles imported into the cache once carried it.
func (c *checker) missingReferences(missing map[storepath.Path][]storepath.Path) {
	where := ""
	switch {
	case c.opts.into != nil:
		where = " or the cache"
	case len(c.opts.Against) > 0:
		where = " or the caches it is checked against"
	}
	var recs []record
	var recsErr error
	if c.opts.into != nil {
		recs, recsErr = readRecords(c.ctx, c.opts.into)
	}
	for _, p := range slices.SortedFunc(maps.Keys(missing), storepath.Compare) {
		var b strings.Builder
		referrers := missing[p]
		slices.SortFunc(referrers, storepath.Compare)
		if len(referrers) == 0 {
			fmt.Fprintf(&b, "not in the bundle%s; nothing in the bundle refers to it, but its targets need it", where)
		} else {
			fmt.Fprintf(&b, "not in the bundle%s; needed by %s", where, referrers[0].Base())
		}
		if len(referrers) > 1 {
			fmt.Fprintf(&b, " and %d more", len(referrers)-1)
		}
		var from []string
		said := false // whether the bases say what they provide
		for _, base := range c.manifest.Bases {
			said = said || base.Provides != nil
			if slices.Contains(base.Provides, p) {
				from = append(from, describeBase(base)+neverImported(base, recs, recsErr, c.opts.into != nil))
			}
		}
		if !said {
			// An older manifest: any base may have carried it.
			for _, base := range c.manifest.Bases {
				from = append(from, describeBase(base))
			}
		}
		if len(from) > 0 {
			fmt.Fprintf(&b, "; provided by base %s", strings.Join(from, " or "))
		}
		var gone []string
		for _, r := range recs {
			if _, ok := r.m.path(p.Hash); ok {
				gone = append(gone, describeBase(Base{ID: r.id, Created: r.m.Created}))
			}
		}
		switch {
		case recsErr != nil:
			fmt.Fprintf(&b, "; whether a bundle imported into the cache carried it is unknown, its records cannot be read: %v", recsErr)
		case len(gone) > 0:
			fmt.Fprintf(&b, "; imported with %s, and no longer in the cache", strings.Join(gone, ", "))
		case said && len(from) == 0:
			b.WriteString("; no base of this bundle says it provided it")
		}
		c.problem(p.String(), KindMissing, "%s", b.String())
	}
}

// neverImported says, of a base bundle that provides a path the cache
// lacks, that the cache never imported it: a crossing was skipped.
func neverImported(b Base, recs []record, recsErr error, into bool) string {
	if !into || recsErr != nil || b.Kind == BaseInventory || slices.ContainsFunc(recs, func(r record) bool { return r.id.Equal(b.ID) }) {
		return ""
	}
	return ", never imported into this cache"
}

func describeBase(b Base) string {
	if b.Created.IsZero() {
		return b.ID.String()
	}
	return fmt.Sprintf("%s (packed %s)", b.ID, b.Created.UTC().Format("2006-01-02"))
}

// Binary deltas (docs/bundle-format.md §10) are made against base paths.

// Similar returns the base path a binary delta of p is best made against:
// one with the same name and another hash (a rebuild), else one with the
// same package name (builtins.parseDrvName's) and another version, of the
// same output (the version's tail that starts with a letter, "man" of
// "1.0-man"), the one whose version shares the longest prefix with p's;
// of equally similar ones, the one a newer bundle carried. A path with no
// package name has none.
func (b *Bases) Similar(p storepath.Path) (PathEntry, bool) {
	want := drvname.Parse(p.Name)
	if want.Name == "" || b.Has(p) {
		return PathEntry{}, false
	}
	var best *baseEntry
	bestScore := -1
	for _, be := range b.byName[want.Name] {
		if len(b.held(be.in)) == 0 {
			continue // a path of a bundle the site may not have imported
		}
		c := be.e.Path
		score := -1
		switch v := drvname.Parse(c.Name).Version; {
		case c.Name == p.Name:
			score = 1 << 20
		case outputTail(v) == outputTail(want.Version):
			score = commonPrefix(v, want.Version)
		}
		better := score > bestScore
		if score == bestScore && best != nil {
			switch {
			case be.latest.After(best.latest):
				better = true
			case be.latest.Equal(best.latest):
				better = storepath.Compare(c, best.e.Path) > 0 // any, the same every time
			}
		}
		if better {
			best, bestScore = be, score
		}
	}
	if best == nil || bestScore < 0 {
		return PathEntry{}, false
	}
	return best.e, true
}

// outputTail is the part of a version that names an output: "man" of
// "1.0-man", "" of "1.0".
func outputTail(v string) string {
	i := strings.LastIndexByte(v, '-')
	if i < 0 || i+1 == len(v) || !('a' <= v[i+1] && v[i+1] <= 'z' || 'A' <= v[i+1] && v[i+1] <= 'Z') {
		return ""
	}
	return v[i+1:]
}

func commonPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// Rewrites are the hash rewrites that turn base's store paths into p's
// and its references' (refs, the new paths): base's own hash part into
// p's, and, for each reference, the hash part of the base path with its
// name (else the Similar one) into its own. A rebuild writes those paths
// into its files, so they are what a delta need not carry.
func (b *Bases) Rewrites(base, p storepath.Path, refs []storepath.Path) []nardelta.Rewrite {
	rws := []nardelta.Rewrite{{Old: base.Hash, New: p.Hash}}
	for _, r := range refs {
		if r.Hash == p.Hash || b.Has(r) {
			continue
		}
		found := false
		for _, be := range b.byName[drvname.Parse(r.Name).Name] {
			if be.e.Path.Name == r.Name {
				rws = append(rws, nardelta.Rewrite{Old: be.e.Path.Hash, New: r.Hash})
				found = true
			}
		}
		if !found {
			if s, ok := b.Similar(r); ok {
				rws = append(rws, nardelta.Rewrite{Old: s.Path.Hash, New: r.Hash})
			}
		}
	}
	return nardelta.SortRewrites(rws)
}

// OpenNAR opens the NAR of base path p from a base bundle directory that
// carries it whole (decompressed as it is read), or fails: a base that is
// a tar, a manifest or an inventory has no NAR to read.
func (b *Bases) OpenNAR(p storepath.Path) (io.ReadCloser, string, error) {
	be, ok := b.paths[p.Hash]
	if !ok || be.e.Path != p {
		return nil, "", fmt.Errorf("%s: not in the bases", p)
	}
	for _, i := range be.in {
		dir, ok := b.dirs[i]
		if !ok || be.e.Delta != nil || checkURL(be.e.URL) != nil {
			continue
		}
		f, err := os.Open(filepath.Join(dir, filepath.FromSlash(be.e.URL)))
		if err != nil {
			continue
		}
		dr, err := compression.NewReader(f, be.e.Compression)
		if err != nil {
			f.Close()
			continue
		}
		return readCloser{dr, func() error { dr.Close(); return f.Close() }}, dir, nil
	}
	return nil, "", fmt.Errorf("%s: no base bundle directory holds its NAR file", p)
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r readCloser) Close() error { return r.close() }
