// Package storepath handles Nix store directories, store paths and the
// hashes that name them. No store directory is assumed: every path is
// parsed and made relative to a Dir the caller passes in.
package storepath

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// DefaultDir is the store directory Nix uses unless NIX_STORE_DIR says
// otherwise. Callers take it as a default, never as an assumption.
const DefaultDir Dir = "/nix/store"

// HashLen is the length of the nix32 hash part of a store path.
const HashLen = 32

// nameMax is Nix's limit on the name part of a store path.
const nameMax = 211

// ErrBadPath reports a string that is not a store path.
var ErrBadPath = errors.New("invalid store path")

// ErrWrongDir reports a bundle or cache of another store dir than the
// one it is used with.
var ErrWrongDir = errors.New("wrong store dir")

// Dir is a store directory such as "/nix/store": absolute, clean and
// without a trailing slash.
type Dir string

// ParseDir checks that s is a usable store directory.
func ParseDir(s string) (Dir, error) {
	if !path.IsAbs(s) || path.Clean(s) != s || s == "/" {
		return "", fmt.Errorf("parse store dir %q: must be a clean absolute path", s)
	}
	return Dir(s), nil
}

// Path is a store path: DIR/HASH-NAME.
type Path struct {
	Dir  Dir
	Hash string // 32 nix32 characters
	Name string
}

// Parse parses an absolute store path in d. A path below a store path
// (DIR/HASH-NAME/bin/x) is rejected: use ParseBelow for those.
func (d Dir) Parse(s string) (Path, error) {
	base, ok := strings.CutPrefix(s, string(d)+"/")
	if !ok {
		return Path{}, fmt.Errorf("parse store path %q: not in %s: %w", s, d, ErrBadPath)
	}
	hash, name, err := ParseBase(base)
	if err != nil {
		return Path{}, fmt.Errorf("parse store path %q: %w", s, err)
	}
	return Path{Dir: d, Hash: hash, Name: name}, nil
}

// ParseBelow parses s, which may point inside a store path, and returns
// the store path and the rest ("" or "/sub/path").
func (d Dir) ParseBelow(s string) (Path, string, error) {
	rel, ok := strings.CutPrefix(s, string(d)+"/")
	if !ok {
		return Path{}, "", fmt.Errorf("parse store path %q: not in %s: %w", s, d, ErrBadPath)
	}
	base, rest, _ := strings.Cut(rel, "/")
	p, err := d.Parse(string(d) + "/" + base)
	if rest != "" {
		rest = "/" + rest
	}
	return p, rest, err
}

// Base parses a store path's base name and returns it in d.
func (d Dir) Base(base string) (Path, error) {
	hash, name, err := ParseBase(base)
	if err != nil {
		return Path{}, fmt.Errorf("parse store path base %q: %w", base, err)
	}
	return Path{Dir: d, Hash: hash, Name: name}, nil
}

// ParseBase splits "HASH-NAME" and checks both parts as Nix does.
func ParseBase(base string) (hash, name string, err error) {
	if len(base) < HashLen+2 || base[HashLen] != '-' {
		return "", "", fmt.Errorf("%w: want HASH-NAME", ErrBadPath)
	}
	hash, name = base[:HashLen], base[HashLen+1:]
	if !IsHashPart(hash) {
		return "", "", fmt.Errorf("%w: hash part %q is not nix32", ErrBadPath, hash)
	}
	if err := ValidateName(name); err != nil {
		return "", "", err
	}
	return hash, name, nil
}

// IsHashPart reports whether s is a store path's hash part: HashLen nix32
// characters. It is the one check of hash parts, made on every path parsed,
// narinfo named and narinfo request served, so it looks bytes up in a
// table.
func IsHashPart(s string) bool {
	if len(s) != HashLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isNix32[s[i]] {
			return false
		}
	}
	return true
}

// IsNix32 reports whether c is in Nix's base32 alphabet, as every byte of
// a hash part is.
func IsNix32(c byte) bool { return isNix32[c] }

var isNix32 = func() (t [256]bool) {
	for _, c := range []byte(nix32Alphabet) {
		t[c] = true
	}
	return t
}()

// nix32Alphabet is Nix's base32 alphabet: no e, o, u or t.
const nix32Alphabet = "0123456789abcdfghijklmnpqrsvwxyz"

// ValidateName checks a store path name: 1 to 211 characters from
// [A-Za-z0-9+-._?=], not starting with a dot.
func ValidateName(name string) error {
	if name == "" || len(name) > nameMax {
		return fmt.Errorf("%w: name must be 1 to %d characters", ErrBadPath, nameMax)
	}
	if name[0] == '.' {
		return fmt.Errorf("%w: name %q starts with a dot", ErrBadPath, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("+-._?=", c) >= 0:
		default:
			return fmt.Errorf("%w: name %q has invalid character %q", ErrBadPath, name, c)
		}
	}
	return nil
}

// String is the absolute path.
func (p Path) String() string { return string(p.Dir) + "/" + p.Base() }

// Base is "HASH-NAME".
func (p Path) Base() string { return p.Hash + "-" + p.Name }

// IsDerivation reports whether p names a .drv file.
func (p Path) IsDerivation() bool { return strings.HasSuffix(p.Name, ".drv") }

// Compare orders paths by their absolute string, as Nix sorts them. It
// builds no strings when the dirs and hash lengths match, as they do
// for parsed paths: pack and plan sort and search 100,000 of them.
func Compare(a, b Path) int {
	if a.Dir != b.Dir || len(a.Hash) != len(b.Hash) {
		return strings.Compare(a.String(), b.String())
	}
	if c := strings.Compare(a.Hash, b.Hash); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

// Make computes Nix's makeStorePath: the path of type typ (such as
// "source", "text:REFS" or "output:out") with inner hash h and name.
func (d Dir) Make(typ string, h Hash, name string) (Path, error) {
	if err := ValidateName(name); err != nil {
		return Path{}, fmt.Errorf("make store path %q: %w", name, err)
	}
	s := typ + ":" + h.Algo.String() + ":" + h.Hex() + ":" + string(d) + ":" + name
	sum := sha256.Sum256([]byte(s))
	return Path{Dir: d, Hash: nixbase32.EncodeToString(compress(sum[:], 20)), Name: name}, nil
}

// compress XORs b into size bytes, as Nix's compressHash does.
func compress(b []byte, size int) []byte {
	out := make([]byte, size)
	for i, c := range b {
		out[i%size] ^= c
	}
	return out
}

// Method is how a content-addressed path's hash covers its content.
type Method uint8

// Content-addressing methods.
const (
	Flat      Method = iota + 1 // the hash of the file itself
	Recursive                   // the hash of the path's NAR
)

// Prefix is the hash-mode prefix Nix puts before the algorithm: "" or "r:".
func (m Method) Prefix() string {
	if m == Recursive {
		return "r:"
	}
	return ""
}

// MakeFixedOutput computes the path of a fixed-output derivation's output
// or of a path added by hash, with no references.
func (d Dir) MakeFixedOutput(m Method, h Hash, name string) (Path, error) {
	if m == Recursive && h.Algo == SHA256 {
		return d.Make("source", h, name)
	}
	inner := sha256.Sum256([]byte("fixed:out:" + m.Prefix() + h.Algo.String() + ":" + h.Hex() + ":"))
	return d.Make("output:out", Hash{Algo: SHA256, Digest: inner[:]}, name)
}

// MakeText computes the path of a text file (such as a .drv) with the
// given sha256 of its contents and references.
func (d Dir) MakeText(h Hash, name string, refs []Path) (Path, error) {
	typ := "text"
	sorted := make([]string, len(refs))
	for i, r := range refs {
		sorted[i] = r.String()
	}
	slices.Sort(sorted)
	for _, r := range sorted {
		typ += ":" + r
	}
	return d.Make(typ, h, name)
}
