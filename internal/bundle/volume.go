package bundle

import (
	"archive/tar"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"unicode"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/nar"
)

// Volumes (docs/bundle-format.md §8): a bundle too big for one medium is
// written as a set of tars, NAME.001.tar, NAME.002.tar, …, each at most a
// given size. Every volume carries nix-cache-info, the whole signed
// manifest and its signature; the manifest's volumes say which files, and
// which pieces of files too big to fit, each volume holds, with each
// piece's sha256. So every volume verifies on its own, damage is named by
// volume, and import takes the volumes in any order, in one run or many.

// VolumesVersion is the manifest version of a volume set: a reader that
// knows only an older version refuses it, naming the version, rather than
// misreading the volumes. A manifest is written with the lowest version
// that has what it uses: Version, deltasVersion for binary deltas, this
// for volumes.
const VolumesVersion = 3

// Volume is what one volume of a set holds besides its nix-cache-info,
// manifest and signature.
type Volume struct {
	// Files are bundle files the volume holds whole, in the tar's order.
	Files []string
	// Pieces are the pieces of split files it holds.
	Pieces []Piece
}

// Piece is a part of a bundle file split across volumes.
type Piece struct {
	// File is the bundle file it is a part of; Part counts from 1.
	File string
	Part int
	// Offset and Size place it in the file.
	Offset, Size int64
	SHA256       []byte
}

// Name is the piece's name in its volume's tar: FILE.partNNN.
func (p Piece) Name() string { return fmt.Sprintf("%s.part%03d", p.File, p.Part) }

// pieceNameRE matches a piece's name, which no bundle file may have.
var pieceNameRE = regexp.MustCompile(`\.part[0-9]{3,}$`)

type (
	jsonVolume struct {
		Files  []string    `json:"files"`
		Pieces []jsonPiece `json:"pieces"`
	}
	jsonPiece struct {
		File   string `json:"file"`
		Part   int    `json:"part"`
		Offset int64  `json:"offset"`
		Size   int64  `json:"size"`
		SHA256 string `json:"sha256"`
	}
)

func volumesToJSON(vs []Volume) []jsonVolume {
	var out []jsonVolume
	for _, v := range vs {
		jv := jsonVolume{Files: append([]string{}, v.Files...), Pieces: []jsonPiece{}}
		for _, p := range v.Pieces {
			jv.Pieces = append(jv.Pieces, jsonPiece{File: p.File, Part: p.Part, Offset: p.Offset, Size: p.Size, SHA256: hex.EncodeToString(p.SHA256)})
		}
		out = append(out, jv)
	}
	return out
}

// volumesFromJSON reads a volume set and checks that it holds every file
// of m exactly once: whole in one volume, or in pieces 1…n that cover it,
// in order, and that narinfos are whole.
func volumesFromJSON(m *Manifest, size int64, jvs []jsonVolume) error {
	if len(jvs) == 0 || size <= 0 {
		return errors.New("volumes: a volume set: want volumeSize > 0 and one volume or more")
	}
	m.VolumeSize = size
	sizes := bundleFileSizes(m) // -1: a narinfo, never split
	placed := map[string]bool{}
	next := map[string]*Piece{} // the last piece seen of each split file
	for i, jv := range jvs {
		v := Volume{}
		for _, name := range jv.Files {
			if _, ok := sizes[name]; !ok {
				return fmt.Errorf("volumes[%d]: %s is no file of the bundle", i, name)
			}
			if placed[name] || next[name] != nil {
				return fmt.Errorf("volumes[%d]: %s placed twice", i, name)
			}
			placed[name] = true
			v.Files = append(v.Files, name)
		}
		for j, jp := range jv.Pieces {
			p := Piece{File: jp.File, Part: jp.Part, Offset: jp.Offset, Size: jp.Size}
			var err error
			if p.SHA256, err = parseHex(jp.SHA256, 32); err != nil {
				return fmt.Errorf("volumes[%d].pieces[%d]: sha256: %w", i, j, err)
			}
			total, ok := sizes[p.File]
			switch {
			case !ok:
				return fmt.Errorf("volumes[%d].pieces[%d]: %s is no file of the bundle", i, j, p.File)
			case total < 0:
				return fmt.Errorf("volumes[%d].pieces[%d]: %s is a narinfo, which is never split", i, j, p.File)
			case placed[p.File]:
				return fmt.Errorf("volumes[%d].pieces[%d]: %s placed twice", i, j, p.File)
			case p.Size <= 0:
				return fmt.Errorf("volumes[%d].pieces[%d]: %s: empty piece", i, j, p.File)
			}
			want := Piece{Part: 1}
			if last := next[p.File]; last != nil {
				want = Piece{Part: last.Part + 1, Offset: last.Offset + last.Size}
			}
			if p.Part != want.Part || p.Offset != want.Offset || p.Offset+p.Size > total {
				return fmt.Errorf("volumes[%d].pieces[%d]: %s part %d at %d: want part %d at %d, within its %d bytes", i, j, p.File, p.Part, p.Offset, want.Part, want.Offset, total)
			}
			if p.Offset+p.Size == total {
				placed[p.File] = true
				delete(next, p.File)
			} else {
				next[p.File] = &p
			}
			v.Pieces = append(v.Pieces, p)
		}
		m.Volumes = append(m.Volumes, v)
	}
	for name := range sizes {
		if !placed[name] {
			return fmt.Errorf("volumes: %s is in no volume, or not whole", name)
		}
	}
	return nil
}

// bundleFileSizes lists every file of m a volume set must hold, with its
// size: -1 for narinfos, whose size the manifest does not give.
func bundleFileSizes(m *Manifest) map[string]int64 {
	out := map[string]int64{}
	for _, e := range m.Paths {
		out[e.URL] = int64(e.FileSize)
		if e.Delta == nil { // a delta's path has no narinfo in the bundle
			out[cache.NarInfoFile(e.Path.Hash)] = -1
		}
	}
	for _, f := range m.Files {
		out[f.Name] = f.Size
	}
	return out
}

// volumeEntry is where a volume set holds a name: the volume's index and
// the piece.
type volumeEntry struct {
	volume int
	piece  *Piece // nil for a whole file
}

// volumeIndex indexes a volume set: for each name a volume's tar holds (a
// whole file, or a piece's name), its volumeEntry.
func volumeIndex(m *Manifest) map[string]volumeEntry {
	out := map[string]volumeEntry{}
	for i, v := range m.Volumes {
		for _, f := range v.Files {
			out[f] = volumeEntry{volume: i}
		}
		for j := range v.Pieces {
			p := &v.Pieces[j]
			out[p.Name()] = volumeEntry{volume: i, piece: p}
		}
	}
	return out
}

// piecesOf lists the pieces of each split file, in order.
func piecesOf(m *Manifest) map[string][]*Piece {
	out := map[string][]*Piece{}
	for i := range m.Volumes {
		for j := range m.Volumes[i].Pieces {
			p := &m.Volumes[i].Pieces[j]
			out[p.File] = append(out[p.File], p)
		}
	}
	return out
}

// FAT32 is the largest file FAT32 holds: 4 GiB − 1 bytes.
const FAT32 = 4<<30 - 1

// ParseVolumeSize parses pack's --volume-size: a number of bytes with an
// optional unit, decimal or binary as written, in either case (k, K, KB =
// 1000; Ki, KiB = 1024; likewise M, G, T, so 4g and 700mb too), or "fat32"
// for FAT32's largest file.
func ParseVolumeSize(s string) (int64, error) {
	if strings.EqualFold(s, "fat32") {
		return FAT32, nil
	}
	i := strings.IndexFunc(s, func(r rune) bool { return !unicode.IsDigit(r) && r != '.' })
	num, unit := s, ""
	if i >= 0 {
		num, unit = s[:i], strings.TrimSpace(s[i:])
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f <= 0 {
		return 0, fmt.Errorf("volume size %q: want a number of bytes with an optional unit (700MiB, 25GB, 4G) or fat32", s)
	}
	mult, ok := map[string]float64{
		"": 1, "b": 1,
		"k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
		"ki": 1 << 10, "kib": 1 << 10, "mi": 1 << 20, "mib": 1 << 20, "gi": 1 << 30, "gib": 1 << 30, "ti": 1 << 40, "tib": 1 << 40,
	}[strings.ToLower(unit)]
	if !ok {
		return 0, fmt.Errorf("volume size %q: unknown unit %q: want B, K/KB, M/MB, G/GB, T/TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)", s, unit)
	}
	n := math.Floor(f * mult)
	if n < 1 || n >= 1<<62 { // as a float64, MaxInt64/2 rounds up to 1<<62
		return 0, fmt.Errorf("volume size %q: out of range", s)
	}
	return int64(n), nil
}

// tarEntrySize is how many bytes a file of size bytes named name takes in
// a tar as the bundle writers write it: its header blocks (with a PAX
// header when the name needs one) and its data padded to 512 bytes.
func tarEntrySize(name string, size int64) int64 {
	c := nar.CountingWriter{W: io.Discard}
	tw := tar.NewWriter(&c)
	tw.WriteHeader(tarHeader(name, size)) // a counter never fails
	return c.N + (size+511)/512*512
}

// tarEnd is tar's end-of-archive marker: two zero blocks.
const tarEnd = 1024

// ErrVolumeTooSmall reports a volume size that cannot hold what every
// volume must: nix-cache-info, the manifest, its signature and the largest
// file that is never split.
var ErrVolumeTooSmall = errors.New("volume size too small")

// volumeItem is a file to place in volumes, in the tar's order.
type volumeItem struct {
	name  string
	size  int64
	split bool // narinfos are never split
}

// layoutVolumes places items into volumes with room bytes each for them
// (the volume size less what every volume carries). Each volume is
// filled: a file that does not fit in what is left is split, its first
// piece filling the volume, unless it may not be split or too little is
// left for a piece's header and a block of data.
func layoutVolumes(items []volumeItem, room int64) ([]Volume, error) {
	var vols []Volume
	cur, left, used := Volume{}, room, false
	next := func() {
		vols = append(vols, cur)
		cur, left, used = Volume{}, room, false
	}
	for _, it := range items {
		if e := tarEntrySize(it.name, it.size); e <= left {
			cur.Files = append(cur.Files, it.name)
			left -= e
			used = true
			continue
		} else if !it.split {
			if !used || e > room {
				return nil, fmt.Errorf("%w: %s needs %d bytes, and a volume has room for %d", ErrVolumeTooSmall, it.name, e, room)
			}
			next()
			cur.Files = append(cur.Files, it.name)
			left -= e
			used = true
			continue
		}
		var off int64
		for part := 1; off < it.size; part++ {
			p := Piece{File: it.name, Part: part, Offset: off}
			hdr := tarEntrySize(p.Name(), 0)
			if left < hdr+512 {
				if !used {
					return nil, fmt.Errorf("%w: a piece of %s needs %d bytes, and a volume has room for %d", ErrVolumeTooSmall, it.name, hdr+512, room)
				}
				next()
			}
			p.Size = min(it.size-off, (left-hdr)/512*512)
			cur.Pieces = append(cur.Pieces, p)
			left -= hdr + (p.Size+511)/512*512
			used = true
			off += p.Size
			if off < it.size {
				next()
			}
		}
	}
	// A bundle of no files (a delta of a week that changed nothing)
	// still needs a volume, to carry its manifest.
	if used || len(vols) == 0 {
		vols = append(vols, cur)
	}
	return vols, nil
}
