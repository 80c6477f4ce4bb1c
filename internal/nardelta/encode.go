package nardelta

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// EncodeOptions tune Encode. The zero value is what pack uses.
type EncodeOptions struct {
	// Segment is how many bytes of a changed file one patch tells; 0
	// means DefaultSegment, and it is at most MaxSegment.
	Segment int
	// Dict is how many bytes of the counterpart a patch's dictionary
	// holds; 0 means DefaultDict, and it is at most MaxDict.
	Dict int
	// Level is the zstd level of patches; 0 means
	// zstd.SpeedBetterCompression, the fastest level whose match finder
	// still finds the counterpart's bytes all over a dictionary of
	// megabytes (the default level's misses most of them).
	Level zstd.EncoderLevel
	// NARChecked skips Encode's own check of the NAR's hash and size,
	// for a caller that checks the bytes it passes as it reads them for
	// another use (pack, which stores the NAR too), and discards the
	// delta when that check fails: from another NAR, the delta would
	// not rebuild.
	NARChecked bool
}

// Encode writes to w the delta that makes the NAR narR reads from base,
// which must have been made with the rewrites the delta is to list. The
// NAR must have narHash and narSize (the store's or the narinfo's record
// of it): the delta names them, and Encode fails, naming the difference,
// when the NAR read does not match.
func Encode(w io.Writer, narR io.Reader, narHash storepath.Hash, narSize uint64, base *Base, opts EncodeOptions) error {
	if opts.Segment <= 0 || opts.Segment > MaxSegment {
		opts.Segment = DefaultSegment
	}
	if opts.Dict <= 0 || opts.Dict > MaxDict {
		opts.Dict = DefaultDict
	}
	if opts.Level == 0 {
		opts.Level = zstd.SpeedBetterCompression
	}
	if err := base.buildIndex(); err != nil {
		return err
	}
	if _, err := w.Write(binary.AppendUvarint([]byte(Magic), Version)); err != nil {
		return err
	}
	// No checksum: the rebuilt NAR's hash is checked, which covers more.
	zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithWindowSize(outerWindow),
		zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false))
	if err != nil {
		return err
	}
	defer zw.Close()
	h := &Header{BaseNarHash: base.narHash, BaseNarSize: uint64(base.size), NarHash: narHash, NarSize: narSize, Rewrites: base.used}
	if err := h.write(zw); err != nil {
		return err
	}
	e := &encoder{base: base, opts: opts, out: zw, seg: make([]byte, opts.Segment), cmp: make([]byte, opts.Segment)}
	defer e.close()
	if opts.NARChecked {
		if err := e.walk(narR); err != nil {
			return err
		}
	} else {
		hw := nar.NewHashWriter(io.Discard)
		if err := e.walk(io.TeeReader(narR, hw)); err != nil {
			return err
		}
		if got := hw.Sum(); !got.Equal(narHash) || uint64(hw.Size()) != narSize {
			return fmt.Errorf("encode NAR delta: the NAR read has hash %s and size %d, not %s and %d", got, hw.Size(), narHash, narSize)
		}
	}
	if err := e.flush(); err != nil {
		return err
	}
	if _, err := zw.Write([]byte{opEnd}); err != nil {
		return err
	}
	return zw.Close()
}

// buildIndex lists the base's regular files by path, once.
func (b *Base) buildIndex() error {
	if b.index != nil {
		return nil
	}
	b.index = map[string]fileEntry{}
	b.byShape = map[string][]string{}
	nr := nar.NewReader(io.NewSectionReader(b.f, 0, b.size))
	for {
		hdr, err := nr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("base NAR: %w", err)
		}
		if hdr.Type != nar.TypeRegular {
			continue
		}
		b.index[hdr.Path] = fileEntry{off: hdr.Offset, size: hdr.Size}
		s := shape(hdr.Path)
		b.byShape[s] = append(b.byShape[s], hdr.Path)
	}
}

// counterpart finds the base file a new file at p is told against: the
// file at the same path, else the one file whose path differs only in
// its digits (libfoo.so.1.2.3 and libfoo.so.1.2.4, share/doc/foo-1.2/
// and share/doc/foo-1.3/), as a version bump renames them.
func (b *Base) counterpart(p string) (fileEntry, bool) {
	if e, ok := b.index[p]; ok {
		return e, true
	}
	if c := b.byShape[shape(p)]; len(c) == 1 {
		return b.index[c[0]], true
	}
	return fileEntry{}, false
}

// shape is a path with every run of digits replaced by one '#'.
func shape(p string) string {
	var s strings.Builder
	digits := false
	for i := 0; i < len(p); i++ {
		c := p[i]
		if '0' <= c && c <= '9' {
			if !digits {
				s.WriteByte('#')
			}
			digits = true
			continue
		}
		digits = false
		s.WriteByte(c)
	}
	return path.Clean(s.String())
}

// encoder writes operations, merging a copy into the one before it when
// they are contiguous in the base.
type encoder struct {
	base *Base
	opts EncodeOptions
	out  io.Writer
	// pending is a copy not written yet: it may grow.
	pendOff, pendLen int64
	seg, cmp         []byte
	lit              []byte // literal bytes not written yet
	// zenc makes patches at opts.Level, zsmall those against a small
	// dictionary; each holds the last dictionary of its size.
	zenc, zsmall *zstd.Encoder
	patchBuf     bytes.Buffer
	scratch      []byte
	// poor counts the current file's last patches in a row that gained
	// little over compressing the segment alone with plain.
	poor     int
	plain    *zstd.Encoder
	plainBuf []byte
	// shift is how far the current file's bytes sit from their
	// counterpart's, as the last aligned segment ended; win and ops are
	// align's.
	shift int64
	win   []byte
	ops   []alignOp
	// misaligned counts the current file's last segments in a row that
	// align could not tell.
	misaligned int
	// dict is the patches' dictionary: base bytes at off, loaded into
	// zenc when data is set.
	dict struct {
		off, len int64
		data     []byte
	}
}

func (e *encoder) close() {
	for _, z := range []*zstd.Encoder{e.zenc, e.zsmall, e.plain} {
		if z != nil {
			z.Close()
		}
	}
}

// walk reads the NAR, telling the framing between regular files as
// literals (or as copies, when the base has the same bytes next) and
// each file's contents against its counterpart.
func (e *encoder) walk(narR io.Reader) error {
	t := &tee{r: narR}
	nr := nar.NewReader(t)
	var pos int64
	for {
		hdr, err := nr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("encode NAR delta: %w", err)
		}
		if hdr.Type != nar.TypeRegular {
			continue
		}
		b, err := t.take(pos, hdr.Offset)
		if err != nil {
			return err
		}
		if err := e.framing(b); err != nil {
			return err
		}
		t.dropBelow(hdr.Offset + hdr.Size)
		cp, ok := e.base.counterpart(hdr.Path)
		if err := e.contents(nr, hdr.Size, cp, ok); err != nil {
			return err
		}
		pos = hdr.Offset + hdr.Size
	}
	b, err := t.take(pos, t.end())
	if err != nil {
		return err
	}
	return e.framing(b)
}

// framing tells bytes of the NAR's structure: a copy when the base has
// them right after the pending copy (as when files and names match),
// else literals.
func (e *encoder) framing(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if e.pendLen > 0 && e.pendOff+e.pendLen+int64(len(b)) <= e.base.size {
		buf := e.cmp[:len(b)]
		if len(b) > len(e.cmp) {
			buf = make([]byte, len(b))
		}
		if err := e.base.readAt(buf, e.pendOff+e.pendLen); err != nil {
			return err
		}
		if bytes.Equal(buf, b) {
			e.pendLen += int64(len(b))
			return nil
		}
	}
	return e.literal(b)
}

// contents tells a regular file's n bytes, read from r, segment by
// segment against its counterpart cp (if ok).
func (e *encoder) contents(r io.Reader, n int64, cp fileEntry, ok bool) error {
	e.poor, e.shift, e.misaligned = 0, 0, 0
	for i, done := 0, int64(0); done < n; i++ {
		seg := e.seg[:min(int64(len(e.seg)), n-done)]
		if _, err := io.ReadFull(r, seg); err != nil {
			return fmt.Errorf("encode NAR delta: %w", err)
		}
		// A file whose patches keep gaining little is new in all but
		// name (another toolchain's binary): its segments go as
		// literals, with a patch now and then in case that changes.
		literal := !ok || cp.size == 0 || e.poor >= 2 && i%8 != 0
		if literal {
			if err := e.literal(seg); err != nil {
				return err
			}
		} else if err := e.against(seg, done, n, cp); err != nil {
			return err
		}
		done += int64(len(seg))
	}
	return nil
}

// against tells one segment, at off in a file of n bytes, against the
// counterpart: a copy when the counterpart has the same bytes at the same
// place, else copies and literals when it has them but for short edits
// (align), else a patch with the counterpart's bytes around the
// proportional place as its dictionary. A dictionary serves the segments
// after it as long as their place stays a quarter of it from its edges:
// preparing one costs zstd far more than a segment does.
func (e *encoder) against(seg []byte, off, n int64, cp fileEntry) error {
	if off+int64(len(seg)) <= cp.size {
		cmp := e.cmp[:len(seg)]
		if err := e.base.readAt(cmp, cp.off+off); err != nil {
			return err
		}
		if bytes.Equal(cmp, seg) {
			return e.copy(cp.off+off, int64(len(seg)))
		}
	}
	// A file that does not align (a recompiled binary) is tried again
	// only now and then: each try costs a read and a search.
	if e.misaligned < 2 || off/int64(len(e.seg))%8 == 0 {
		aligned, err := e.align(seg, off, cp)
		if aligned || err != nil {
			e.misaligned = 0
			return err
		}
		e.misaligned++
	}
	center := cp.off + int64(float64(off+int64(len(seg))/2)*float64(cp.size)/float64(n))
	margin := int64(e.opts.Dict) / 4
	d := &e.dict
	inFile := d.off >= cp.off && d.off+d.len <= cp.off+cp.size
	if d.len == 0 || !inFile || center-d.off < min(margin, center-cp.off) || d.off+d.len-center < min(margin, cp.off+cp.size-center) {
		// A new dictionary, reaching further ahead than behind: the
		// next segments are ahead.
		d.len = min(int64(e.opts.Dict), cp.size)
		d.off = min(max(center-margin, cp.off), cp.off+cp.size-d.len)
		d.data = nil
	}
	return e.patch(seg, n > int64(len(e.seg)))
}

func (e *encoder) copy(off, n int64) error {
	if e.pendLen > 0 && e.pendOff+e.pendLen == off {
		e.pendLen += n
		return nil
	}
	if err := e.flush(); err != nil {
		return err
	}
	e.pendOff, e.pendLen = off, n
	return nil
}

func (e *encoder) literal(b []byte) error {
	if e.pendLen > 0 {
		if err := e.flushCopy(); err != nil {
			return err
		}
	}
	e.lit = append(e.lit, b...)
	if len(e.lit) >= 1<<20 {
		return e.flushLit()
	}
	return nil
}

// flush writes what is pending: a copy or literals.
func (e *encoder) flush() error {
	if err := e.flushCopy(); err != nil {
		return err
	}
	return e.flushLit()
}

func (e *encoder) flushCopy() error {
	if e.pendLen == 0 {
		return nil
	}
	b := binary.AppendUvarint([]byte{opCopy}, uint64(e.pendOff))
	b = binary.AppendUvarint(b, uint64(e.pendLen))
	e.pendLen = 0
	_, err := e.out.Write(b)
	return err
}

func (e *encoder) flushLit() error {
	if len(e.lit) == 0 {
		return nil
	}
	b := binary.AppendUvarint([]byte{opLit}, uint64(len(e.lit)))
	if _, err := e.out.Write(b); err != nil {
		return err
	}
	_, err := e.out.Write(e.lit)
	e.lit = e.lit[:0]
	return err
}

// smallDict is the largest dictionary a patch is made against at zstd's
// fastest level: preparing a dictionary costs the "better" level's
// encoder its whole tables (megabytes) however small the dictionary, and
// a small one is found as well at the fastest.
const smallDict = 128 << 10

// patch tells seg as a zstd frame against the dictionary; probe, for a
// file of more than one segment, also measures whether the patch gains
// enough over compressing seg alone to go on patching.
func (e *encoder) patch(seg []byte, probe bool) error {
	if err := e.flush(); err != nil {
		return err
	}
	d := &e.dict
	z := &e.zenc
	level := e.opts.Level
	if d.len <= smallDict {
		z, level = &e.zsmall, zstd.SpeedFastest
	}
	if d.data == nil {
		d.data = make([]byte, d.len)
		if err := e.base.readAt(d.data, d.off); err != nil {
			return err
		}
		// One encoder per level, reset with each new dictionary: a new
		// one would allocate and clear its tables (megabytes) for every
		// file, which costs more than the patch when files are small.
		// Patches go through its stream, whose encoder Reset prepares
		// the dictionary for (EncodeAll would prepare a second one).
		dictOpt := zstd.WithEncoderDictRaw(dictID, d.data)
		if *z == nil {
			var err error
			*z, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(1),
				zstd.WithWindowSize(patchEncodeWindow), dictOpt, zstd.WithEncoderCRC(false))
			if err != nil {
				return err
			}
		} else if err := (*z).ResetWithOptions(nil, dictOpt); err != nil {
			return err
		}
	}
	e.patchBuf.Reset()
	(*z).Reset(&e.patchBuf)
	if _, err := (*z).Write(seg); err != nil {
		return err
	}
	if err := (*z).Close(); err != nil {
		return err
	}
	e.scratch = e.patchBuf.Bytes()
	if probe {
		// Poor: not a quarter smaller than zstd's fastest level makes the
		// segment without the dictionary.
		if e.plain == nil {
			var err error
			if e.plain, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false)); err != nil {
				return err
			}
		}
		e.plainBuf = e.plain.EncodeAll(seg, e.plainBuf[:0])
		if len(e.scratch) > len(e.plainBuf)*3/4 {
			e.poor++
		} else {
			e.poor = 0
		}
	}
	b := []byte{opPatch}
	for _, v := range []uint64{uint64(d.off), uint64(d.len), uint64(len(seg)), uint64(len(e.scratch))} {
		b = binary.AppendUvarint(b, v)
	}
	if _, err := e.out.Write(b); err != nil {
		return err
	}
	_, err := e.out.Write(e.scratch)
	return err
}

// Alignment tells a segment that differs from its counterpart only by
// short edits as copies of the counterpart and literals, found by
// comparing the two in step and resynchronising after each edit: a new
// dependency's store path of another length, which shifts everything
// after it, is the typical edit. It costs a pass over the bytes, where a
// patch costs zstd hashing its dictionary's megabytes into its tables:
// most of a pack's time when a version bump renames a path that its
// dependents write into their files.
const (
	// alignSlack is how far the counterpart is read to either side of
	// where the segment is expected, and so the most the edits of one
	// segment may shift it.
	alignSlack = 64 << 10
	// alignSkip is the longest edit in the segment resynchronised after,
	// and alignShift the most one edit changes the length by.
	alignSkip  = 512
	alignShift = 512
	// alignAnchor is how many bytes must match to resynchronise: more
	// than a store directory's prefix, which every store path repeats.
	alignAnchor = 64
)

// alignOp is a copy of n base bytes at off, or, when lit, the n bytes
// of the segment at off.
type alignOp struct {
	lit    bool
	off, n int64
}

// align tells seg, at off in its file, as copies of the counterpart cp
// and literals, if the two differ only by short edits; it reports false,
// having told nothing, when they differ more (a recompiled binary), for a
// patch to tell.
func (e *encoder) align(seg []byte, off int64, cp fileEntry) (bool, error) {
	at := cp.off + off + e.shift // where seg is expected in the base
	lo := max(cp.off, at-alignSlack)
	hi := min(cp.off+cp.size, at+int64(len(seg))+alignSlack)
	if hi-lo < alignAnchor || at < lo || at > hi {
		return false, nil
	}
	if e.win == nil {
		e.win = make([]byte, len(e.seg)+2*alignSlack)
	}
	win := e.win[:hi-lo]
	if err := e.base.readAt(win, lo); err != nil {
		return false, err
	}
	// Literals and edits are bounded: past them a patch is smaller, and
	// the bound keeps a search through unrelated bytes short.
	maxLit, maxEdits := max(len(seg)/16, 1024), 16+len(seg)/16384
	ops, lit, edits := e.ops[:0], 0, 0
	i, j := 0, int(at-lo)
	for i < len(seg) {
		if m := commonPrefix(seg[i:], win[j:]); m >= alignAnchor || i+m == len(seg) {
			ops = append(ops, alignOp{off: lo + int64(j), n: int64(m)})
			i, j = i+m, j+m
			continue
		}
		a, b, ok := resync(seg[i:], win, j)
		if !ok {
			if len(seg)-i > alignSkip {
				return false, nil
			}
			a, b = len(seg)-i, j // the end differs
		}
		if a > 0 {
			ops = append(ops, alignOp{lit: true, off: int64(i), n: int64(a)})
			lit += a
		}
		i, j, edits = i+a, b, edits+1
		if lit > maxLit || edits > maxEdits {
			return false, nil
		}
	}
	e.ops = ops
	for _, op := range ops {
		var err error
		if op.lit {
			err = e.literal(seg[op.off : op.off+op.n])
		} else {
			err = e.copy(op.off, op.n)
		}
		if err != nil {
			return true, err
		}
	}
	e.shift = lo + int64(j) - (cp.off + off + int64(len(seg)))
	return true, nil
}

// resync finds where s, which differs from win at j, matches win again
// for alignAnchor bytes or more: after skipping a bytes of s, at b in win,
// the longest such match of the first a that has one.
func resync(s, win []byte, j int) (a, b int, ok bool) {
	for a = 0; a <= alignSkip && a+alignAnchor <= len(s); a++ {
		w := s[a : a+8]
		from, to := max(0, j-alignShift), min(len(win), j+a+alignShift+alignAnchor)
		best, bestLen := 0, 0
		for k, tries := from, 0; k < to && tries < 16; tries++ {
			x := bytes.Index(win[k:to], w)
			if x < 0 {
				break
			}
			c := k + x
			if m := commonPrefix(s[a:min(len(s), a+4*alignAnchor)], win[c:]); m > bestLen {
				best, bestLen = c, m
			}
			k = c + 1
		}
		if bestLen >= alignAnchor {
			return a, best, true
		}
	}
	return 0, 0, false
}

// commonPrefix is how many bytes a and b start with in common.
func commonPrefix(a, b []byte) int {
	n := min(len(a), len(b))
	i := 0
	for i+256 <= n && bytes.Equal(a[i:i+256], b[i:i+256]) {
		i += 256
	}
	for i+8 <= n && binary.LittleEndian.Uint64(a[i:]) == binary.LittleEndian.Uint64(b[i:]) {
		i += 8
	}
	for i < n && a[i] == b[i] {
		i++
	}
	return i
}

// tee keeps what a NAR reader reads, from the framing not yet told on,
// and drops a file's contents as they pass: the encoder reads those from
// the NAR reader itself.
type tee struct {
	r     io.Reader
	buf   []byte
	start int64 // offset of buf[0]
	n     int64 // bytes read so far
	drop  int64 // bytes below this offset are not kept
}

func (t *tee) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	from := t.n
	t.n += int64(n)
	if keep := max(t.drop, from); keep < t.n {
		if len(t.buf) == 0 {
			t.start = keep
		}
		t.buf = append(t.buf, p[keep-from:n]...)
	}
	return n, err
}

// take returns the bytes from a to b, which must be kept, and keeps none
// before b from then on.
func (t *tee) take(a, b int64) ([]byte, error) {
	if b <= a {
		return nil, nil
	}
	if a < t.start || b > t.start+int64(len(t.buf)) {
		return nil, fmt.Errorf("encode NAR delta: framing at %d to %d not kept (%d to %d are)", a, b, t.start, t.start+int64(len(t.buf)))
	}
	out := bytes.Clone(t.buf[a-t.start : b-t.start])
	t.dropBelow(b)
	return out, nil
}

// dropBelow drops what is kept below off, and keeps nothing below it that
// is read later.
func (t *tee) dropBelow(off int64) {
	t.drop = max(t.drop, off)
	if len(t.buf) == 0 {
		return
	}
	if cut := off - t.start; cut >= int64(len(t.buf)) {
		t.buf = t.buf[:0]
	} else if cut > 0 {
		t.buf = t.buf[:copy(t.buf, t.buf[cut:])]
		t.start = off
	}
}

// end is how far the reader has read: the whole NAR once it is done.
func (t *tee) end() int64 { return t.n }
