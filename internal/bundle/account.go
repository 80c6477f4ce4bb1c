package bundle

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unique"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// The checker's second half (check.go reads): trusting the manifest, and
// accounting for every file against it.

// account compares every file measured with the manifest, which a stream
// brings last (§5.2 to §5.7). A file the source did not yield is absent.
func (c *checker) account(src source, end ending) {
	if c.manifest == nil && !c.trustStream(src, end) {
		return
	}
	m := c.manifest
	if _, stream := src.(*tarSource); stream && len(m.Volumes) > 0 {
		// Not one problem per file the other volumes hold.
		c.problem(ManifestName, KindUnexpected, "a volume of a set of %d (pack --volume-size), read from a stream: volumes are checked and imported from their files; give their paths", len(m.Volumes))
		return
	}
	c.rebuildKept()
	c.warnUnrebuilt()
	c.warnDeltaBases()
	c.pending = end.pending
	c.report.Volumes = end.volumes
	absent := src.absent()
	if info, ok := c.seen[CacheInfo]; !ok {
		c.problem(CacheInfo, KindMissing, "%s", absent)
	} else if !info.bad {
		c.checkCacheInfo(info.data)
	}
	for url, entries := range c.urls {
		if st, ok := c.seen[url]; ok && !st.bad {
			c.checkNARStats(url, st.nar, entries)
		} else if !ok && !c.pending[url] {
			c.problem(url, KindMissing, "%s (NAR file of %s)", absent, entries[0].Path)
		}
		for _, e := range entries {
			if e.Delta != nil {
				continue // no narinfo: import makes one
			}
			name := cache.NarInfoFile(e.Path.Hash)
			if ni, ok := c.seen[name]; ok && !ni.bad && !ni.checked {
				c.checkNarInfo(e, ni.data)
			} else if !ok && !c.pending[name] {
				c.problem(name, KindMissing, "%s (narinfo of %s)", absent, e.Path)
			}
		}
	}
	for _, f := range m.Files {
		if st, ok := c.seen[f.Name]; ok && !st.bad {
			c.checkFileStats(f, st.sum, st.size, st.keep)
		} else if !ok && !c.pending[f.Name] {
			c.problem(f.Name, KindMissing, "%s", absent)
		}
	}
	for name, st := range c.seen {
		if !c.expected[name] && !st.bad && !st.piece {
			c.problem(name, KindUnexpected, "not in %s", ManifestName)
		}
	}
	c.checkReferences()
	if _, importing := c.sink.(keeper); !importing && len(c.pending) > 0 {
		c.cover()
	}
}

// cover counts, for a volume set verified without every file whole, the
// paths and other files the volumes given hold whole, in part (some of
// a path's files, or pieces of a split file), or not at all.
func (c *checker) cover() {
	m := c.manifest
	pieces := piecesOf(m)
	// has is 2 for a file given whole, 1 for one given in pieces.
	has := func(name string) int {
		if c.pending[name] {
			for _, p := range pieces[name] {
				if _, ok := c.seen[p.Name()]; ok {
					return 1
				}
			}
			return 0
		}
		return 2
	}
	cov := &Coverage{}
	count := func(got, want int, whole, part, absent *int) {
		switch {
		case got == want:
			*whole++
		case got > 0:
			*part++
		default:
			*absent++
		}
	}
	for _, e := range m.Paths {
		got, want := has(e.URL), 2
		if e.Delta == nil {
			got, want = got+has(cache.NarInfoFile(e.Path.Hash)), 4
		}
		count(got, want, &cov.WholePaths, &cov.PartPaths, &cov.AbsentPaths)
	}
	for _, f := range m.Files {
		count(has(f.Name), 2, &cov.WholeFiles, &cov.PartFiles, &cov.AbsentFiles)
	}
	c.report.Coverage = cov
}

// trustStream trusts the manifest a stream brought, if it brought one
// whole: a stream cut short lacks what comes last, and is corrupt rather
// than unsigned. It reports false when nothing more can be checked.
func (c *checker) trustStream(src source, end ending) bool {
	data, sawManifest := c.seen[ManifestName]
	haveManifest := sawManifest && !data.bad
	sig, haveSig := c.seen[SigName]
	haveSig = haveSig && !sig.bad
	cut := end.cut
	if end.unterminated != "" && !cut && !(haveManifest && (haveSig || c.opts.AllowUnsigned)) {
		// A stream cut at a file's end reads as ended to archive/tar,
		// but lacks the end-of-archive marker. (With unsigned input
		// allowed, a whole manifest is all the rest is checked against.)
		c.problem(end.unterminated, KindCorrupt, "the stream ends after this file without tar's end-of-archive marker: was it cut short?")
		cut = true
	}
	switch {
	case end.notTar:
		return false
	case !sawManifest && !cut && len(c.seen) > 0 && !c.sawBundleFile():
		// A tar of other things: one problem, not one per entry. An
		// empty tar is a bundle with every file missing.
		name := "(start of stream)"
		if ts, ok := src.(*tarSource); ok && ts.name != "" {
			name = ts.name
		}
		c.report.Problems = slices.DeleteFunc(c.report.Problems, func(p Problem) bool { return p.Kind == KindUnexpected })
		c.problem(name, KindCorrupt, "not a bundle: a tar without manifest.json, nix-cache-info, narinfos or NAR files")
		return false
	case !sawManifest:
		c.problem(ManifestName, KindMissing, "%s (it comes last: was the stream cut short?)", src.absent())
		return false
	case !haveManifest:
		return false // its problem is said
	case !haveSig && cut:
		// The signature, which comes last, went with the rest: the
		// stream is corrupt, not unsigned.
		return false
	}
	if !haveSig {
		sig = &measured{}
	}
	return c.trust(data.data, sig.data, haveSig)
}

// sawBundleFile reports whether the source yielded any file of a bundle.
func (c *checker) sawBundleFile() bool {
	for name := range c.seen {
		if _, narinfo := cache.NarInfoHashPart(name); narinfo || name == CacheInfo || name == SigName || strings.HasPrefix(name, cache.NarDir+"/") {
			return true
		}
	}
	return false
}

// trust checks the manifest's signature and parses it. It reports false
// when nothing more can be checked.
func (c *checker) trust(data, sig []byte, haveSig bool) bool {
	c.data, c.sig = data, sig
	c.report.ID = ID(data)
	pk, err := VerifySignatures(data, sig, c.opts.Keys)
	switch {
	case err == nil:
		c.report.Signer = pk.Name
	case errors.Is(err, ErrCorrupt):
		c.problem(SigName, KindCorrupt, "%v", err)
		return false
	case c.opts.AllowUnsigned:
		c.warn("%v; accepted because unsigned input is allowed", err) // err names manifest.json
		c.report.AcceptedUnsigned = true
	default:
		c.unsigned = errors.Is(err, ErrUnsigned)
		file := SigName
		if !haveSig {
			file = ManifestName
		}
		c.sigProblem(file, nil, err)
		return false
	}
	_, importing := c.sink.(keeper)
	m, err := parseManifest(data, !importing)
	if err != nil {
		c.problem(ManifestName, KindCorrupt, "%v", err)
		return false
	}
	if c.refused = c.sameStore(m.StoreDir); c.refused != nil {
		return false
	}
	c.manifest = m
	c.shed()
	c.urls = byURL(m)
	c.expected = map[string]bool{CacheInfo: true, ManifestName: true, SigName: true}
	for url, entries := range c.urls {
		c.expected[url] = true
		for _, e := range entries {
			if e.Delta == nil {
				c.expected[cache.NarInfoFile(e.Path.Hash)] = true
			}
		}
	}
	for _, f := range m.Files {
		c.expected[f.Name] = true
	}
	c.report.Manifest = m
	c.report.Paths = len(m.Paths)
	c.report.Files = len(m.Files)
	return true
}

// sameStore refuses a cache the bundle is checked against (import's, or
// verify --against's) that is for a store other than the bundle's dir:
// none of the bundle's references can be in it, and an import would
// be refused all the same, after a whole verification that listed them
// as missing.
func (c *checker) sameStore(dir storepath.Dir) error {
	for _, src := range c.opts.Against {
		s, ok := src.(interface{ StoreDir() storepath.Dir })
		if !ok || s.StoreDir() == dir {
			continue
		}
		what, refused := "--against cache", ""
		if c.opts.into != nil {
			what, refused = "cache", "refused, the cache is unchanged: "
		}
		return fmt.Errorf("%s %s: %s%w: %s %s is for store %s, the bundle for store %s", c.op(), c.report.Source, refused, storepath.ErrWrongDir, what, src, s.StoreDir(), dir)
	}
	return nil
}

// shed hands the manifest's bytes, trusted and parsed, to a sink that
// keeps them for import's record, so that memory holds them no longer.
// Should that fail, memory keeps them.
func (c *checker) shed() {
	k, ok := c.sink.(keeper)
	if !ok {
		return
	}
	p, err := k.keep(c.data)
	if err != nil {
		c.log.Debug("keeping the manifest in memory", "err", err)
		return
	}
	c.data, c.dataFile = nil, p
	c.mu.Lock()
	if m := c.seen[ManifestName]; m != nil {
		m.data = nil
	}
	c.mu.Unlock()
}

func (c *checker) checkCacheInfo(data []byte) {
	info, err := cache.ParseCacheInfo(bytes.NewReader(data))
	if err != nil {
		c.problem(CacheInfo, KindCorrupt, "%v", err)
		return
	}
	if info.StoreDir != c.manifest.StoreDir {
		c.problem(CacheInfo, KindCorrupt, "StoreDir %s, manifest says %s", info.StoreDir, c.manifest.StoreDir)
	}
}

// checkNarInfo parses a narinfo and compares it with its manifest entry.
func (c *checker) checkNarInfo(e *PathEntry, data []byte) {
	name := cache.NarInfoFile(e.Path.Hash)
	ni, err := narinfo.Parse(bytes.NewReader(data), c.manifest.StoreDir)
	if err != nil {
		c.problem(name, KindCorrupt, "%v", err)
		return
	}
	if d := disagree(ni, e); d != "" {
		c.problem(name, KindCorrupt, "disagrees with %s: %s", ManifestName, d)
		return
	}
	// It says what the entry says, and more only in System and Sigs: it
	// shares the entry's fields rather than hold its own copies, for
	// each of a channel's 100,000 paths. Parsed values are slices of
	// the narinfo's text; the few systems and key names there are are
	// interned instead, so that the text goes.
	for i := range ni.Sigs {
		ni.Sigs[i].KeyName = unique.Make(ni.Sigs[i].KeyName).Value()
	}
	c.mu.Lock()
	c.narinfos[e.Path.Hash] = e.narInfo(unique.Make(ni.System).Value(), ni.Sigs)
	c.mu.Unlock()
}

// checkNarInfoNow checks the narinfo file name against its manifest
// entry as it is read, and reports whether it did: not for a name that
// is no narinfo the manifest has.
func (c *checker) checkNarInfoNow(name string, data []byte) bool {
	h, ok := cache.NarInfoHashPart(name)
	if !ok || !c.expected[name] {
		return false
	}
	m := c.manifest
	i, found := slices.BinarySearchFunc(m.Paths, h, func(e PathEntry, h string) int { return strings.Compare(e.Path.Hash, h) })
	if !found || m.Paths[i].Delta != nil {
		return false
	}
	c.checkNarInfo(&m.Paths[i], data)
	return true
}

// disagree lists the fields where ni and e differ.
func disagree(ni *narinfo.NarInfo, e *PathEntry) string {
	var d []string
	add := func(field string, got, want any) {
		d = append(d, fmt.Sprintf("%s %v, manifest %v", field, got, want))
	}
	if ni.StorePath != e.Path {
		add("StorePath", ni.StorePath, e.Path)
	}
	if ni.URL != e.URL {
		add("URL", ni.URL, e.URL)
	}
	if ni.Compression != e.Compression {
		add("Compression", ni.Compression, e.Compression)
	}
	if !ni.FileHash.Equal(e.FileHash) {
		add("FileHash", ni.FileHash, e.FileHash)
	}
	if ni.FileSize != e.FileSize {
		add("FileSize", ni.FileSize, e.FileSize)
	}
	if !ni.NarHash.Equal(e.NarHash) {
		add("NarHash", ni.NarHash, e.NarHash)
	}
	if ni.NarSize != e.NarSize {
		add("NarSize", ni.NarSize, e.NarSize)
	}
	if !slices.Equal(ni.References, e.References) {
		add("References", ni.References, e.References)
	}
	if ni.Deriver != e.Deriver {
		add("Deriver", ni.Deriver, e.Deriver)
	}
	if ni.CA != e.CA {
		add("CA", ni.CA, e.CA)
	}
	return strings.Join(d, "; ")
}

// checkNARStats compares a NAR file's measured stats with every entry
// that names it.
func (c *checker) checkNARStats(url string, st *narStats, entries []*PathEntry) {
	for _, e := range entries {
		if msg := st.mismatch(e); msg != "" {
			c.problem(url, KindCorrupt, "%s (%s)", msg, e.Path)
			continue
		}
		if e.Flat != nil && st.Deep {
			switch {
			case st.flat == nil:
				c.problem(url, KindCorrupt, "manifest has flat hashes for %s, but its NAR is not one regular file", e.Path)
			case !flatEqual(st.flat, e.Flat):
				c.problem(url, KindCorrupt, "the file in the NAR of %s does not match the manifest's flat hashes", e.Path)
			}
		}
	}
}

func flatEqual(a, b *FlatHashes) bool {
	return bytes.Equal(a.MD5, b.MD5) && bytes.Equal(a.SHA1, b.SHA1) && bytes.Equal(a.SHA256, b.SHA256) && bytes.Equal(a.SHA512, b.SHA512)
}

// checkReferences checks §5.6: every reference resolves inside the
// bundle, or in a cache it is checked against. Without such a cache, a
// delta's outside references are left to import, with a warning.
func (c *checker) checkReferences() {
	m := c.manifest
	found := map[string]bool{}
	missing := map[storepath.Path][]storepath.Path{} // → the paths referring to it
	var outside []storepath.Path                     // left to import: a delta's, checked alone
	var outsideFrom storepath.Path                   // the first that refers to one
	for _, e := range m.Paths {
		for _, r := range e.References {
			if _, ok := m.path(r.Hash); ok || found[r.Hash] {
				continue
			}
			if _, ok := missing[r]; ok {
				missing[r] = append(missing[r], e.Path)
				continue
			}
			if ok, err := c.resolveOutside(r); ok || err != nil {
				found[r.Hash] = true // or its problem said
				continue
			}
			if len(c.opts.Against) == 0 && c.opts.into == nil && len(m.Bases) > 0 {
				if outside == nil {
					outsideFrom = e.Path
				}
				outside = append(outside, r)
				found[r.Hash] = true
				continue
			}
			missing[r] = []storepath.Path{e.Path}
		}
	}
	if len(c.opts.Against) > 0 || c.opts.into != nil {
		c.provided(found, missing)
	}
	if len(outside) > 0 {
		// One line, however many: a weekly delta refers to much it
		// does not carry.
		first := fmt.Sprintf("%s (referred to by %s)", outside[0].Base(), outsideFrom.Base())
		if n := len(outside) - 1; n > 0 {
			c.warn("%s and %d more store paths: not in this delta bundle, which refers to them; the cache it is imported into must have them (checked on import)", first, n)
		} else {
			c.warn("%s: not in this delta bundle, which refers to it; the cache it is imported into must have it (checked on import)", first)
		}
	}
	if len(missing) > 0 {
		c.missingReferences(missing)
	}
	c.holdBack()
}

// provided adds to missing (with nobody referring to them) the paths the
// bases provide that nothing in the bundle refers to and the caches lack:
// a target a base carried, a source of a sources-mode delta. A cache
// lacks them when a base never went into it (a crossing skipped), and
// the bundle would else import and leave them out.
func (c *checker) provided(found map[string]bool, missing map[storepath.Path][]storepath.Path) {
	m := c.manifest
	for _, base := range m.Bases {
		for _, p := range base.Provides {
			if _, ok := m.path(p.Hash); ok || found[p.Hash] {
				continue
			}
			if _, ok := missing[p]; ok {
				continue
			}
			if ok, err := c.resolveOutside(p); ok || err != nil {
				found[p.Hash] = true // or its problem said
				continue
			}
			missing[p] = nil
		}
	}
}

// holdBack marks the paths that must wait for volumes not given yet:
// their NAR file or narinfo is pending, or they refer to such a path.
func (c *checker) holdBack() {
	if c.held != nil {
		// A volume import's, before its files were read
		// (pendingFiles): what waited then was not rebuilt, and waits
		// even if another import brought its references meanwhile.
		return
	}
	c.held = map[string]bool{}
	if len(c.pending) == 0 {
		return
	}
	m := c.manifest
	for _, e := range m.Paths {
		if !c.pending[e.URL] && !c.pending[cache.NarInfoFile(e.Path.Hash)] {
			continue
		}
		if ok, _ := c.resolveOutside(e.Path); !ok {
			c.held[e.Path.Hash] = true
		}
	}
	for changed := true; changed; {
		changed = false
		for _, e := range m.Paths {
			if c.held[e.Path.Hash] {
				continue
			}
			for _, r := range e.References {
				if c.held[r.Hash] {
					c.held[e.Path.Hash], changed = true, true
					break
				}
			}
		}
	}
	c.report.Held = len(c.held)
}

// resolveOutside reports whether a cache the bundle is checked against
// holds r. A narinfo it cannot read is a problem of r, said here, and
// not an absence: r is not then reported missing from the cache.
func (c *checker) resolveOutside(r storepath.Path) (bool, error) {
	var failed error
	for _, src := range c.opts.Against {
		ni, err := src.NarInfo(c.ctx, r.Hash)
		if err == nil && ni.StorePath == r {
			return true, nil
		}
		if err != nil && !errors.Is(err, cache.ErrNotFound) && failed == nil {
			failed = err
		}
	}
	if failed != nil && !c.storeDown(failed) {
		c.problem(r.String(), readKind(failed, KindCorrupt), "%v", failed)
	}
	return false, failed
}

// byURL groups manifest entries by NAR file: two paths with the same NAR
// share one file.
func byURL(m *Manifest) map[string][]*PathEntry {
	out := map[string][]*PathEntry{}
	for i := range m.Paths {
		e := &m.Paths[i]
		out[e.URL] = append(out[e.URL], e)
	}
	return out
}

func (c *checker) checkFileStats(f File, sum []byte, n int64, keep []byte) {
	switch {
	case n != f.Size:
		c.problem(f.Name, KindCorrupt, "%d bytes, manifest says %d", n, f.Size)
	case !bytes.Equal(sum, f.SHA256):
		c.problem(f.Name, KindCorrupt, "sha256 %x, manifest says %x", sum, f.SHA256)
	case f.Name == RegistryName:
		c.registry = keep
	}
}
