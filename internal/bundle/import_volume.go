package bundle

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/atomicfile"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// ImportVolumes imports volumes of one set (§8), any of them, in any
// order: a store path appears in the cache once its NAR file is whole
// and checked (its FileHash and, decompressed, its NarHash), its narinfo
// is in and every path it refers to is in the cache or comes with it.
// What must wait for volumes not given yet is kept in the cache, under
// nix-airgap/volumes/ID/, until a later run brings the rest; the run
// that completes the set writes its registry, channels and record, and
// drops what was kept. A bad volume, one of another set, one given twice
// or one cut short refuses the run and leaves the cache as it was. The
// report says which volumes are still missing.
//
// With opts.Repair, every volume of the set must be given in the one run:
// a repair re-checks what the cache has against the whole bundle.
func ImportVolumes(ctx context.Context, volumes []string, location string, opts ImportOptions) (*ImportReport, error) {
	var kept *keptStore
	run := func(vopts VerifyOptions, st *staging) (*checker, error) {
		c, err := checkVolumes(ctx, volumes, vopts, st, func(id storepath.Hash) keptFiles {
			kept = openKept(ctx, st.b, id)
			if opts.Repair {
				return repairKept{kept}
			}
			return kept
		})
		if err == nil && opts.Repair && c.report.Volumes != nil && len(c.report.Volumes.Missing) > 0 {
			return nil, repairVolumesError{c.report.Volumes.Missing, c.report.Volumes.Count}
		}
		return c, err
	}
	pub := func(ctx context.Context, c *checker, st *staging, d *cache.Cache, rep *ImportReport) error {
		return publishVolumes(ctx, c, st, d, rep, kept)
	}
	for _, v := range volumes {
		fi, err := os.Stat(v)
		if err != nil {
			opts.givenBytes = 0 // no bound: the check counts the whole set
			break
		}
		opts.givenBytes += fi.Size()
	}
	// What is kept of a set changes in several steps: one import of
	// volumes at a time.
	return importWith(ctx, VolumesName(volumes), location, opts, true, run, pub)
}

// ErrRepairVolumes refuses import --repair of part of a volume set: a
// repair needs the whole bundle.
var ErrRepairVolumes = errors.New("--repair needs every volume of the set in one run")

// repairKept is the cache's keptStore for a repair: the set's files are
// read from the volumes given, the cache's copies of them too, so that
// the repair has every file to check them against and to mend them with.
type repairKept struct{ *keptStore }

func (repairKept) done(storepath.Path) (bool, error) { return false, nil }

func (k repairKept) has(name string) (bool, error) {
	if isNARFile(name) {
		return false, nil
	}
	return k.keptStore.has(name)
}

// repairVolumesError is ErrRepairVolumes naming the volumes not given;
// it is ErrMissing too.
type repairVolumesError struct {
	missing []int
	count   int
}

func (e repairVolumesError) Error() string {
	s := make([]string, len(e.missing))
	for i, n := range e.missing {
		s[i] = strconv.Itoa(n)
	}
	return fmt.Sprintf("%v; not given: volume %s of %d", ErrRepairVolumes, strings.Join(s, ", "), e.count)
}

func (e repairVolumesError) Is(target error) bool {
	return target == ErrRepairVolumes || target == ErrMissing
}

// keptDir is where a cache keeps what imports of part of a volume set
// could not publish yet: keptDir/ID/files/NAME for each file or piece
// (NAME as in the volume), keptDir/ID/volumes.json for the volumes
// imported so far, keptDir/ID/manifest.json and its signature as they
// were checked.
const keptDir = recordRoot + "/volumes"

// keptStore is what the cache keeps of one volume set between imports.
// Every file in it was checked against the signed manifest when it was
// kept, and is checked again when it is read.
type keptStore struct {
	ctx context.Context
	b   storage.Backend // the cache's
	dir string          // keptDir/ID
}

func openKept(ctx context.Context, b storage.Backend, id storepath.Hash) *keptStore {
	return &keptStore{ctx: ctx, b: b, dir: path.Join(keptDir, setName(id))}
}

func (k *keptStore) file(name string) string { return path.Join(k.dir, "files", name) }

// has reports whether a file or piece is kept, or, for a NAR file, in the
// cache already (an interrupted import may have left one there without
// its narinfo).
func (k *keptStore) has(name string) (bool, error) {
	ok, err := storage.Exists(k.ctx, k.b, k.file(name))
	if ok || err != nil || !isNARFile(name) {
		return ok, err
	}
	return storage.Exists(k.ctx, k.b, name)
}

func (k *keptStore) open(name string) (io.ReadCloser, error) {
	f, err := k.b.Open(k.ctx, k.file(name))
	if storage.IsNotExist(err) && isNARFile(name) {
		return k.b.Open(k.ctx, name)
	}
	return f, err
}

// done reports whether the cache has p already.
func (k *keptStore) done(p storepath.Path) (bool, error) {
	return storage.Exists(k.ctx, k.b, cache.NarInfoFile(p.Hash))
}

// keepData keeps data as name.
func (k *keptStore) keepData(name string, data []byte) error {
	return k.b.Put(k.ctx, k.file(name), bytes.NewReader(data), int64(len(data)))
}

// keepNew keeps data as name, unless it is kept already.
func (k *keptStore) keepNew(name string, data []byte) error {
	if has, err := k.has(name); has || err != nil {
		return err
	}
	return k.keepData(name, data)
}

// forget removes a kept file; a missing one is no error.
func (k *keptStore) forget(name string) error {
	return k.b.Remove(k.ctx, k.file(name))
}

// keptVolumes is keptDir/ID/volumes.json.
type keptVolumes struct {
	Count    int   `json:"count"`
	Imported []int `json:"imported"`
}

// forgetVolumes removes volumes.json.
func (k *keptStore) forgetVolumes() error {
	return k.b.Remove(k.ctx, path.Join(k.dir, "volumes.json"))
}

// addVolumes notes volumes as imported, with whatever another import
// noted meanwhile.
func (k *keptStore) addVolumes(count int, given []int) (keptVolumes, error) {
	var v keptVolumes
	err := storage.Update(k.ctx, k.b, path.Join(k.dir, "volumes.json"), 1<<20, func(old []byte, exists bool) ([]byte, error) {
		v = keptVolumes{}
		if exists {
			json.Unmarshal(old, &v)
		}
		v.Count = count
		v.Imported = slices.Compact(slices.Sorted(slices.Values(append(v.Imported, given...))))
		data, err := json.Marshal(v)
		return append(data, '\n'), err
	})
	return v, err
}

// drop removes everything kept of the set, now that it is all in,
// durably. The import holds the cache's lock alone: in a directory, the
// temp files a killed import left there go too.
func (k *keptStore) drop() error {
	if err := removeTree(k.ctx, k.b, k.dir); err != nil {
		return err
	}
	if d, ok := k.b.(*storage.Dir); ok {
		if err := os.RemoveAll(d.Where(k.dir)); err != nil {
			return err
		}
		// Gone with the directory, whatever is left in it; none when
		// the set came whole in one run.
		if err := atomicfile.SyncDir(d.Where(keptDir)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// removeTree removes every file under dir in b, and, in a directory, the
// directories that held them.
func removeTree(ctx context.Context, b storage.Backend, dir string) error {
	for info, err := range b.List(ctx, dir) {
		if err != nil {
			return err
		}
		if info.Dir {
			err = removeTree(ctx, b, info.Name)
		} else {
			err = b.Remove(ctx, info.Name)
		}
		if err != nil && !storage.IsNotExist(err) {
			return err
		}
	}
	if d, ok := b.(*storage.Dir); ok {
		os.Remove(d.Where(dir)) // only if empty
	}
	return nil
}

// publishVolumes publishes what the volumes given (and those kept) make
// whole: first it keeps what must wait, durably; then, as publish does,
// NAR files before narinfos, references first; then it notes the volumes
// given and forgets what was published. The run that completes the set
// also merges its registry, installs its channels, records it and drops
// what was kept.
func publishVolumes(ctx context.Context, c *checker, st *staging, d *cache.Cache, rep *ImportReport, kept *keptStore) error {
	m := c.manifest
	complete := !slices.ContainsFunc(m.Files, func(f File) bool { return c.pending[f.Name] }) && len(c.held) == 0
	ready, waiting, err := splitReady(ctx, c, d)
	if err != nil {
		return err
	}
	if err := keepWaiting(c, st, kept, waiting, complete); err != nil {
		return fmt.Errorf("keep what waits for other volumes: %w", err)
	}
	if !complete {
		// gc reads it to keep what the set needs (HalfImportedSets).
		name := path.Join(kept.dir, ManifestName)
		ok, err := recorded(ctx, d.Backend(), name, rep.ID)
		if err != nil {
			return fmt.Errorf("keep the manifest: %w", err)
		}
		if !ok {
			if err := putManifest(ctx, c, d, name); err != nil {
				return fmt.Errorf("keep the manifest: %w", err)
			}
		}
	}
	// What waits is durable before anything is published.
	if err := d.Sync(ctx); err != nil {
		return err
	}
	if err := publishPaths(ctx, c, st, d, rep, ready); err != nil {
		return err
	}
	// The kept copies of what is published go, durably, before the
	// record of the volumes is written (one fsync of each directory they
	// left): a power cut then leaves a record that names only volumes
	// whose files the cache has, and no kept copy coming back of a path
	// it has. When the set is complete the record goes with them, before
	// the bundle's record is written.
	if err := forgetPublished(m, kept, ready); err != nil {
		return err
	}
	if complete {
		if err := kept.forgetVolumes(); err != nil {
			return err
		}
	}
	if err := storage.Sync(ctx, kept.b); err != nil {
		return err
	}
	given := []int{}
	if c.report.Volumes != nil {
		given = c.report.Volumes.Given
	}
	v := keptVolumes{Count: len(m.Volumes), Imported: given}
	if !complete {
		var err error
		if v, err = kept.addVolumes(len(m.Volumes), given); err != nil {
			return err
		}
	}
	rep.Held = len(c.held)
	rep.Volumes = &VolumeReport{Count: len(m.Volumes), Given: given, Missing: []int{}}
	if !complete {
		for i := 1; i <= len(m.Volumes); i++ {
			if !slices.Contains(v.Imported, i) {
				rep.Volumes.Missing = append(rep.Volumes.Missing, i)
			}
		}
		return nil
	}
	if err := publishFiles(ctx, c, st, d, rep); err != nil {
		return err
	}
	return kept.drop()
}

// splitReady sorts the bundle's paths the cache lacks into those that can
// be published now and those that wait. A store that cannot say whether
// it has a path fails it: taken for absent, the path would be written
// again over the cache's; for present, it would never be.
func splitReady(ctx context.Context, c *checker, d *cache.Cache) (ready, waiting []*PathEntry, err error) {
	m := c.manifest
	for i := range m.Paths {
		e := &m.Paths[i]
		has, err := d.Has(ctx, e.Path.Hash)
		switch {
		case err != nil:
			return nil, nil, err
		case has:
		case c.held[e.Path.Hash]:
			waiting = append(waiting, e)
		default:
			ready = append(ready, e)
		}
	}
	return ready, waiting, nil
}

// keepWaiting keeps, of what this run staged or read, what the waiting
// paths need (their NAR files or pieces of them, their narinfos) and,
// unless the set is complete now, the bundle's other files.
func keepWaiting(c *checker, st *staging, kept *keptStore, waiting []*PathEntry, complete bool) error {
	keepStaged := func(name string) error {
		if !st.staged(name) {
			return nil
		}
		if !isNARFile(name) {
			if has, err := kept.has(name); has || err != nil {
				return err
			}
		}
		return st.commit(name, kept.file(name))
	}
	pieces := piecesOf(c.manifest)
	for _, e := range waiting {
		if err := keepStaged(e.URL); err != nil {
			return err
		}
		for _, p := range pieces[e.URL] {
			if err := keepStaged(p.Name()); err != nil {
				return err
			}
		}
		ni := cache.NarInfoFile(e.Path.Hash)
		if m, ok := c.seen[ni]; ok && !m.bad {
			data := m.data
			if n := c.narinfos[e.Path.Hash]; m.checked && n != nil {
				data = []byte(n.String()) // checked as it was read
			}
			if err := kept.keepNew(ni, data); err != nil {
				return err
			}
		}
	}
	if !complete {
		for _, f := range c.manifest.Files {
			if err := keepStaged(f.Name); err != nil {
				return err
			}
			for _, p := range pieces[f.Name] {
				if err := keepStaged(p.Name()); err != nil {
					return err
				}
			}
			if m, ok := c.seen[f.Name]; ok && !m.bad && f.Name == RegistryName {
				// The checker keeps the registry in memory, unstaged.
				if err := kept.keepNew(f.Name, m.keep); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// forgetPublished drops the kept files of the paths just published.
func forgetPublished(m *Manifest, kept *keptStore, ready []*PathEntry) error {
	pieces := piecesOf(m)
	for _, e := range ready {
		names := []string{e.URL, cache.NarInfoFile(e.Path.Hash)}
		for _, p := range pieces[e.URL] {
			names = append(names, p.Name())
		}
		for _, n := range names {
			if err := kept.forget(n); err != nil {
				return err
			}
		}
	}
	return nil
}

// HalfImported is a volume set some of whose volumes a cache has
// imported, but not all: what it has published and what its kept delta
// files are rebuilt from must stay until the rest comes (gc).
type HalfImported struct {
	ID       string    // the bundle id, sha256:NIX32
	Manifest *Manifest // nil when Err is set
	Count    int       // volumes in the set; 0 when unknown
	Imported []int     // volumes imported so far, from 1
	// Err says why the set's manifest could not be read: what the set
	// needs is unknown.
	Err error
	// ImportedErr says why the volumes imported so far are unknown: an
	// import killed before it noted its volumes leaves no
	// volumes.json; the next import of the set notes its own.
	ImportedErr error
}

// HalfImportedSets lists the volume sets the cache keeps files of
// (keptDir), with their manifests.
func HalfImportedSets(ctx context.Context, b storage.Backend) ([]HalfImported, error) {
	var sets []HalfImported
	for info, err := range b.List(ctx, keptDir) {
		if err != nil {
			return nil, err
		}
		if !info.Dir {
			continue
		}
		s := HalfImported{ID: setID(path.Base(info.Name))}
		s.Manifest, s.Err = readKeptManifest(ctx, b, info.Name, path.Base(info.Name))
		if s.Err == nil {
			s.Count = len(s.Manifest.Volumes)
		}
		s.Imported, s.ImportedErr = readKeptVolumes(ctx, b, path.Join(info.Name, "volumes.json"), s.Count)
		sets = append(sets, s)
	}
	return sets, nil
}

// readKeptVolumes reads the volumes imported so far from a kept
// volumes.json, of a set of count volumes (0 when unknown).
func readKeptVolumes(ctx context.Context, b storage.Backend, name string, count int) ([]int, error) {
	data, _, err := storage.ReadFile(ctx, b, name, 1<<20)
	base := path.Base(name)
	if storage.IsNotExist(err) {
		return nil, fmt.Errorf("no %s: an import of it was interrupted before it noted its volumes", base)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", base, err)
	}
	var v keptVolumes
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", base, ErrCorrupt, err)
	}
	if count > 0 && v.Count != count || slices.ContainsFunc(v.Imported, func(i int) bool { return i < 1 || i > v.Count }) {
		return nil, fmt.Errorf("%s: %w: it says volumes %v of %d, of a set of %d", base, ErrCorrupt, v.Imported, v.Count, count)
	}
	return v.Imported, nil
}

// readKeptManifest reads the manifest kept in dir, which must hash to
// the id the directory is named by.
func readKeptManifest(ctx context.Context, b storage.Backend, dir, id string) (*Manifest, error) {
	name := path.Join(dir, ManifestName)
	data, _, err := storage.ReadFile(ctx, b, name, MaxManifestSize)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if got := setName(ID(data)); got != id {
		return nil, fmt.Errorf("%s: %w: its id is %s", name, ErrCorrupt, got)
	}
	m, err := ParseManifest(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(m.Volumes) == 0 {
		return nil, fmt.Errorf("%s: %w: it lists no volumes: not a volume set's", name, ErrCorrupt)
	}
	return m, nil
}

// VolumesName names volumes given together, as messages' subject: the
// first and the last (in the first's directory, by base name) and how
// many, as a line of every name would be too long to read.
func VolumesName(volumes []string) string {
	if len(volumes) < 3 {
		return strings.Join(volumes, " ")
	}
	first, last := volumes[0], volumes[len(volumes)-1]
	if filepath.Dir(last) == filepath.Dir(first) {
		last = filepath.Base(last)
	}
	return fmt.Sprintf("%s … %s (%d volumes)", first, last, len(volumes))
}
