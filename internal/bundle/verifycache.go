package bundle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sync/errgroup"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// isCache reports whether dir is a long-lived cache rather than a bundle:
// it has nix-airgap/ (which import makes first) and no manifest.json. (One
// without nix-cache-info is a damaged cache, and verifies as one.) A
// directory with neither is a bundle whose manifest is missing, such as
// one an interrupted pack left, and verifies as such. Either that cannot
// be looked at, for another reason than its absence, is an error naming
// it: what dir is cannot be told.
func isCache(dir string) (bool, error) {
	_, err := os.Stat(filepath.Join(dir, ManifestName))
	switch {
	case err == nil, errors.Is(err, syscall.ENOTDIR): // a file: no cache
		return false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return false, fmt.Errorf("%s: %w", ManifestName, storage.UnwrapPath(err))
	}
	fi, err := os.Stat(filepath.Join(dir, recordRoot))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("%s: %w", recordRoot, storage.UnwrapPath(err))
	}
	return fi.IsDir(), nil
}

// cacheAt verifies the long-lived cache at location, a directory or an
// object store URL.
func (c *checker) cacheAt(location string) error {
	b, err := storage.Open(c.ctx, location)
	if err != nil {
		return fmt.Errorf("%s: %w", c.op(), err) // it names location
	}
	defer b.Close()
	return c.cache(b, location)
}

// cache verifies a long-lived cache (§6): every bundle record's
// signature, every narinfo's signature (or content address), every NAR
// file against its narinfo, and that every reference has a narinfo. Files
// no narinfo names are not problems there: an interrupted import may leave
// NAR files whose narinfos it had not written yet. Every problem names
// the store paths it damages, and the report how to repair them, with
// the cache named as location names it.
func (c *checker) cache(b storage.Backend, location string) error {
	d, err := cache.OpenBackend(c.ctx, b)
	if errors.As(err, new(*fs.PathError)) || errors.Is(err, cache.ErrNoCacheInfo) {
		// Not damage to list: a bucket that is not there, refused
		// credentials, a store that does not answer, or no cache at
		// all, said as every command says it.
		return CacheOpenError(c.op(), location, err)
	}
	if err != nil {
		c.problem(CacheInfo, KindCorrupt, "%v", err)
		return nil
	}
	defer d.Close()

	var recNames []storage.Info
	for info, err := range b.List(c.ctx, RecordDir) {
		if c.storeDown(err) {
			return nil
		}
		if err != nil {
			c.problem(RecordDir, KindCorrupt, "%v", err)
			continue
		}
		if !info.Dir && strings.HasSuffix(info.Name, ".json") {
			recNames = append(recNames, info)
		}
	}
	var infos []*narinfo.NarInfo
	var unreadable []error
	have := map[string]bool{}
	for ni, err := range d.NarInfos(c.ctx) {
		if c.storeDown(err) {
			return nil // references would seem missing
		}
		if err != nil {
			unreadable = append(unreadable, err)
			continue
		}
		infos = append(infos, ni)
		have[ni.StorePath.Hash] = true
	}
	// NAR files by name: several narinfos may share one, checked once.
	byURL := map[string][]*narinfo.NarInfo{}
	var urls []string
	var total int64
	for _, ni := range infos {
		if byURL[ni.URL] == nil {
			urls = append(urls, ni.URL)
			total += int64(ni.FileSize)
		}
		byURL[ni.URL] = append(byURL[ni.URL], ni)
	}
	for _, rec := range recNames {
		total += rec.Size
	}
	c.opts.Progress.Phase(PhaseVerify, len(urls), total)
	recs := c.cacheRecords(b, recNames)
	if c.isDown() {
		return nil
	}
	damagedNarInfo := map[string]bool{} // hash parts
	for _, err := range unreadable {
		name, paths := "narinfo", []string(nil)
		if ne := (*cache.NarInfoError)(nil); errors.As(err, &ne) {
			name, err = ne.File, ne.Err // the problem names the file
			if h, ok := cache.NarInfoHashPart(ne.File); ok {
				paths = []string{recs.name(h)}
				damagedNarInfo[h] = true
			}
		}
		c.pathProblem(name, paths, readKind(err, KindCorrupt), "%v", err)
	}
	signers := map[string]bool{} // trusted keys that signed narinfos
	for _, ni := range infos {
		name := cache.NarInfoFile(ni.StorePath.Hash)
		if k := c.narInfoSig(name, ni, recs); k != "" {
			signers[k] = true
		}
		for _, r := range ni.References {
			if !have[r.Hash] && !damagedNarInfo[r.Hash] { // a damaged one is named already
				c.pathProblem(name, []string{r.String()}, KindMissing, "reference %s has no narinfo in the cache", r.Base())
			}
		}
	}
	c.checkCacheNARs(d, urls, byURL)
	if c.isDown() {
		c.repairAdvice(location, recs) // for the damage found before
		return c.ctx.Err()
	}
	if c.report.Paths == 0 && len(recNames) == 0 {
		c.warn("%s: an empty cache", b)
	}
	c.warnHalfImported(b)
	c.warnStraySBOM(b)
	c.repairAdvice(location, recs)
	if len(recNames) == 0 {
		c.narInfoSigners(signers)
	}
	return c.ctx.Err()
}

// narInfoSigners names signers, the trusted keys that signed a cache's
// narinfos, as its signer when it has no bundle record (only a
// half-imported volume set is in) and no signature was found wanting.
func (c *checker) narInfoSigners(signers map[string]bool) {
	if !slices.ContainsFunc(c.report.Problems, func(p Problem) bool { return p.Kind == KindUntrusted }) {
		c.report.Signer = strings.Join(slices.Sorted(maps.Keys(signers)), ", ")
	}
}

// cacheRecords is what a cache's records say: the bundles imported, and
// which of them carried each path.
type cacheRecords struct {
	list    []*Manifest
	ids     []storepath.Hash
	carried map[string][]int          // hash part -> indices in list
	paths   map[string]storepath.Path // hash part -> store path
	// untrusted are the names of keys that signed records no given
	// key trusts.
	untrusted map[string]bool
}

// signedRecords reports whether every one of sigs is by a key that
// signed records no given key trusts.
func (r *cacheRecords) signedRecords(sigs []signing.Signature) bool {
	for _, s := range sigs {
		if !r.untrusted[s.KeyName] {
			return false
		}
	}
	return len(sigs) > 0
}

// name is the store path with hash part h, as the records give it, or
// the hash part alone when none lists it.
func (r *cacheRecords) name(h string) string {
	if p, ok := r.paths[h]; ok {
		return p.String()
	}
	return h
}

// cacheRecords checks every bundle record's name and signature and reads
// what it says.
func (c *checker) cacheRecords(b storage.Backend, names []storage.Info) *cacheRecords {
	recs := &cacheRecords{carried: map[string][]int{}, paths: map[string]storepath.Path{}, untrusted: map[string]bool{}}
	for _, info := range names {
		rel := info.Name
		data, _, err := storage.ReadFile(c.ctx, b, rel, MaxManifestSize)
		if c.storeDown(err) {
			break
		}
		if err != nil {
			c.problem(rel, KindCorrupt, "%v", err)
			continue
		}
		c.addBytes(int64(len(data)))
		c.opts.Progress.Step("", "", int64(len(data)))
		if want := RecordName(ID(data)); path.Base(rel) != want {
			c.problem(rel, KindCorrupt, "content has id %s, so the record should be named %s", ID(data), want)
		}
		sig, _, err := storage.ReadFile(c.ctx, b, rel+".sig", MaxManifestSize)
		if c.storeDown(err) {
			break
		}
		if pk, err := VerifySignatures(data, sig, c.opts.Keys); err != nil {
			if c.opts.AllowUnsigned && !errors.Is(err, ErrCorrupt) {
				c.warn("%s: %v", rel, err)
				c.report.AcceptedUnsigned = true
			} else {
				c.sigProblem(rel+".sig", nil, err)
				recs.noteUntrusted(sig, c.opts.Keys)
			}
		} else if !slices.Contains(strings.Split(c.report.Signer, ", "), pk.Name) {
			// A cache holds what every packing key signed, rotated or not.
			c.report.Signer = strings.TrimPrefix(c.report.Signer+", "+pk.Name, ", ")
		}
		c.report.Files++
		m, err := ParseManifest(data)
		if err != nil {
			c.problem(rel, KindCorrupt, "%v", err)
			continue
		}
		i := len(recs.list)
		recs.list, recs.ids = append(recs.list, m), append(recs.ids, ID(data))
		for _, e := range m.Paths {
			recs.paths[e.Path.Hash] = e.Path
			recs.carried[e.Path.Hash] = append(recs.carried[e.Path.Hash], i)
		}
	}
	return recs
}

// narInfoSig checks the signatures of ni, the narinfo file name, and
// returns the name of the trusted key that signed it, if one did.
func (c *checker) narInfoSig(name string, ni *narinfo.NarInfo, recs *cacheRecords) string {
	if c.opts.AllowUnsigned {
		return ""
	}
	if pk, ok := ni.Signer(c.opts.Keys); ok {
		return pk.Name
	}
	if ni.IsContentAddressed() {
		return ""
	}
	err := fmt.Errorf("%w: no signature", ErrUnsigned)
	if len(ni.Sigs) > 0 {
		err = untrustedSigs(c.opts.Keys, ni.Sigs, "the narinfo")
	}
	if recs.signedRecords(ni.Sigs) {
		err = keyNotGiven{err}
	}
	c.sigProblem(name, []string{ni.StorePath.String()}, fmt.Errorf("%s: %w", ni.StorePath, err))
	return ""
}

// keyNotGiven marks a narinfo's signature error as Problem.KeyNotGiven
// says: by the key of records no key given trusts.
type keyNotGiven struct{ error }

func (e keyNotGiven) Unwrap() error { return e.error }

// noteUntrusted notes the signers of sig, a record's signatures, that
// kr does not trust by name.
func (r *cacheRecords) noteUntrusted(sig []byte, kr *signing.Keyring) {
	sigs, _ := ParseSigs(sig)
	for _, s := range sigs {
		if !kr.Trusts(s.KeyName) {
			r.untrusted[s.KeyName] = true
		}
	}
}

// repairAdvice lists the damaged paths and, for each bundle whose record
// says it carried some, how many: importing it again with --repair mends
// them. When the keys given trust no bundle record, a path signed by a
// key they do not trust is not damaged: the keys are wrong, not the
// cache. Nor is one signed by the key of records they do not trust.
func (c *checker) repairAdvice(location string, recs *cacheRecords) {
	seen := map[string]bool{}
	for _, p := range c.report.Problems {
		if p.Kind == KindUntrusted && (p.KeyNotGiven || !p.BadSignature && c.report.Signer == "") || p.Kind == KindUnreadable {
			continue // the keys or the store's permissions are wrong, not the cache
		}
		for _, sp := range p.Paths {
			if !seen[sp] {
				seen[sp] = true
				c.report.Damaged = append(c.report.Damaged, sp)
			}
		}
	}
	if len(c.report.Damaged) == 0 {
		return
	}
	slices.Sort(c.report.Damaged)
	// The location as given, not the backend's short name: an s3://
	// bucket is found by the settings of its URL. The key is import's
	// to ask for: without it, the command as printed is refused.
	rep := &Repair{Command: fmt.Sprintf("nix-airgap import BUNDLE --cache %s --public-key KEY --repair", ShellWord(location))}
	counts := make([]int, len(recs.list))
	for _, sp := range c.report.Damaged {
		h := sp
		if p, err := recs.storeDir().Parse(sp); err == nil {
			h = p.Hash
		}
		for _, i := range recs.carried[h] {
			counts[i]++
		}
	}
	for i, n := range counts {
		if n == 0 {
			continue
		}
		ref := RepairRef{ID: recs.ids[i].String(), Created: recs.list[i].Created, Paths: n, Volumes: len(recs.list[i].Volumes)}
		for _, t := range recs.list[i].Targets {
			ref.Targets = append(ref.Targets, t.Spec)
		}
		rep.Bundles = append(rep.Bundles, ref)
	}
	slices.SortFunc(rep.Bundles, func(a, b RepairRef) int { return b.Created.Compare(a.Created) })
	c.report.Repair = rep
}

// storeDir is the records' store dir, or "" when there are none.
func (r *cacheRecords) storeDir() storepath.Dir {
	if len(r.list) == 0 {
		return ""
	}
	return r.list[0].StoreDir
}

// checkCacheNARs checks the NAR files urls name, jobs at a time, until
// the store stops answering.
func (c *checker) checkCacheNARs(d *cache.Cache, urls []string, byURL map[string][]*narinfo.NarInfo) {
	g, ctx := errgroup.WithContext(c.ctx)
	g.SetLimit(c.opts.Jobs)
	for _, url := range urls {
		if ctx.Err() != nil || c.isDown() {
			break
		}
		g.Go(func() error {
			c.checkCacheNAR(ctx, d, byURL[url])
			return nil
		})
	}
	g.Wait()
}

// checkCacheNAR checks one NAR file as Nix will on substitution, against
// each narinfo that names it.
func (c *checker) checkCacheNAR(ctx context.Context, d *cache.Cache, nis []*narinfo.NarInfo) {
	url := nis[0].URL
	var paths []string
	for _, ni := range nis {
		paths = append(paths, ni.StorePath.String())
	}
	slices.Sort(paths)
	f, err := d.OpenFile(ctx, url)
	if c.storeDown(err) {
		return
	}
	if err != nil {
		kind := readKind(err, KindCorrupt)
		if errors.Is(err, cache.ErrNotFound) {
			kind = KindMissing
		}
		// The line names url already.
		c.pathProblem(url, paths, kind, "%v (NAR file of %s)", storage.UnwrapPath(err), strings.Join(paths, ", "))
		c.countPaths(len(nis))
		return
	}
	defer f.Close()
	var first error
	for i, ni := range nis {
		err := first
		switch {
		case i == 0:
			// Progress hears the bytes as they are read, within a
			// large file too.
			err = cache.CheckNAR(ProgressReader{cache.ContextReader(ctx, f), c.opts.Progress}, ni)
			first = err
			if c.storeDown(err) {
				return // what it read is not counted as checked
			}
			c.addBytes(int64(ni.FileSize))
			c.opts.Progress.Step(url, "", 0)
		case !sameFile(ni, nis[0]):
			// Shared, but said to be other bytes: check them again.
			if _, serr := f.Seek(0, io.SeekStart); serr != nil {
				err = serr
			} else {
				err = cache.CheckNAR(cache.ContextReader(ctx, f), ni)
			}
		}
		var fe *cache.NARFileError
		switch {
		case c.storeDown(err):
			return
		case errors.As(err, &fe) && fe.Problem != "":
			// As a bundle's problems read: url is named already.
			c.pathProblem(url, []string{ni.StorePath.String()}, KindCorrupt, "%s (%s)", fe.Problem, ni.StorePath)
		case errors.As(err, &fe):
			c.pathProblem(url, []string{ni.StorePath.String()}, KindCorrupt, "%v (%s)", fe.Err, ni.StorePath)
		case err != nil:
			c.pathProblem(url, []string{ni.StorePath.String()}, KindCorrupt, "%v", err)
		}
		c.countPaths(1)
	}
}

// countPaths counts n store paths checked: their NAR file read to the
// end or found damaged, so that a store that stops answering leaves out
// those it did not give.
func (c *checker) countPaths(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.report.Paths += n
}

// sameFile reports whether two narinfos say the same of their NAR file.
func sameFile(a, b *narinfo.NarInfo) bool {
	return a.FileHash.Equal(b.FileHash) && a.FileSize == b.FileSize && a.NarHash.Equal(b.NarHash) &&
		a.NarSize == b.NarSize && a.Compression == b.Compression
}

// warnStraySBOM says what a cache's sbom.cdx.json is: a bundle's SBOM
// that earlier imports copied, which nothing reads; it is the user's to
// remove.
func (c *checker) warnStraySBOM(b storage.Backend) {
	if _, err := b.Stat(c.ctx, SBOMName); err == nil {
		c.warn("%s: the SBOM of the first bundle imported with one, which earlier imports copied here; it describes that bundle, not the cache, and nothing reads it: remove it, or run nix-airgap show on the cache with --format cyclonedx for one of the whole cache", SBOMName)
	}
}

// warnHalfImported says which volume sets the cache has imported in
// part: their kept files are not checked here (an import checks them
// again when it reads them), and their paths still to come are not in.
func (c *checker) warnHalfImported(b storage.Backend) {
	sets, err := HalfImportedSets(c.ctx, b)
	if err != nil {
		c.warn("%s: list the half-imported volume sets: %v", b, err)
		return
	}
	for _, s := range sets {
		var about string
		switch {
		case s.Err != nil:
			about = s.Err.Error()
		case s.ImportedErr != nil:
			about = fmt.Sprintf("%d volumes; which are imported is unknown: %v", s.Count, s.ImportedErr)
		default:
			about = fmt.Sprintf("%d of %d volumes in", len(s.Imported), s.Count)
		}
		c.warn("volume set %s is half-imported (%s): import its other volumes to complete it", s.ID, about)
	}
}

// ShellWord is s as one word of a shell command: quoted when a shell
// would read any of its characters (an s3:// URL's ? and &) otherwise.
func ShellWord(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n'\"\\$`!#&*?;|<>()[]{}~") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// readKind is the kind of problem err, of reading a file of a cache, is:
// KindUnreadable when the store would not give it (fs.ErrPermission: a
// 403 from a bucket, a file the user may not read), else kind.
func readKind(err error, kind Kind) Kind {
	if errors.Is(err, fs.ErrPermission) {
		return KindUnreadable
	}
	return kind
}
