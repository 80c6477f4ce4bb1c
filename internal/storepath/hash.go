package storepath

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strings"

	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// Algo is a hash algorithm Nix knows.
type Algo uint8

// The algorithms Nix accepts for fixed-output derivations and narinfos.
const (
	MD5 Algo = iota + 1
	SHA1
	SHA256
	SHA512
)

// Algos lists every Algo, in Nix's order.
var Algos = [...]Algo{MD5, SHA1, SHA256, SHA512}

// ErrBadHash reports a hash string Nix would reject.
var ErrBadHash = errors.New("invalid hash")

// ParseAlgo parses "md5", "sha1", "sha256" or "sha512".
func ParseAlgo(s string) (Algo, error) {
	for _, a := range Algos {
		if a.String() == s {
			return a, nil
		}
	}
	return 0, fmt.Errorf("parse hash algorithm %q: %w", s, ErrBadHash)
}

func (a Algo) String() string {
	switch a {
	case MD5:
		return "md5"
	case SHA1:
		return "sha1"
	case SHA256:
		return "sha256"
	case SHA512:
		return "sha512"
	}
	return fmt.Sprintf("Algo(%d)", uint8(a))
}

// Size is the digest length in bytes.
func (a Algo) Size() int {
	switch a {
	case MD5:
		return md5.Size
	case SHA1:
		return sha1.Size
	case SHA256:
		return sha256.Size
	case SHA512:
		return sha512.Size
	}
	return 0
}

// New returns a fresh hasher for a.
func (a Algo) New() hash.Hash {
	switch a {
	case MD5:
		return md5.New()
	case SHA1:
		return sha1.New()
	case SHA256:
		return sha256.New()
	case SHA512:
		return sha512.New()
	}
	panic("storepath: New on invalid Algo " + a.String())
}

// Hash is a digest with its algorithm. The zero Hash is invalid.
type Hash struct {
	Algo   Algo
	Digest []byte
}

// NewHash checks that digest has the length algo produces.
func NewHash(algo Algo, digest []byte) (Hash, error) {
	if algo.Size() == 0 || len(digest) != algo.Size() {
		return Hash{}, fmt.Errorf("new %s hash of %d bytes: %w", algo, len(digest), ErrBadHash)
	}
	return Hash{Algo: algo, Digest: digest}, nil
}

// ParseHash parses any spelling Nix accepts: "algo:DIGEST" with DIGEST in
// hex, nix32 or base64, and SRI "algo-BASE64".
func ParseHash(s string) (Hash, error) {
	if algo, rest, ok := strings.Cut(s, ":"); ok {
		a, err := ParseAlgo(algo)
		if err != nil {
			return Hash{}, fmt.Errorf("parse hash %q: %w", s, ErrBadHash)
		}
		return ParseDigest(a, rest)
	}
	if algo, rest, ok := strings.Cut(s, "-"); ok {
		a, err := ParseAlgo(algo)
		if err != nil {
			return Hash{}, fmt.Errorf("parse hash %q: %w", s, ErrBadHash)
		}
		d, err := base64.StdEncoding.Strict().DecodeString(rest)
		if err != nil || len(d) != a.Size() {
			return Hash{}, fmt.Errorf("parse SRI hash %q: %w", s, ErrBadHash)
		}
		return Hash{Algo: a, Digest: d}, nil
	}
	return Hash{}, fmt.Errorf("parse hash %q: no algorithm: %w", s, ErrBadHash)
}

// ParseDigest parses a bare digest of a known algorithm, telling hex, nix32
// and base64 apart by length as Nix does.
func ParseDigest(algo Algo, s string) (Hash, error) {
	size := algo.Size()
	if size == 0 {
		return Hash{}, fmt.Errorf("parse %s digest: %w", algo, ErrBadHash)
	}
	var (
		d   []byte
		err error
	)
	switch len(s) {
	case hex.EncodedLen(size):
		d, err = hex.DecodeString(s)
	case nixbase32.EncodedLen(size):
		d, err = nixbase32.DecodeString(s)
	case base64.StdEncoding.EncodedLen(size):
		d, err = base64.StdEncoding.Strict().DecodeString(s)
	default:
		err = errors.New("wrong length")
	}
	if err != nil || len(d) != size {
		return Hash{}, fmt.Errorf("parse %s digest %q: %w", algo, s, ErrBadHash)
	}
	return Hash{Algo: algo, Digest: d}, nil
}

// Hex is the lower-case base16 digest.
func (h Hash) Hex() string { return hex.EncodeToString(h.Digest) }

// Nix32 is the digest in Nix's base32.
func (h Hash) Nix32() string { return nixbase32.EncodeToString(h.Digest) }

// Base64 is the padded standard base64 digest.
func (h Hash) Base64() string { return base64.StdEncoding.EncodeToString(h.Digest) }

// String is "algo:nix32", the form Nix writes in narinfos.
func (h Hash) String() string { return h.Algo.String() + ":" + h.Nix32() }

// SRI is "algo-base64".
func (h Hash) SRI() string { return h.Algo.String() + "-" + h.Base64() }

// Equal reports whether h and o are the same algorithm and digest.
func (h Hash) Equal(o Hash) bool {
	return h.Algo == o.Algo && string(h.Digest) == string(o.Digest)
}

// IsZero reports whether h is unset.
func (h Hash) IsZero() bool { return h.Algo == 0 }
