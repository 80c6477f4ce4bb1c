package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/atomicfile"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// volumeOut is where a Writer of a volume set writes: NAME.001.tar, … for
// out NAME.tar, each at most size bytes.
type volumeOut struct {
	out   string
	size  int64
	names []string // the volumes written, once Close returns
}

// MinVolumeSize is the least volume size worth packing for: below it no
// manifest fits, so pack refuses it before it starts, and NewVolumeWriter
// at once rather than after the whole pack.
const MinVolumeSize = 16 << 10

// NewVolumeWriter writes a bundle as a volume set (docs/bundle-format.md
// §8): out is NAME.tar, the volumes NAME.001.tar, NAME.002.tar, …, each at
// most size bytes. The manifest describes every volume, so nothing is
// written to them until Close: the bundle is spooled as a directory in
// opts.TempDir (or, when that is "", beside out), and each spooled file is
// removed once its volume is written. A spool that a pack of volumes left
// when it was interrupted or killed is taken up again, so that Reuse and
// Adopt take from it what verifies; Close removes it.
func NewVolumeWriter(out string, size int64, storeDir storepath.Dir, opts WriterOptions) (*Writer, error) {
	if !strings.HasSuffix(out, ".tar") {
		return nil, fmt.Errorf("write volumes: %s: want NAME.tar, for NAME.001.tar, NAME.002.tar, …", out)
	}
	if size < MinVolumeSize {
		return nil, fmt.Errorf("write volumes %s: %w: %d bytes; a volume under %d bytes cannot even hold the manifest every volume carries", out, ErrVolumeTooSmall, size, MinVolumeSize)
	}
	tmp := opts.TempDir
	if tmp == "" {
		tmp = filepath.Dir(out)
	}
	// The spool is never synced: a crash discards what did not reach the
	// disk, which Reuse and Adopt then refuse, and the volumes are made
	// durable as they are written.
	var w *Writer
	// Spools killed packs left go, but for the newest that has a
	// nix-cache-info: that one is taken up, unless it is for another
	// store.
	if lock := atomicfile.Sweep(tmp, storage.SpoolPrefix, hasCacheInfo); lock != nil {
		w, _ = spoolWriter(lock, storeDir, opts)
	}
	if w == nil {
		_, lock, err := atomicfile.MkdirTemp(tmp, storage.SpoolPrefix)
		if err != nil {
			return nil, fmt.Errorf("write volumes: %w", err)
		}
		if w, err = spoolWriter(lock, storeDir, opts); err != nil {
			return nil, err
		}
	}
	w.vol = &volumeOut{out: out, size: size}
	return w, nil
}

// hasCacheInfo tells a spool a pack can go on from: a writer writes its
// nix-cache-info once it holds the lock.
func hasCacheInfo(spool string, _ fs.FileInfo) bool {
	_, err := os.Stat(filepath.Join(spool, CacheInfo))
	return err == nil
}

// spoolWriter writes into the spool that lock holds, which it removes if
// it fails.
func spoolWriter(lock *os.File, storeDir storepath.Dir, opts WriterOptions) (*Writer, error) {
	w, err := lockedDirWriter(lock.Name(), lock, storeDir, opts, cache.CreateSpoolDir)
	if err != nil {
		os.RemoveAll(lock.Name())
		lock.Close()
		return nil, err
	}
	w.spool = lock.Name()
	return w, nil
}

// Volumes are the volume files a volume set's Writer wrote, once Close
// returned; nil for other writers.
func (w *Writer) Volumes() []string {
	if w.vol == nil {
		return nil
	}
	return w.vol.names
}

// VolumeName is the name of volume i (from 1) of count for out NAME.tar:
// NAME.001.tar, with more digits when count needs them.
func VolumeName(out string, i, count int) string {
	width := max(3, len(fmt.Sprint(count)))
	return fmt.Sprintf("%s.%0*d.tar", strings.TrimSuffix(out, ".tar"), width, i)
}

// firstVolume is the first volume of the set pack wrote for out
// NAME.tar, NAME.001.tar with as many digits as the set's size gave it,
// or "" when there is none.
func firstVolume(out string) string {
	for _, n := range []int{1, 1000, 10000} {
		if f := VolumeName(out, 1, n); fileExists(f) {
			return f
		}
	}
	return ""
}

// VolumeSet lists the volumes beside out NAME.tar that VolumeName names
// for it, NAME.001.tar and on, in order; none when out is no NAME.tar.
func VolumeSet(out string) []string {
	name, ok := strings.CutSuffix(out, ".tar")
	if !ok {
		return nil
	}
	matches, _ := filepath.Glob(globEscape(name) + ".[0-9]*.tar")
	var vols []string
	for _, m := range matches {
		if loc := volumeNameRE.FindStringIndex(m); loc != nil && loc[0] == len(name) {
			vols = append(vols, m)
		}
	}
	return vols
}

// globEscape quotes the metacharacters of filepath.Match in s.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// closeVolumes lays the spooled bundle out into volumes, completes m with
// the layout, signs it and writes every volume.
func (w *Writer) closeVolumes(ctx context.Context, m *Manifest) error {
	if err := w.dir.Sync(ctx); err != nil {
		return fmt.Errorf("close bundle: %w", err)
	}
	var sig0 []byte
	if w.opts.Key != nil {
		sig0 = Sign(nil, *w.opts.Key) // its size does not depend on the data
	}
	info, err := w.dir.Info().MarshalText()
	if err != nil {
		return err
	}
	items := volumeItems(m)
	data, err := w.layout(m, items, int64(len(info)), int64(len(sig0)))
	if err != nil {
		return fmt.Errorf("write volumes of %s: %w", w.vol.out, err)
	}
	var sig []byte
	if w.opts.Key != nil {
		sig = Sign(data, *w.opts.Key)
	}
	w.data = data
	remove := lastUse(m.Volumes)
	for i, v := range m.Volumes {
		name := VolumeName(w.vol.out, i+1, len(m.Volumes))
		if err := w.writeVolume(name, i, v, info, data, sig, remove); err != nil {
			return fmt.Errorf("write volume %s: %w", name, err)
		}
		w.vol.names = append(w.vol.names, name)
	}
	return w.removeLeftVolumes(len(m.Volumes))
}

// removeLeftVolumes removes the volumes an older set of the same name
// left after the new set's last: that set lost its first volumes to the
// new one, and `import NAME.*.tar` would refuse them as another set's. A
// file there that is not a volume is left, with a warning; one that
// cannot be looked at stops the scan, with a warning naming it. The
// removals are durable when it returns: a power cut must not bring them
// back.
func (w *Writer) removeLeftVolumes(count int) error {
	var removed, left []string
	for i := count + 1; ; i++ {
		name := VolumeName(w.vol.out, i, count)
		if _, err := os.Stat(name); errors.Is(err, fs.ErrNotExist) {
			break
		} else if err != nil {
			w.log.Warn("cannot look at a file named as a volume after the new set's last, nor past it, for the volumes an older set left: remove what is not the new set's before carrying it", "file", name, "err", errors.Unwrap(err))
			break
		}
		v, err := scanVolume(name)
		if err == nil {
			v.f.Close()
		}
		if err != nil || v.data == nil || !v.isVolume() || bytes.Equal(v.data, w.data) {
			left = append(left, name)
			continue
		}
		if err := os.Remove(name); err != nil {
			left = append(left, name)
			continue
		}
		removed = append(removed, name)
	}
	if len(left) > 0 {
		w.log.Warn("files named as volumes after the new set's last are not part of it: remove them before carrying the set", "files", strings.Join(left, " "))
	}
	if len(removed) == 0 {
		return nil
	}
	if err := atomicfile.SyncDir(filepath.Dir(w.vol.out)); err != nil {
		return fmt.Errorf("remove the older set's volumes %s: %w", strings.Join(removed, " "), err)
	}
	w.log.Warn("removed the volumes an older set of the same name left after the new set's last: they are not part of it", "volumes", strings.Join(removed, " "))
	return nil
}

func fileExists(name string) bool {
	_, err := os.Stat(name)
	return err == nil
}

// volumeItems lists the bundle's files in the tar's order (§4): each NAR
// file (once) and its narinfo, path by path, then the extra files,
// flake-registry.json first.
func volumeItems(m *Manifest) []volumeItem {
	var items []volumeItem
	seen := map[string]bool{}
	for _, e := range m.Paths {
		if !seen[e.URL] {
			seen[e.URL] = true
			items = append(items, volumeItem{name: e.URL, size: int64(e.FileSize), split: true})
		}
		// A narinfo's size is known once it is read. A delta's path has
		// none in the bundle.
		if e.Delta == nil {
			items = append(items, volumeItem{name: cache.NarInfoFile(e.Path.Hash), size: -1})
		}
	}
	files := slices.Clone(m.Files)
	slices.SortStableFunc(files, func(a, b File) int {
		if (a.Name == RegistryName) != (b.Name == RegistryName) {
			if a.Name == RegistryName {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	for _, f := range files {
		items = append(items, volumeItem{name: f.Name, size: f.Size, split: true})
	}
	return items
}

// layout places items into volumes, fills in the pieces' hashes and
// returns the manifest's bytes. A volume size too small for the bundle is
// refused before any volume is written, with the least that holds it.
func (w *Writer) layout(m *Manifest, items []volumeItem, infoSize, sigSize int64) ([]byte, error) {
	for i := range items {
		if items[i].size < 0 {
			fi, err := os.Stat(filepath.Join(w.spool, items[i].name))
			if err != nil {
				return nil, err
			}
			items[i].size = fi.Size()
		}
	}
	vols, err := fitVolumes(m, items, w.vol.size, infoSize, sigSize)
	if errors.Is(err, ErrVolumeTooSmall) {
		// The least size is the one figure worth giving: what a
		// too small size lacked depends on the layout tried for it.
		if least, ok := leastVolumeSize(m, items, w.vol.size, infoSize, sigSize); ok {
			err = fmt.Errorf("%w: %d bytes; the least volume size that holds this bundle is %d bytes: --volume-size %s", ErrVolumeTooSmall, w.vol.size, least, sizeCeil(least))
		}
	}
	if err != nil {
		return nil, err
	}
	m.VolumeSize, m.Volumes = w.vol.size, vols
	if err := w.hashPieces(vols); err != nil {
		return nil, err
	}
	return m.Marshal()
}

// fitVolumes lays items out into volumes of size bytes, each of which
// also carries nix-cache-info (infoSize bytes), the manifest and, if
// sigSize is not 0, its signature. The manifest lists the layout, so the
// room left for files depends on its size: start from the manifest
// without volumes, which it never is shorter than, and grow the estimate
// to the manifest laid out until that fits, so that no size is refused
// for an estimate too big. The pieces' hashes are zeros until hashPieces,
// of the same length, so the manifest is as long as it will be.
func fitVolumes(m *Manifest, items []volumeItem, size, infoSize, sigSize int64) ([]Volume, error) {
	m.VolumeSize, m.Volumes = size, nil
	estimate, err := m.size()
	if err != nil {
		return nil, err
	}
	// Each round that does not end moves the manifest past a tar block,
	// and so the room down by 512 bytes at least.
	for range 256 {
		fixed := tarEntrySize(CacheInfo, infoSize) + tarEntrySize(ManifestName, estimate) + tarEnd
		if sigSize > 0 {
			fixed += tarEntrySize(SigName, sigSize)
		}
		room := size - fixed
		if room <= 0 {
			return nil, fmt.Errorf("%w: %d bytes leave no room beside nix-cache-info, the signature and the manifest every volume carries", ErrVolumeTooSmall, size)
		}
		vols, err := layoutVolumes(items, room)
		if err != nil {
			return nil, err
		}
		for i := range vols {
			for j := range vols[i].Pieces {
				vols[i].Pieces[j].SHA256 = make([]byte, sha256.Size)
			}
		}
		m.Volumes = vols
		n, err := m.size()
		if err != nil {
			return nil, err
		}
		if n <= estimate {
			return vols, nil
		}
		estimate = n
	}
	return nil, fmt.Errorf("%w: the manifest keeps outgrowing the room its volumes leave", ErrVolumeTooSmall)
}

// leastVolumeSize is the least volume size, above tooSmall, that
// fitVolumes lays items out in: the first size that fits, doubling, then
// bisected down to the byte, so that one byte less does not fit.
func leastVolumeSize(m *Manifest, items []volumeItem, tooSmall, infoSize, sigSize int64) (int64, bool) {
	fits := func(size int64) (bool, error) {
		_, err := fitVolumes(m, items, size, infoSize, sigSize)
		if errors.Is(err, ErrVolumeTooSmall) {
			return false, nil
		}
		return err == nil, err
	}
	lo, hi := tooSmall, max(2*tooSmall, MinVolumeSize)
	for {
		ok, err := fits(hi)
		if err != nil || hi > 1<<61 {
			return 0, false
		}
		if ok {
			break
		}
		lo, hi = hi, 2*hi
	}
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		ok, err := fits(mid)
		if err != nil {
			return 0, false
		}
		if ok {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi, true
}

// sizeCeil writes n bytes as --volume-size takes it, rounded up to a
// whole KiB, MiB or GiB, at most a sixteenth more.
func sizeCeil(n int64) string {
	unit, size := "KiB", int64(1<<10)
	switch {
	case n >= 16<<30:
		unit, size = "GiB", 1<<30
	case n >= 16<<20:
		unit, size = "MiB", 1<<20
	}
	return fmt.Sprintf("%d%s", (n+size-1)/size, unit)
}

// hashPieces fills in the sha256 of every piece, from the spooled files.
func (w *Writer) hashPieces(vols []Volume) error {
	for i := range vols {
		for j := range vols[i].Pieces {
			p := &vols[i].Pieces[j]
			f, err := os.Open(filepath.Join(w.spool, filepath.FromSlash(p.File)))
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, io.NewSectionReader(f, p.Offset, p.Size))
			f.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", p.File, err)
			}
			p.SHA256 = h.Sum(nil)
		}
	}
	return nil
}

// lastUse says, for each spooled file, the volume (index) that holds its
// last bytes: after writing that volume, the file can go.
func lastUse(vols []Volume) map[string]int {
	out := map[string]int{}
	for i, v := range vols {
		for _, f := range v.Files {
			out[f] = i
		}
		for _, p := range v.Pieces {
			out[p.File] = i
		}
	}
	return out
}

// writeVolume writes one volume file: nix-cache-info, its files and
// pieces, the manifest and its signature. Spooled files whose last bytes
// it holds are removed once it is committed.
func (w *Writer) writeVolume(name string, index int, v Volume, info, data, sig []byte, lastUse map[string]int) error {
	f, err := atomicfile.Create(name, 0o644)
	if err != nil {
		return err
	}
	defer f.Abort()
	tw := tar.NewWriter(f)
	put := func(name string, r io.Reader, size int64) error {
		if err := tw.WriteHeader(tarHeader(name, size)); err != nil {
			return err
		}
		_, err := io.CopyN(tw, r, size)
		return err
	}
	if err := put(CacheInfo, strings.NewReader(string(info)), int64(len(info))); err != nil {
		return err
	}
	spooled := func(file string) (*os.File, error) {
		return os.Open(filepath.Join(w.spool, filepath.FromSlash(file)))
	}
	var done []string
	for _, file := range v.Files {
		src, err := spooled(file)
		if err != nil {
			return err
		}
		fi, err := src.Stat()
		if err == nil {
			err = put(file, src, fi.Size())
		}
		src.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		done = append(done, file)
	}
	for _, p := range v.Pieces {
		src, err := spooled(p.File)
		if err != nil {
			return err
		}
		err = put(p.Name(), io.NewSectionReader(src, p.Offset, p.Size), p.Size)
		src.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", p.Name(), err)
		}
		done = append(done, p.File)
	}
	if err := put(ManifestName, strings.NewReader(string(data)), int64(len(data))); err != nil {
		return err
	}
	if sig != nil {
		if err := put(SigName, strings.NewReader(string(sig)), int64(len(sig))); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := f.Commit(); err != nil {
		return err
	}
	// The spooled files this volume finished are no longer needed.
	for _, file := range done {
		if lastUse[file] == index {
			os.Remove(filepath.Join(w.spool, filepath.FromSlash(file)))
		}
	}
	return nil
}
