package bundle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/flakeregistry"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// ImportOptions configure Import. The zero value trusts no key and so
// refuses every bundle.
type ImportOptions struct {
	// Keys are the trusted public keys, as in VerifyOptions.
	Keys *signing.Keyring
	// AllowUnsigned imports a bundle no trusted key signed, as
	// VerifyOptions.AllowUnsigned verifies one.
	AllowUnsigned bool
	// Jobs is how many files are checked at once; 0 means GOMAXPROCS.
	Jobs int
	// Stdin is read when the source is "-".
	Stdin io.Reader
	// Log receives progress, and a warning while another process holds
	// the cache's lock; nil discards them.
	Log *slog.Logger
	// Progress, when set, hears how far verification has got.
	Progress Progress
	// TempDir is where a bundle is staged for a cache that is no local
	// directory; "" means os.TempDir().
	TempDir string
	// Repair also checks, deeply, every path of the bundle that the cache
	// has, and replaces what is damaged with the bundle's copy (import
	// --repair): a plain import leaves the paths it finds alone.
	Repair bool

	// givenBytes is the size of the volumes of a set an import is
	// given: it adds no more, but for binary deltas (room.check).
	givenBytes int64
}

// ImportReport is what Import did.
type ImportReport struct {
	ID     storepath.Hash
	Verify *Report
	// Added paths were new to the cache; Skipped were there already.
	Added, Skipped int
	// AddedBytes is the size of the NAR files added.
	AddedBytes int64
	// Recorded is false when the bundle had been imported before.
	Recorded bool
	// Repaired are the store paths a repair mended, and RepairedBytes
	// the size of the NAR files it replaced. RepairChecked counts the
	// bundle's paths it checked, those whose narinfo the cache had: a
	// repair checks no other path of the cache. A path new to the cache
	// is neither, though a damaged file of its (another path's, of the
	// same bytes) is replaced too.
	Repaired      []string
	RepairedBytes int64
	RepairChecked int
	// Channels says what became of each channel the bundle carries.
	Channels []ChannelResult
	// Held counts the paths of a volume set kept for volumes not given
	// yet; Volumes says which volumes were given and which are missing.
	Held    int
	Volumes *VolumeReport
	// Created is true when the import made the cache's directory or
	// bucket, which did not exist.
	Created bool
}

// Import verifies the bundle at src (a directory, a .tar file, a volume of
// a set, or "-" for opts.Stdin) and merges it into the cache at location (a
// directory, created if needed), as docs/bundle-format.md §6 says; a
// volume goes to ImportVolumes.
//
// Into a directory, an import whose files would not fit in the space free
// on the cache's file system is refused once its manifest is trusted,
// before any file is staged (NoRoomError); a stream, whose manifest comes
// last, is not.
//
// Everything is verified before the cache changes: the bundle's files are
// copied into a staging spool (CACHE/.staging-RANDOM/ for a directory,
// which readers ignore) as they are hashed, and only once the whole bundle
// verified (its signature trusted, every path it refers to or its bases
// provide in the bundle or the cache, whichever bundle brought it) are
// they moved in: NAR files first (and made durable),
// then narinfos, then flake-registry.json, the channels (§9), then the
// bundle's record. A bad
// bundle leaves the cache as it was; a crash leaves every narinfo's NAR
// complete, and importing again finishes the job. Paths the cache has are
// left alone, so importing a bundle twice changes nothing. Imports take a
// shared lock on the cache: several may run at once (NAR files are named
// by their content and narinfos come last), while what needs the cache to
// itself (gc) takes an exclusive one.
func Import(ctx context.Context, src, location string, opts ImportOptions) (*ImportReport, error) {
	// One scan of a tar file's headers, and one read of its manifest,
	// tells a volume from a whole tar and serves the check of a whole one.
	var scanned *volumeFile
	if src != "-" {
		scanned = scanRegular(src)
	}
	if scanned != nil && scanned.isVolume() {
		scanned.f.Close()
		return ImportVolumes(ctx, []string{src}, location, opts)
	}
	if scanned != nil {
		defer scanned.f.Close()
	}
	run := func(vopts VerifyOptions, st *staging) (*checker, error) {
		return checkScanned(ctx, src, scanned, vopts, st)
	}
	return importWith(ctx, src, location, opts, false, run, publish)
}

// importWith is an import of src (as messages name it), checked by run and
// published by pub, with the cache's lock shared, or exclusive.
func importWith(ctx context.Context, src, location string, opts ImportOptions, exclusive bool,
	run func(VerifyOptions, *staging) (*checker, error),
	pub func(context.Context, *checker, *staging, *cache.Cache, *ImportReport) error) (_ *ImportReport, err error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := CheckCache(location, CacheToMake); err != nil {
		if s, serr := Identify(src); serr == nil && s == ShapeCache && errors.Is(err, ErrNotCache) {
			return nil, fmt.Errorf("import %s: --cache %s: %w; and %s is a cache: the two are swapped (nix-airgap import BUNDLE --cache CACHE)", src, location, err, src)
		}
		return nil, fmt.Errorf("import %s: --cache %s: %w", src, location, err)
	}
	b, made, err := storage.Create(ctx, location)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", src, err)
	}
	defer b.Close()
	// A directory cache's lock file this import makes goes again if it
	// is refused: a refused import leaves the cache as it was.
	lockFile := ""
	if p, local := storage.LocalPath(location); local && made == "" {
		if _, err := os.Lstat(filepath.Join(p, storage.LockName)); errors.Is(err, fs.ErrNotExist) {
			lockFile = filepath.Join(p, storage.LockName)
		}
	}
	held, unlock, err := storage.Lock(ctx, b, storage.LockOptions{
		Exclusive: exclusive,
		Command:   "import " + src,
		Waiting: func(holder string) {
			log.Warn(storage.WaitingFor(holder, b))
			if opts.Progress != nil {
				opts.Progress.Phase(PhaseLock, 0, 0)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", src, err) // it names b, or its lock file
	}
	ctx = held // it stops if the lock is lost, and says so (lostLock)
	defer func() { err = lostLock(ctx, src, err); unlock() }()

	st, err := newStaging(ctx, b, opts.TempDir)
	if err != nil {
		return nil, fmt.Errorf("import %s into %s: %w", src, b, err)
	}
	defer st.remove()
	st.all = opts.Repair
	st.room = newRoom(b)
	defer func() { err = st.room.explain(err) }()

	c, err := checkImport(src, b, opts, log, st, run)
	if err == nil && c.registry != nil {
		// The bundle's registry is merged into the cache's last, so a
		// cache's that cannot take it is refused before anything moves.
		if _, rerr := flakeregistry.Read(ctx, b, RegistryName); rerr != nil && !storage.IsNotExist(rerr) {
			err = fmt.Errorf("import: %w", rerr) // it names the file in the cache
		}
	}
	var d *cache.Cache
	if err == nil {
		d, err = openImportCache(ctx, b, c.manifest.StoreDir)
		if err != nil {
			err = fmt.Errorf("import %s: %w", src, err)
		}
	}
	if err != nil {
		st.remove()
		if made != "" {
			// Leave no trace of the cache this import would have
			// made, unless another import uses it meanwhile: the lock
			// file last, then the directory or bucket, if nothing else
			// appeared in it.
			unlock()
			unlock = func() error { return nil }
			removeCreated(ctx, b, location, made)
			newCacheMissing(err, location)
		} else if lockFile != "" {
			unlock()
			unlock = func() error { return nil }
			removeLock(ctx, b, lockFile)
		}
		return nil, err
	}
	defer d.Close()
	if made != "" {
		sayCreated(log, src, location)
	}
	rep := &ImportReport{ID: c.report.ID, Verify: c.report, Created: made != ""}
	if opts.Repair {
		if err := repair(ctx, c, st, d, c.opts.Jobs, rep); err != nil {
			return nil, fmt.Errorf("import %s: %w", src, err)
		}
	}
	if err := pub(ctx, c, st, d, rep); err != nil {
		return nil, fmt.Errorf("import %s: %w", src, err)
	}
	log.Info("imported bundle", "bundle", src, "id", rep.ID.String(), "added", rep.Added, "skipped", rep.Skipped)
	return rep, nil
}

// lostLock is err, the error of an import of src, or if the import
// stopped because it lost its lock (held), that.
func lostLock(held context.Context, src string, err error) error {
	if lost := storage.LockLost(held); err != nil && lost != nil {
		return fmt.Errorf("import %s: %w", src, lost)
	}
	return err
}

// sayCreated says, where it is seen, that the import of src made the
// cache at location: a misspelt --cache otherwise goes unnoticed, the
// import filling a new directory or bucket.
func sayCreated(log *slog.Logger, src, location string) {
	what := "cache"
	if _, local := storage.LocalPath(location); !local {
		what = "bucket"
	}
	log.Warn(fmt.Sprintf("import %s: created %s %s, which did not exist", src, what, location))
}

// removeCreated removes the cache directory or bucket a refused first
// import made, and the parents it made up to top, if no other process
// holds its lock and nothing else appeared in them.
func removeCreated(ctx context.Context, b storage.Backend, location, top string) {
	if s, ok := b.(*storage.S3); ok {
		// The store refuses to remove a bucket that holds anything,
		// another import's lock object too. Done even when the import
		// was interrupted, within a minute.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		s.RemoveBucket(ctx)
		return
	}
	p, _ := storage.LocalPath(location)
	if !removeLock(ctx, b, filepath.Join(p, storage.LockName)) {
		return
	}
	// The cache's directory, then the parents the import made for it,
	// while they are empty.
	for d := filepath.Clean(p); ; d = filepath.Dir(d) {
		if os.Remove(d) != nil || d == top {
			return
		}
	}
}

// removeLock removes name, the lock file of b, a directory, if no other
// process holds it, and reports whether none did.
func removeLock(ctx context.Context, b storage.Backend, name string) bool {
	short, cancel := context.WithTimeout(ctx, 0)
	defer cancel()
	_, unlock, err := storage.Lock(short, b, storage.LockOptions{Exclusive: true})
	if err != nil {
		return false
	}
	defer unlock()
	os.Remove(name)
	return true
}

// errCacheNotBundle is import's answer to a long-lived cache given as
// the bundle.
var errCacheNotBundle = inputError(ErrNotBundle, "a long-lived cache: serve it, or import the bundles it was made of")

// checkImport verifies the bundle at src as import must, staging its
// files in st: deeply, with references resolving in the cache.
func checkImport(src string, b storage.Backend, opts ImportOptions, log *slog.Logger, st *staging, run func(VerifyOptions, *staging) (*checker, error)) (*checker, error) {
	ctx := st.ctx
	// A cache directory is said to be one before its signatures are
	// checked: with keys that trust none of it, that would be all it said.
	if p, local := storage.LocalPath(src); local {
		switch c, err := isCache(p); {
		case err != nil:
			return nil, fmt.Errorf("import %s: %w", src, err)
		case c:
			return nil, fmt.Errorf("import %s: %w", src, errCacheNotBundle)
		}
	}
	// Deep: what goes into a long-lived cache is checked as Nix will
	// check it.
	vopts := VerifyOptions{Keys: opts.Keys, AllowUnsigned: opts.AllowUnsigned, Deep: true, Jobs: opts.Jobs, Stdin: opts.Stdin, Log: log, Progress: opts.Progress}
	// The cache as it is, to resolve references. One whose
	// nix-cache-info cannot be read is refused now: without it every
	// reference would seem missing, after a whole verification.
	existing, err := cache.OpenBackend(ctx, b)
	switch {
	case err == nil:
		defer existing.Close()
		vopts.Against = []cache.Source{existing}
	case !errors.Is(err, cache.ErrNoCacheInfo):
		return nil, fmt.Errorf("import %s: %w", src, err)
	}
	vopts.into, vopts.repair = b, opts.Repair
	vopts.TempDir = st.path()
	if st.room != nil {
		vopts.room = func(m *Manifest, size, jobs int) error {
			return st.room.check(st, m, size, jobs, opts.givenBytes)
		}
	}
	c, err := run(vopts, st)
	if err == nil && c.manifest == nil {
		// Verified as a long-lived cache: it has no bundle to import.
		return nil, fmt.Errorf("import %s: %w", src, errCacheNotBundle)
	}
	if err == nil {
		logBases(ctx, b, c.manifest.Bases, log)
	}
	switch {
	case err != nil && c != nil:
		return nil, fmt.Errorf("import: %w", err)
	case err != nil && strings.HasPrefix(err.Error(), "import "):
		return nil, err // it names src
	case err != nil:
		return nil, fmt.Errorf("import %s: %w", src, err)
	}
	return c, nil
}

// logBases says which bundles the bundle was packed against were never
// imported into b. Bases are information: the references resolved. A
// cache inventory is never imported, so there is nothing to say of one.
func logBases(ctx context.Context, b storage.Backend, bases []Base, log *slog.Logger) {
	const resolved = "every path the bundle refers to is in the cache or the bundle all the same"
	for _, base := range bases {
		if base.Kind == BaseInventory {
			continue
		}
		if _, err := b.Stat(ctx, path.Join(RecordDir, RecordName(base.ID))); !storage.IsNotExist(err) {
			continue // recorded, or a store that cannot say: then nothing is known
		}
		if base.Kind == BaseBundle {
			log.Info("a base of the bundle was never imported here; "+resolved, "base", base.ID.String(), "packed", base.Created)
		} else {
			// A manifest written before bases had kinds cannot tell
			// a cache inventory, which has no record anywhere.
			log.Info("a base of the bundle has no record here: a bundle never imported here, or a cache inventory; "+resolved, "base", base.ID.String(), "packed or taken", base.Created)
		}
	}
}

// openImportCache creates the cache in b, or opens it, for a bundle's
// store.
func openImportCache(ctx context.Context, b storage.Backend, storeDir storepath.Dir) (*cache.Cache, error) {
	d, err := cache.CreateBackend(ctx, b, storeDir, Priority)
	if err != nil {
		return nil, err
	}
	// In a directory, the record dir marks a long-lived cache from the
	// start, so that verify checks an interrupted first import as one.
	if dir, ok := b.(*storage.Dir); ok {
		if err := os.MkdirAll(filepath.Join(dir.Path(), filepath.FromSlash(RecordDir)), 0o755); err != nil {
			d.Close()
			return nil, err
		}
	}
	return d, nil
}

// newCacheMissing adds to a refusal for missing paths that the cache did
// not exist before: a delta's bases cannot be in it, and a mistyped
// --cache reads like a cache that lost them.
func newCacheMissing(err error, location string) {
	// A path referred to is named by its store path; a binary delta's
	// base, by the delta's file.
	outside := func(p Problem) bool {
		return p.Kind == KindMissing && (path.IsAbs(p.File) || isDeltaFile(p.File))
	}
	var ve *VerifyError
	if !errors.As(err, &ve) || !slices.ContainsFunc(ve.Problems, outside) {
		return
	}
	ve.Problems = append(ve.Problems, Problem{File: location, Kind: KindMissing,
		Problem: "no such cache: this import would have made it, so nothing a base bundle carried is in it; is --cache the cache the bases went into?"})
}
