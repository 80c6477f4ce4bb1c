package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// volumeSource is a volume set, or the part of one given (§8): its
// volume files, and what an import kept in the cache from earlier runs.
// Each volume is scanned first, seeking over data, for its manifest and
// the place of every entry; the checker reads and trusts the set's
// manifest (the opener capability) before any data. Then every file of
// the bundle that the given volumes (and the kept pieces) hold whole is
// yielded, a split one reassembled from its pieces, each piece checked
// against its sha256 as it passes and a bad one named by volume. Pieces of
// files that are not whole yet are yielded as pieces, for import to keep
// until the volumes with the rest come.
type volumeSource struct {
	jobs int
	vols []*volumeFile
	// data and sig are the set's manifest and signature.
	data, sig []byte
	kept      keptFiles // nil for verify
	keys      *signing.Keyring
	problems  []Problem // found before the manifest was trusted
}

// keptFiles are, for an import, what the cache has of a set besides the
// volumes given: the files and pieces kept from volumes given in earlier
// runs, and the paths it holds already.
type keptFiles interface {
	// has reports whether a whole file or a piece (by its name in the
	// volume) is kept.
	has(name string) (bool, error)
	open(name string) (io.ReadCloser, error)
	// done reports whether the cache has the store path already.
	done(p storepath.Path) (bool, error)
}

// volumeFile is one volume as scanned.
type volumeFile struct {
	path      string
	f         *os.File
	entries   map[string]tarEntry
	order     []string // entry names in the tar's order
	data, sig []byte   // its manifest and signature
	cut       string   // why its manifest could not be read, if so
	index     int      // its volume's index in the set; -1 until known
	// ended reports tar's end-of-archive marker after the last entry.
	ended bool
	// size is the file's size; noTar reports no tar header read.
	size  int64
	noTar bool
}

type tarEntry struct {
	off, size int64
	regular   bool
}

func (v *volumeFile) label() string { return filepath.Base(v.path) }

// openVolumes scans the volume files paths. keys tell a volume of
// another set (its manifest signed) from a damaged copy of the manifest;
// keptFor, for import, gives what the cache has of the set.
func openVolumes(paths []string, jobs int, keys *signing.Keyring, keptFor func(storepath.Hash) keptFiles) (*volumeSource, error) {
	var vols []*volumeFile
	for _, p := range paths {
		v, err := scanVolume(p)
		if err != nil {
			for _, v := range vols {
				v.f.Close()
			}
			return nil, err
		}
		vols = append(vols, v)
	}
	return newVolumeSource(vols, jobs, keys, keptFor), nil
}

// newVolumeSource is openVolumes of volumes already scanned.
func newVolumeSource(vols []*volumeFile, jobs int, keys *signing.Keyring, keptFor func(storepath.Hash) keptFiles) *volumeSource {
	s := &volumeSource{vols: vols, jobs: jobs, keys: keys}
	s.chooseSet()
	if keptFor != nil && s.data != nil {
		s.kept = keptFor(ID(s.data))
	}
	return s
}

func (s *volumeSource) close() {
	for _, v := range s.vols {
		v.f.Close()
	}
}

func (s *volumeSource) absent() string { return "not in the volumes given" }

// scanVolume reads a volume's tar headers, seeking over the data, and its
// manifest and signature.
func scanVolume(name string) (*volumeFile, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("volume %s: %w", name, err)
	}
	v, err := scanTar(name, f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("volume %s: %w", name, err)
	}
	return v, nil
}

// chooseSet picks the set the volumes belong to: the manifest most of
// them carry, whole and signed, the first given on a tie. Volumes of
// another set and cut ones are problems.
func (s *volumeSource) chooseSet() {
	count := map[string]int{}
	for _, v := range s.vols {
		if v.cut == "" {
			count[string(v.data)]++
		}
	}
	// A whole signed manifest outweighs any number of damaged copies.
	best := -1
	for _, v := range s.vols {
		if v.cut != "" {
			continue
		}
		score := count[string(v.data)]
		if s.ownManifest(v) {
			score += len(s.vols)
		}
		if score > best {
			best, s.data, s.sig = score, v.data, v.sig
		}
	}
	for _, v := range s.vols {
		switch {
		case v.cut != "":
			s.problems = append(s.problems, Problem{File: v.label(), Kind: KindCorrupt, Problem: "volume cut short: " + v.cut})
		case !bytes.Equal(v.data, s.data) && s.ownManifest(v):
			s.problems = append(s.problems, Problem{File: v.label(), Kind: KindCorrupt,
				Problem: fmt.Sprintf("a volume of another set (bundle %s), not of %s like the others given", ID(v.data), ID(s.data))})
		case !bytes.Equal(v.data, s.data):
			s.problems = append(s.problems, Problem{File: v.label() + ":" + ManifestName, Kind: KindCorrupt,
				Problem: "this volume's copy of the manifest is damaged: it differs from the others given, and is not a whole signed manifest"})
		}
	}
}

// ownManifest reports whether v's manifest is a whole one of its own: it
// parses, and a trusted key signed it (or, with no keys, it parses).
func (s *volumeSource) ownManifest(v *volumeFile) bool {
	if _, err := ParseManifest(v.data); err != nil {
		return false
	}
	if s.keys == nil {
		return true
	}
	_, err := VerifySignatures(v.data, v.sig, s.keys)
	return err == nil
}

// noManifest says why no volume given has a manifest to give: each is
// cut short.
func (s *volumeSource) noManifest() []Problem {
	if s.data != nil {
		return nil
	}
	return s.problems
}

// open returns the set's manifest and signature, for the checker to
// trust first.
func (s *volumeSource) open(name string) (io.ReadCloser, error) {
	switch {
	case name == ManifestName && s.data != nil:
		return io.NopCloser(bytes.NewReader(s.data)), nil
	case name == SigName && s.sig != nil:
		return io.NopCloser(bytes.NewReader(s.sig)), nil
	}
	return nil, fs.ErrNotExist
}

// files checks the volumes against the trusted manifest, then yields
// every file whole in them (or in them and what was kept), and the pieces
// of the rest.
func (s *volumeSource) files(ctx context.Context, r receiver) (ending, error) {
	m, err := ParseManifest(s.data)
	if err != nil {
		return ending{}, err // the checker parsed it already
	}
	if len(m.Volumes) == 0 {
		// Not a set: no volume report ("of 0 given").
		named := map[string]bool{}
		for _, v := range s.vols {
			if bytes.Equal(v.data, s.data) && !named[v.label()] {
				named[v.label()] = true
				r.problem(v.label(), KindCorrupt, "not a volume: its manifest describes a bundle in one piece; verify or import it alone")
			}
		}
		return ending{stop: true}, nil
	}
	idx := volumeIndex(m)
	for _, p := range s.problems {
		r.problem(p.File, p.Kind, "%s", p.Problem)
	}
	if !s.identify(r, idx, m.Volumes) || len(s.problems) > 0 {
		// Which volumes were given is not known: no volume report
		// ("volumes of 9 given").
		return ending{stop: true}, nil
	}
	end := ending{volumes: &VolumeReport{Count: len(m.Volumes)}}
	given := make([]*volumeFile, len(m.Volumes))
	for _, v := range s.vols {
		given[v.index] = v
		end.volumes.Given = append(end.volumes.Given, v.index+1)
		s.checkEntries(r, v, m.Volumes[v.index])
	}
	slices.Sort(end.volumes.Given)
	end.volumes.Missing = []int{}
	for i, v := range given {
		if v == nil {
			end.volumes.Missing = append(end.volumes.Missing, i+1)
		}
	}

	y := &yielder{s: s, r: r, given: given, idx: idx, pieces: piecesOf(m)}
	if end.pending, err = y.plan(m); err != nil {
		return ending{}, err
	}
	if p, ok := r.(pender); ok {
		p.pendingFiles(end.pending)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(s.jobs, 1))
	for _, f := range y.out {
		g.Go(func() error {
			if gctx.Err() != nil {
				return gctx.Err()
			}
			err := r.file(f)
			if re := (*readError)(nil); errors.As(err, &re) {
				r.problem(f.name, KindCorrupt, "read: %v", re.err)
				return nil
			}
			return err
		})
	}
	return end, g.Wait()
}

// identify finds which volume of the set each given one is, by the names
// it holds, and reports volumes that hold another's files, none, or the
// same as another given. vols is the set's layout, from the manifest.
func (s *volumeSource) identify(r receiver, idx map[string]volumeEntry, vols []Volume) bool {
	ok := true
	byIndex := map[int]*volumeFile{}
	twice := map[string]bool{}
	for _, v := range s.vols {
		found := map[int]bool{}
		for _, name := range v.order {
			if name == CacheInfo || name == ManifestName || name == SigName {
				continue
			}
			if e, in := idx[name]; in {
				found[e.volume] = true
			} else {
				r.problem(v.label()+":"+name, KindUnexpected, "in no volume of the set")
				ok = false
			}
		}
		if len(found) == 0 && len(vols) == 1 && len(vols[0].Files) == 0 && len(vols[0].Pieces) == 0 {
			// The one volume of a bundle of no files (a delta of a week
			// that changed nothing) holds only what every volume does.
			found[0] = true
		}
		if len(found) == 0 {
			r.problem(v.label(), KindCorrupt, "holds none of the set's files")
			ok = false
			continue
		}
		if len(found) != 1 {
			var nums []string
			for _, i := range slices.Sorted(maps.Keys(found)) {
				nums = append(nums, fmt.Sprint(i+1))
			}
			r.problem(v.label(), KindCorrupt, "holds files of volumes %s of the set; want those of one volume", strings.Join(nums, ", "))
			ok = false
			continue
		}
		for i := range found {
			v.index = i
		}
		if other := byIndex[v.index]; other != nil && other.path == v.path {
			if !twice[v.path] {
				r.problem(v.label(), KindCorrupt, "the same volume given twice")
			}
			twice[v.path], ok = true, false
		} else if other != nil {
			r.problem(v.label(), KindCorrupt, "the same volume given twice: %s and %s are both volume %d of the set", other.label(), v.label(), v.index+1)
			ok = false
		}
		byIndex[v.index] = v
	}
	return ok
}

// checkEntries reports what the manifest says volume v holds and it does
// not, and entries that are not regular files.
func (s *volumeSource) checkEntries(r receiver, v *volumeFile, want Volume) {
	need := []string{CacheInfo}
	need = append(need, want.Files...)
	for _, p := range want.Pieces {
		need = append(need, p.Name())
		if e, ok := v.entries[p.Name()]; ok && e.size != p.Size {
			r.problem(v.label()+":"+p.Name(), KindCorrupt, "%d bytes, the manifest says %d", e.size, p.Size)
		}
	}
	for _, name := range need {
		if e, ok := v.entries[name]; !ok {
			r.problem(v.label()+":"+name, KindMissing, "missing from volume %d", v.index+1)
		} else if !e.regular {
			r.problem(v.label()+":"+name, KindUnexpected, "not a regular file")
		}
	}
}

// yielder decides what the source yields.
type yielder struct {
	s      *volumeSource
	r      receiver
	given  []*volumeFile // by volume index; nil for volumes not given
	idx    map[string]volumeEntry
	pieces map[string][]*Piece
	out    []*file
}

// plan lists the files to yield, and returns the bundle files that are not
// whole in what was given and kept.
func (y *yielder) plan(m *Manifest) (map[string]bool, error) {
	pending, err := y.doneFiles(m)
	if err != nil {
		return nil, err
	}
	y.out = append(y.out, y.entry(y.firstGiven(), CacheInfo))
	for name := range bundleFileSizes(m) {
		if pending[name] {
			continue
		}
		if e, ok := y.idx[name]; ok && e.piece == nil {
			if v := y.given[e.volume]; v != nil {
				y.out = append(y.out, y.entry(v, name))
				continue
			}
			kept, err := y.kept(name)
			switch {
			case err != nil:
				return nil, err
			case kept:
				y.out = append(y.out, y.keptFile(name))
			default:
				pending[name] = true
			}
			continue
		}
		f, err := y.whole(name)
		if err != nil {
			return nil, err
		}
		if f != nil {
			y.out = append(y.out, f)
			continue
		}
		kept, err := y.kept(name)
		if err != nil {
			return nil, err
		}
		if kept {
			// Split, and kept whole from an earlier run; its pieces
			// given now are still checked.
			y.out = append(y.out, y.keptFile(name))
		} else {
			pending[name] = true
		}
		for _, p := range y.pieces[name] {
			if v := y.given[y.idx[p.Name()].volume]; v != nil {
				y.out = append(y.out, y.piece(v, p))
			}
		}
	}
	slices.SortFunc(y.out, func(a, b *file) int { return strings.Compare(a.name, b.name) })
	return pending, nil
}

// kept reports whether an import keeps the file or piece name from an
// earlier run.
func (y *yielder) kept(name string) (bool, error) {
	if y.s.kept == nil {
		return false, nil
	}
	return y.s.kept.has(name)
}

// doneFiles are, for an import, the files of paths the cache has: not
// needed, so not read.
func (y *yielder) doneFiles(m *Manifest) (map[string]bool, error) {
	done := map[string]bool{}
	if y.s.kept == nil {
		return done, nil
	}
	needed := map[string]bool{}
	for _, e := range m.Paths {
		has, err := y.s.kept.done(e.Path)
		if err != nil {
			return nil, err
		}
		if has {
			done[cache.NarInfoFile(e.Path.Hash)] = true
		} else {
			needed[e.URL] = true
		}
	}
	for _, e := range m.Paths {
		if !needed[e.URL] {
			done[e.URL] = true
		}
	}
	return done, nil
}

func (y *yielder) firstGiven() *volumeFile {
	for _, v := range y.given {
		if v != nil {
			return v
		}
	}
	return nil
}

// entry yields a whole file of a given volume.
func (y *yielder) entry(v *volumeFile, name string) *file {
	e := v.entries[name]
	return &file{name: name, size: e.size, origin: v.label(), open: func() (io.ReadCloser, error) {
		return io.NopCloser(io.NewSectionReader(v.f, e.off, e.size)), nil
	}}
}

func (y *yielder) keptFile(name string) *file {
	return &file{name: name, size: -1, origin: "kept from an earlier import", open: func() (io.ReadCloser, error) { return y.s.kept.open(name) }}
}

// piece yields a piece of a file that is not whole yet, checked against
// its sha256.
func (y *yielder) piece(v *volumeFile, p *Piece) *file {
	e := v.entries[p.Name()]
	return &file{name: p.Name(), size: e.size, origin: v.label(), piece: true, open: func() (io.ReadCloser, error) {
		return &pieceReader{r: io.NewSectionReader(v.f, e.off, e.size), h: sha256.New(), p: p, label: v.label() + ":" + p.Name(), rcv: y.r}, nil
	}}
}

// whole yields a split file reassembled from its pieces, if every piece is
// in a given volume or kept.
func (y *yielder) whole(name string) (*file, error) {
	ps := y.pieces[name]
	if len(ps) == 0 {
		return nil, nil
	}
	for _, p := range ps {
		if y.given[y.idx[p.Name()].volume] != nil {
			continue
		}
		if kept, err := y.kept(p.Name()); !kept || err != nil {
			return nil, err
		}
	}
	open := func() (io.ReadCloser, error) {
		var rs []io.Reader
		var closers []io.Closer
		for _, p := range ps {
			var src io.Reader
			label := p.Name() + " (kept from an earlier import)"
			if v := y.given[y.idx[p.Name()].volume]; v != nil {
				e := v.entries[p.Name()]
				src, label = io.NewSectionReader(v.f, e.off, e.size), v.label()+":"+p.Name()
			} else {
				rc, err := y.s.kept.open(p.Name())
				if err != nil {
					for _, c := range closers {
						c.Close()
					}
					return nil, err
				}
				src = rc
				closers = append(closers, rc)
			}
			rs = append(rs, &pieceReader{r: src, h: sha256.New(), p: p, label: label, rcv: y.r})
		}
		return multiCloser{io.MultiReader(rs...), closers}, nil
	}
	// Its pieces name their volumes when bad; the file itself is named
	// as the bundle names it.
	return &file{name: name, size: ps[len(ps)-1].Offset + ps[len(ps)-1].Size, open: open}, nil
}

// pieceReader passes a piece's bytes on, hashing them, and at their end
// reports a piece whose size or sha256 is not the manifest's, naming the
// volume it came from.
type pieceReader struct {
	r     io.Reader
	h     hashWriter
	p     *Piece
	n     int64
	label string
	rcv   receiver
	done  bool
}

type hashWriter interface {
	io.Writer
	Sum([]byte) []byte
}

func (pr *pieceReader) Read(b []byte) (int, error) {
	n, err := pr.r.Read(b)
	pr.h.Write(b[:n])
	pr.n += int64(n)
	if err == io.EOF && !pr.done {
		pr.done = true
		switch sum := pr.h.Sum(nil); {
		case pr.n != pr.p.Size:
			pr.rcv.problem(pr.label, KindCorrupt, "%d bytes, the manifest says %d", pr.n, pr.p.Size)
		case !bytes.Equal(sum, pr.p.SHA256):
			pr.rcv.problem(pr.label, KindCorrupt, "sha256 %x, the manifest says %x", sum, pr.p.SHA256)
		}
	}
	return n, err
}

func (pr *pieceReader) Close() error { return nil }

type multiCloser struct {
	io.Reader
	closers []io.Closer
}

func (m multiCloser) Close() error {
	for _, c := range m.closers {
		c.Close()
	}
	return nil
}

// VolumeReport says which volumes of a set were given, and which are
// missing: for verify, those not given; for import, those neither given
// now nor before.
type VolumeReport struct {
	Count   int   `json:"count"`
	Given   []int `json:"given"`
	Missing []int `json:"missing"`
}
