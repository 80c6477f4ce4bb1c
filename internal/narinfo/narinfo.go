// Package narinfo reads and writes the .narinfo files of Nix binary
// caches, computes their signature fingerprints and checks their
// signatures. Parsing follows Nix 2.8's NarInfo constructor
// (libstore/nar-info.cc) quirk for quirk, so that we accept what Nix
// accepts, except where the input would be dangerous or unusable (see
// Parse). Writing is byte-identical to Nix's NarInfo::to_string.
package narinfo

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
	"unique"

	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// MaxSize caps the narinfo Parse reads. Real ones are a few KiB; the
// largest (thousands of references) stay far below this.
const MaxSize = 1 << 20

// Sentinel errors.
var (
	// ErrCorrupt reports a narinfo Nix would reject, or one we refuse.
	ErrCorrupt = errors.New("corrupt narinfo")
	// ErrTooLarge reports input longer than MaxSize.
	ErrTooLarge = errors.New("narinfo too large")
)

// NarInfo describes one store path in a binary cache.
type NarInfo struct {
	// StorePath is the path described; its Dir is the cache's store dir.
	StorePath storepath.Path
	// URL locates the (compressed) NAR, relative to the cache.
	URL string
	// Compression names the NAR's compression; Parse sets "bzip2" when
	// the line is missing, as Nix does, and String writes "bzip2" for "".
	Compression string
	// FileHash and FileSize describe the compressed file; FileHash may be
	// zero.
	FileHash storepath.Hash
	FileSize uint64
	// NarHash (sha256) and NarSize (> 0) describe the uncompressed NAR.
	NarHash storepath.Hash
	NarSize uint64
	// References are in StorePath.Dir, sorted and without duplicates
	// after Parse.
	References []storepath.Path
	// Deriver is the zero Path when unknown.
	Deriver storepath.Path
	System  string
	Sigs    []signing.Signature
	// CA is the content address ("fixed:r:sha256:…", "text:sha256:…")
	// in Nix's canonical form, or "".
	CA string
}

// Parse reads a narinfo for a cache whose store dir is storeDir. Like
// Nix it ignores unknown keys, lets a later line override an earlier
// one, defaults Compression to bzip2, accepts hashes in any encoding and
// "unknown-deriver". Unlike Nix, which would fail only later, it rejects
// a NarHash that is not sha256 and Sig values that are not NAME:BASE64 of
// an ed25519 signature. Errors wrap ErrCorrupt or ErrTooLarge and name
// the line.
func Parse(r io.Reader, storeDir storepath.Dir) (*NarInfo, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("parse narinfo: %w", err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("parse narinfo: %w: more than %d bytes", ErrTooLarge, MaxSize)
	}
	return parse(string(b), storeDir)
}

// parse mirrors the loop in Nix's NarInfo constructor, line by line.
func parse(s string, storeDir storepath.Dir) (*NarInfo, error) {
	ni := &NarInfo{}
	f := fields{refs: map[string]storepath.Path{}, sigs: map[string]signing.Signature{}}
	for rest, line := s, 1; rest != ""; {
		name, value, next, err := cutLine(rest)
		if err == nil {
			err = f.set(ni, storeDir, name, value)
		}
		if err != nil {
			// %v: callers branch on ErrCorrupt alone.
			return nil, fmt.Errorf("parse narinfo line %d: %v: %w", line, err, ErrCorrupt)
		}
		line += strings.Count(rest[:len(rest)-len(next)], "\n") // counted as we go: recounting is quadratic
		rest = next
	}
	ni, err := f.complete(ni)
	if err != nil {
		return nil, err
	}
	ni.detach()
	return ni, nil
}

// detach copies the strings ni keeps out of the text they were sliced
// from, which would otherwise stay alive as long as ni: a plan holds the
// narinfo of every upstream path, 100,000 for a channel, and what it
// keeps of each is a third of the text. The few strings most narinfos
// share are interned.
func (ni *NarInfo) detach() {
	ni.StorePath = detachPath(ni.StorePath)
	ni.Deriver = detachPath(ni.Deriver)
	for i := range ni.References {
		ni.References[i] = detachPath(ni.References[i])
	}
	ni.URL = strings.Clone(ni.URL)
	ni.Compression = unique.Make(ni.Compression).Value()
	ni.System = unique.Make(ni.System).Value()
	for i := range ni.Sigs {
		ni.Sigs[i].KeyName = unique.Make(ni.Sigs[i].KeyName).Value()
	}
}

// detachPath copies p's hash and name into one new string.
func detachPath(p storepath.Path) storepath.Path {
	if p.Hash == "" {
		return p
	}
	base := p.Hash + "-" + p.Name
	return storepath.Path{Dir: p.Dir, Hash: base[:len(p.Hash)], Name: base[len(p.Hash)+1:]}
}

// quoteKey quotes a key for an error, at most its first 40 bytes: in a
// file that is no narinfo, the "key" before the first colon may be all
// of it.
func quoteKey(name string) string {
	const max = 40
	if len(name) <= max {
		return strconv.Quote(name)
	}
	return strconv.Quote(name[:max]) + fmt.Sprintf("… (%d bytes)", len(name))
}

// cutLine splits the first line off s as Nix does: the key runs to the
// first colon (even across newlines), the value starts two bytes after
// it, whatever they are, and runs to the next newline.
func cutLine(s string) (name, value, rest string, err error) {
	colon := strings.IndexByte(s, ':')
	if colon < 0 {
		return "", "", "", errors.New("no colon")
	}
	name = s[:colon]
	if colon+2 >= len(s) {
		return "", "", "", fmt.Errorf("no value after %s", quoteKey(name))
	}
	value, rest, ok := strings.Cut(s[colon+2:], "\n")
	if !ok {
		return "", "", "", fmt.Errorf("no newline after %s", quoteKey(name))
	}
	return name, value, rest, nil
}

// fields is what parse has read besides the NarInfo: references and
// signatures by their text, to be sorted and deduplicated at the end. It
// holds nothing that escapes, so that its maps stay on the stack.
type fields struct {
	havePath, haveNarHash bool
	refs                  map[string]storepath.Path
	sigs                  map[string]signing.Signature
}

// set reads one line into ni; its errors start with the key. Unknown
// keys are ignored, as Nix does.
func (f *fields) set(ni *NarInfo, storeDir storepath.Dir, name, value string) error {
	switch name {
	case "StorePath":
		// Nix canonicalises the path before checking its directory.
		if !path.IsAbs(value) {
			return fmt.Errorf("StorePath %q is not absolute", value)
		}
		p, err := storeDir.Parse(path.Clean(value))
		if err != nil {
			return fmt.Errorf("%s: %v", name, err)
		}
		ni.StorePath, f.havePath = p, true
	case "URL":
		ni.URL = value
	case "Compression":
		ni.Compression = value
	case "FileHash":
		h, err := storepath.ParseHash(value)
		if err != nil {
			return fmt.Errorf("%s: %v", name, err)
		}
		ni.FileHash = h
	case "FileSize":
		n, err := parseSize(value)
		if err != nil {
			return fmt.Errorf("FileSize %q is not a number", value)
		}
		ni.FileSize = n
	case "NarHash":
		h, err := storepath.ParseHash(value)
		if err != nil {
			return fmt.Errorf("%s: %v", name, err)
		}
		if h.Algo != storepath.SHA256 {
			return fmt.Errorf("NarHash is %s, not sha256", h.Algo)
		}
		ni.NarHash, f.haveNarHash = h, true
	case "NarSize":
		n, err := parseSize(value)
		if err != nil {
			return fmt.Errorf("NarSize %q is not a number", value)
		}
		ni.NarSize = n
	case "References":
		if len(f.refs) > 0 {
			return errors.New("second References line")
		}
		if err := f.addReferences(storeDir, value); err != nil {
			return fmt.Errorf("%s: %v", name, err)
		}
	case "Deriver":
		if value != "unknown-deriver" {
			p, err := storeDir.Base(value)
			if err != nil {
				return fmt.Errorf("%s: %v", name, err)
			}
			ni.Deriver = p
		}
	case "System":
		ni.System = value
	case "Sig":
		sig, err := signing.ParseSignature(value)
		if err != nil {
			return fmt.Errorf("%s: %v", name, err)
		}
		f.sigs[sig.String()] = sig
	case "CA":
		if ni.CA != "" {
			return errors.New("second CA line")
		}
		if value != "" {
			ca, err := parseCA(value)
			if err != nil {
				return fmt.Errorf("%s: %v", name, err)
			}
			ni.CA = ca.String()
		}
	}
	return nil
}

// addReferences adds the base names, separated by spaces, of a
// References line.
func (f *fields) addReferences(storeDir storepath.Dir, value string) error {
	for r := range strings.SplitSeq(value, " ") {
		if r == "" {
			continue
		}
		p, err := storeDir.Base(r)
		if err != nil {
			return err
		}
		f.refs[r] = p
	}
	return nil
}

// complete checks that the required fields came and completes ni:
// Nix's default compression, references and signatures sorted.
func (f *fields) complete(ni *NarInfo) (*NarInfo, error) {
	if ni.Compression == "" {
		ni.Compression = "bzip2"
	}
	switch {
	case !f.havePath:
		return nil, fmt.Errorf("parse narinfo: no StorePath: %w", ErrCorrupt)
	case !f.haveNarHash:
		return nil, fmt.Errorf("parse narinfo: no NarHash: %w", ErrCorrupt)
	case ni.URL == "":
		return nil, fmt.Errorf("parse narinfo: no URL: %w", ErrCorrupt)
	case ni.NarSize == 0:
		return nil, fmt.Errorf("parse narinfo: NarSize missing or 0: %w", ErrCorrupt)
	}
	for _, k := range slices.Sorted(maps.Keys(f.refs)) {
		ni.References = append(ni.References, f.refs[k])
	}
	for _, k := range slices.Sorted(maps.Keys(f.sigs)) {
		ni.Sigs = append(ni.Sigs, f.sigs[k])
	}
	return ni, nil
}

// parseSize parses a decimal uint64 as Nix's string2Int does: an
// optional '+', then digits.
func parseSize(s string) (uint64, error) {
	return strconv.ParseUint(strings.TrimPrefix(s, "+"), 10, 64)
}

// Validate checks what MarshalText needs to write a narinfo that Nix
// reads back as the same NarInfo: required fields present, paths in one
// store dir, and no value that could break out of its line.
func (ni *NarInfo) Validate() error {
	dir := ni.StorePath.Dir
	if _, err := storepath.ParseDir(string(dir)); err != nil {
		return fmt.Errorf("validate narinfo: %w", err)
	}
	if _, err := dir.Parse(ni.StorePath.String()); err != nil {
		return fmt.Errorf("validate narinfo: StorePath: %w", err)
	}
	name := ni.StorePath.String()
	switch {
	case ni.URL == "":
		return fmt.Errorf("validate narinfo %s: no URL: %w", name, ErrCorrupt)
	case ni.NarHash.Algo != storepath.SHA256 || len(ni.NarHash.Digest) != storepath.SHA256.Size():
		return fmt.Errorf("validate narinfo %s: NarHash must be sha256: %w", name, ErrCorrupt)
	case ni.NarSize == 0:
		return fmt.Errorf("validate narinfo %s: NarSize is 0: %w", name, ErrCorrupt)
	case !ni.FileHash.IsZero() && len(ni.FileHash.Digest) != ni.FileHash.Algo.Size():
		return fmt.Errorf("validate narinfo %s: FileHash has the wrong length: %w", name, ErrCorrupt)
	}
	for _, v := range []string{ni.URL, ni.Compression, ni.System, ni.CA} {
		if strings.ContainsAny(v, "\n") {
			return fmt.Errorf("validate narinfo %s: value %q has a newline: %w", name, v, ErrCorrupt)
		}
	}
	if ni.CA != "" {
		if _, err := parseCA(ni.CA); err != nil {
			return fmt.Errorf("validate narinfo %s: CA: %w: %w", name, ErrCorrupt, err)
		}
	}
	paths := ni.References
	if ni.Deriver != (storepath.Path{}) {
		paths = append(slices.Clip(paths), ni.Deriver)
	}
	for _, p := range paths {
		if p.Dir != dir {
			return fmt.Errorf("validate narinfo %s: %s is not in %s: %w", name, p, dir, ErrCorrupt)
		}
		if _, err := dir.Base(p.Base()); err != nil {
			return fmt.Errorf("validate narinfo %s: %w", name, err)
		}
	}
	for _, s := range ni.Sigs {
		if _, err := signing.ParseSignature(s.String()); err != nil || strings.ContainsAny(s.KeyName, "\n") {
			return fmt.Errorf("validate narinfo %s: Sig %q: %w", name, s, ErrCorrupt)
		}
	}
	return nil
}

// MarshalText validates ni and writes it as Nix does.
func (ni *NarInfo) MarshalText() ([]byte, error) {
	if err := ni.Validate(); err != nil {
		return nil, err
	}
	return []byte(ni.String()), nil
}

// WriteTo validates ni and writes it as Nix does.
func (ni *NarInfo) WriteTo(w io.Writer) (int64, error) {
	b, err := ni.MarshalText()
	if err != nil {
		return 0, err
	}
	n, err := w.Write(b)
	return int64(n), err
}

// String renders ni exactly as Nix's NarInfo::to_string, without
// validating it: references and signatures sorted and deduplicated,
// hashes in nix32. It omits FileHash when zero (Nix would abort), and
// then FileSize too unless it is set.
func (ni *NarInfo) String() string {
	var b bytes.Buffer
	line := func(k, v string) { b.WriteString(k + ": " + v + "\n") }
	line("StorePath", ni.StorePath.String())
	line("URL", ni.URL)
	compression := ni.Compression
	if compression == "" {
		compression = "bzip2"
	}
	line("Compression", compression)
	if !ni.FileHash.IsZero() {
		line("FileHash", ni.FileHash.String())
	}
	if !ni.FileHash.IsZero() || ni.FileSize != 0 {
		line("FileSize", strconv.FormatUint(ni.FileSize, 10))
	}
	line("NarHash", ni.NarHash.String())
	line("NarSize", strconv.FormatUint(ni.NarSize, 10))
	refs := make([]string, len(ni.References))
	for i, r := range ni.References {
		refs[i] = r.Base()
	}
	line("References", strings.Join(sortedUnique(refs), " "))
	if ni.Deriver != (storepath.Path{}) {
		line("Deriver", ni.Deriver.Base())
	}
	if ni.System != "" {
		line("System", ni.System)
	}
	sigs := make([]string, len(ni.Sigs))
	for i, s := range ni.Sigs {
		sigs[i] = s.String()
	}
	for _, s := range sortedUnique(sigs) {
		line("Sig", s)
	}
	if ni.CA != "" {
		line("CA", ni.CA)
	}
	return b.String()
}

func sortedUnique(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}

// Fingerprint is the message Nix signs:
// "1;STOREPATH;sha256:NIX32;NARSIZE;REF1,REF2" with full reference paths,
// sorted. It is meaningful only for a valid NarInfo.
func (ni *NarInfo) Fingerprint() string {
	refs := make([]string, len(ni.References))
	for i, r := range ni.References {
		refs[i] = r.String()
	}
	return "1;" + ni.StorePath.String() + ";" + ni.NarHash.String() + ";" +
		strconv.FormatUint(ni.NarSize, 10) + ";" + strings.Join(sortedUnique(refs), ",")
}

// Sign adds sk's signature, replacing any earlier one by a key of the
// same name.
func (ni *NarInfo) Sign(sk signing.SecretKey) {
	// A new slice, so that copies of ni sharing the old one stay intact.
	sigs := make([]signing.Signature, 0, len(ni.Sigs)+1)
	for _, s := range ni.Sigs {
		if s.KeyName != sk.Name {
			sigs = append(sigs, s)
		}
	}
	ni.Sigs = append(sigs, sk.Sign([]byte(ni.Fingerprint())))
}

// Verify reports whether a key in trusted signed ni. It does not look at
// CA: see IsContentAddressed for paths Nix accepts unsigned.
func (ni *NarInfo) Verify(trusted *signing.Keyring) bool {
	_, ok := ni.Signer(trusted)
	return ok
}

// Signer returns the key in trusted that signed ni, if one did.
func (ni *NarInfo) Signer(trusted *signing.Keyring) (signing.PublicKey, bool) {
	if ni.NarSize == 0 || ni.NarHash.Algo != storepath.SHA256 {
		return signing.PublicKey{}, false // Nix cannot fingerprint these either
	}
	return trusted.Verify([]byte(ni.Fingerprint()), ni.Sigs)
}
