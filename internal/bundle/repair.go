package bundle

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
)

// damage is what a repair found wrong with one of the bundle's paths in
// the cache.
type damage struct {
	e *PathEntry
	// want is the narinfo the cache should have, the bundle's (for a
	// path the bundle carries as a binary delta, the rebuilt NAR's), and
	// staged the spool's name of the file it names.
	want   *narinfo.NarInfo
	staged string
	// file: the NAR file at the bundle's URL is missing or damaged, and
	// is replaced by the bundle's. narinfo: the cache's narinfo is
	// unreadable, untrusted, or names a file that is damaged while the
	// bundle's is not the same one, and is replaced by the bundle's.
	file, narinfo bool
	// had: the cache has the path's narinfo, so the path was checked. A
	// path it has no narinfo of is new, and the import adds it, though
	// the cache may have its file (another path's, of the same bytes, or
	// one an interrupted import left), which is checked and mended too.
	had bool
}

// repair re-checks, as Nix checks a NAR it substitutes, every path of the
// verified bundle c whose NAR file or narinfo the cache d has already, and
// replaces what is damaged with the bundle's copies, which st staged:
//
//  1. NAR files, each replaced whole (storage.Spool.Commit: a rename over
//     the old file, or an atomic Put), so that a reader, a serve in the
//     middle of sending it included, or a crash, sees the damaged file or
//     the good one and never a mix; then made durable;
//  2. only then the narinfos that must change, references first, each
//     replaced atomically.
//
// A narinfo never names a file that is not complete and durable, and a
// repair killed anywhere is finished by running it again.
func repair(ctx context.Context, c *checker, st *staging, d *cache.Cache, jobs int, rep *ImportReport) error {
	prog := c.opts.Progress
	prog.Phase(PhaseRepair, len(c.manifest.Paths), 0)
	found, checked, err := findDamage(ctx, c, d, jobs)
	if c.storeDown(err) {
		return fmt.Errorf("repair: %s: %w", StoreDownNote, err)
	}
	if err != nil {
		return err
	}
	rep.RepairChecked = checked
	replaced := map[string]bool{}
	for _, dm := range found {
		if !dm.file || replaced[dm.want.URL] {
			continue
		}
		replaced[dm.want.URL] = true
		n, err := st.replaceAs(dm.staged, dm.want.URL, func(n int64) { prog.Step("", "", n) })
		if err != nil {
			return fmt.Errorf("repair %s: %w", dm.e.Path, err)
		}
		rep.RepairedBytes += n
	}
	if err := d.Sync(ctx); err != nil {
		return err
	}
	var rewrite []*PathEntry
	want := map[string]*narinfo.NarInfo{}
	for _, dm := range found {
		if dm.narinfo {
			rewrite = append(rewrite, dm.e)
			want[dm.e.Path.Hash] = dm.want
		}
	}
	for _, e := range referencesFirst(rewrite) {
		if err := d.PutNarInfo(ctx, want[e.Path.Hash]); err != nil {
			return fmt.Errorf("repair %s: %w", e.Path, err)
		}
	}
	for _, dm := range found {
		if dm.had { // a new path's damaged file is mended, but the path was not the cache's
			rep.Repaired = append(rep.Repaired, dm.e.Path.String())
		}
	}
	slices.Sort(rep.Repaired)
	return nil
}

// findDamage checks, jobs at a time, the cache's narinfo and NAR file of
// every path of the bundle, and the NAR files the cache has for the
// bundle's other paths (an earlier import's, or a shared one): a file is
// checked once, against what the bundle says of it. It also counts the
// paths it checked, those whose narinfo the cache had.
func findDamage(ctx context.Context, c *checker, d *cache.Cache, jobs int) ([]damage, int, error) {
	var (
		mu      sync.Mutex
		found   []damage
		checked int
		files   = map[string]*fileCheck{}
	)
	// checkFile checks the cache's file at ni.URL against ni, once per
	// URL and expectation.
	checkFile := func(ni *narinfo.NarInfo) error {
		key := ni.URL + " " + ni.FileHash.String() + " " + ni.NarHash.String()
		mu.Lock()
		fc, ok := files[key]
		if !ok {
			fc = &fileCheck{}
			files[key] = fc
		}
		mu.Unlock()
		fc.once.Do(func() { fc.err = checkCacheFile(ctx, d, ni, c.opts.Progress) })
		return fc.err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	m := c.manifest
	for i := range m.Paths {
		e := &m.Paths[i]
		g.Go(func() error {
			dm, err := c.pathDamage(ctx, d, e, checkFile)
			if err != nil {
				return err
			}
			what := "sound"
			mu.Lock()
			if dm.had {
				checked++
			}
			if dm.file || dm.narinfo {
				what = "damaged"
				found = append(found, dm)
			}
			mu.Unlock()
			c.opts.Progress.Step(e.Path.String(), what, 0)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, 0, err
	}
	return found, checked, nil
}

type fileCheck struct {
	once sync.Once
	err  error
}

// pathDamage says what of e the cache has damaged.
func (c *checker) pathDamage(ctx context.Context, d *cache.Cache, e *PathEntry, checkFile func(*narinfo.NarInfo) error) (damage, error) {
	dm := damage{e: e, want: c.narinfos[e.Path.Hash], staged: e.URL}
	if e.Delta != nil {
		// Carried as a binary delta: the NAR it rebuilt is what the
		// cache should have.
		m := c.seen[e.URL]
		if m != nil && m.inCache {
			// Not rebuilt: the cache's copy was checked, and is sound.
			return damage{e: e, had: true}, nil
		}
		if m == nil || m.rebuilt.url == "" {
			return dm, fmt.Errorf("repair %s: its binary delta %s was not rebuilt", e.Path, e.URL)
		}
		dm.want, dm.staged = e.rebuiltNarInfo(m.rebuilt), m.rebuilt.staged
	}
	want := dm.want
	if want == nil {
		return dm, fmt.Errorf("repair: no narinfo for %s", e.Path)
	}
	// The bundle's file, where the cache has one by its name.
	fileErr := checkFile(want)
	switch {
	case errors.Is(fileErr, cache.ErrNotFound):
	case errors.Is(fileErr, cache.ErrCorrupt):
		dm.file = true
	case fileErr != nil:
		return dm, fileErr
	}
	// The narinfo is read, not only looked for: one the store has but
	// will not give is an error, not a new path nor a checked one.
	have, err := d.NarInfo(ctx, e.Path.Hash)
	if errors.Is(err, cache.ErrNotFound) {
		return dm, nil // a new path: the import adds it
	}
	dm.had = true
	switch {
	case errors.Is(err, cache.ErrCorrupt):
		dm.narinfo = true
	case err != nil:
		return dm, err
	case !c.opts.AllowUnsigned && !have.Verify(c.opts.Keys) && !have.IsContentAddressed():
		dm.narinfo = true
	case have.URL == want.URL && sameFile(have, want):
		// The narinfo names the bundle's file: mending the file mends
		// the path. A missing file is damage here.
		dm.file = dm.file || errors.Is(fileErr, cache.ErrNotFound)
	default:
		// Another file (another compression, say): the path is sound
		// if it is; if not, the bundle's narinfo and file replace them.
		if err := checkFile(have); errors.Is(err, cache.ErrCorrupt) || errors.Is(err, cache.ErrNotFound) {
			dm.narinfo = true
			dm.file = dm.file || errors.Is(fileErr, cache.ErrNotFound)
		} else if err != nil {
			return dm, err
		}
	}
	return dm, nil
}

// checkCacheFile reads the cache's file at ni.URL to its end, checking it
// as Nix does: an error wrapping cache.ErrNotFound when it is missing,
// cache.ErrCorrupt when it is damaged. prog hears the bytes as they are
// read, so that a large file shows progress within it.
func checkCacheFile(ctx context.Context, d cache.Source, ni *narinfo.NarInfo, prog Progress) error {
	f, err := d.Open(ctx, ni.URL)
	if err != nil {
		return err
	}
	defer f.Close()
	return cache.CheckNAR(ProgressReader{cache.ContextReader(ctx, f), prog}, ni)
}
