// Package signing handles Nix's ed25519 binary-cache keys and signatures:
// the "NAME:BASE64" key files of nix-store --generate-binary-cache-key and
// the "NAME:BASE64" values of narinfo Sig lines.
//
// It does not use go-nix's pkg/narinfo/signature: its VerifyFirst gives up
// after the first signature whose key name is trusted even when a later one
// would verify, its decoder demands padding that Nix does not, its secret
// key hides name and bytes, and it reports no file names. The format is
// small enough to implement here, following Nix 2.8's libstore/crypto.cc.
package signing

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Sentinel errors, wrapped by every parse error.
var (
	ErrBadKey       = errors.New("invalid key")
	ErrBadSignature = errors.New("invalid signature")
)

// SecretKey is a named ed25519 signing key.
type SecretKey struct {
	Name string
	Key  ed25519.PrivateKey
}

// PublicKey is a named ed25519 verification key.
type PublicKey struct {
	Name string
	Key  ed25519.PublicKey
}

// Signature is one narinfo signature: the name of the key that made it
// and the 64-byte ed25519 signature.
type Signature struct {
	KeyName string
	Sig     []byte
}

// Generate makes a fresh key pair named name, as
// nix-store --generate-binary-cache-key does.
func Generate(name string) (SecretKey, PublicKey, error) {
	if err := validateName(name); err != nil {
		return SecretKey{}, PublicKey{}, fmt.Errorf("generate key %q: %w", name, err)
	}
	pub, sec, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return SecretKey{}, PublicKey{}, fmt.Errorf("generate key %q: %w", name, err)
	}
	return SecretKey{Name: name, Key: sec}, PublicKey{Name: name, Key: pub}, nil
}

// validateName rejects names that cannot survive a key file, a
// trusted-public-keys list (space-separated) or a narinfo line.
func validateName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty name", ErrBadKey)
	}
	if i := strings.IndexFunc(name, func(r rune) bool { return r == ':' || r <= ' ' || r == 0x7f }); i >= 0 {
		return fmt.Errorf("%w: name has a colon, space or control character", ErrBadKey)
	}
	return nil
}

// ParseSecretKey parses the content of a secret key file. Surrounding
// whitespace, such as a trailing newline, is ignored.
func ParseSecretKey(s string) (SecretKey, error) {
	name, key, err := split(strings.TrimSpace(s), ed25519.PrivateKeySize)
	if err != nil {
		return SecretKey{}, fmt.Errorf("parse secret key: %w: %w", ErrBadKey, err)
	}
	return SecretKey{Name: name, Key: key}, nil
}

// ParsePublicKey parses a public key as found in a key file or a
// trusted-public-keys entry. Surrounding whitespace is ignored.
func ParsePublicKey(s string) (PublicKey, error) {
	name, key, err := split(strings.TrimSpace(s), ed25519.PublicKeySize)
	if err != nil {
		return PublicKey{}, fmt.Errorf("parse public key %q: %w: %w", s, ErrBadKey, err)
	}
	return PublicKey{Name: name, Key: key}, nil
}

// ParseSignature parses a narinfo Sig value.
func ParseSignature(s string) (Signature, error) {
	name, sig, err := split(s, ed25519.SignatureSize)
	if err != nil {
		return Signature{}, fmt.Errorf("parse signature %q: %w: %w", s, ErrBadSignature, err)
	}
	return Signature{KeyName: name, Sig: sig}, nil
}

// LoadSecretKey reads and parses a secret key file.
func LoadSecretKey(path string) (SecretKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return SecretKey{}, fmt.Errorf("load secret key: %w", err)
	}
	sk, err := ParseSecretKey(string(b))
	if err != nil {
		return SecretKey{}, fmt.Errorf("load secret key %s: %w", path, err)
	}
	return sk, nil
}

// LoadPublicKey reads and parses a public key file.
func LoadPublicKey(path string) (PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return PublicKey{}, fmt.Errorf("load public key: %w", err)
	}
	pk, err := ParsePublicKey(string(b))
	if err != nil {
		return PublicKey{}, fmt.Errorf("load public key %s: %w", path, err)
	}
	return pk, nil
}

// split parses "NAME:BASE64" into a non-empty name and size bytes. Like
// Nix's base64Decode, it stops at the first '=' and skips newlines, so
// missing padding is accepted; other stray characters are not.
func split(s string, size int) (string, []byte, error) {
	name, data, ok := strings.Cut(s, ":")
	if !ok || name == "" || data == "" {
		return "", nil, errors.New("want NAME:BASE64")
	}
	data, _, _ = strings.Cut(data, "=")
	b, err := base64.RawStdEncoding.DecodeString(strings.ReplaceAll(data, "\n", ""))
	if err != nil {
		return "", nil, fmt.Errorf("bad base64: %w", err)
	}
	if len(b) != size {
		return "", nil, fmt.Errorf("got %d bytes, want %d", len(b), size)
	}
	return name, b, nil
}

func encode(name string, b []byte) string {
	return name + ":" + base64.StdEncoding.EncodeToString(b)
}

// String is the key file content, without a trailing newline.
func (sk SecretKey) String() string { return encode(sk.Name, sk.Key) }

// String is the key file content, without a trailing newline.
func (pk PublicKey) String() string { return encode(pk.Name, pk.Key) }

// String is the narinfo Sig value.
func (s Signature) String() string { return encode(s.KeyName, s.Sig) }

// Public returns the public half of sk, with the same name.
func (sk SecretKey) Public() PublicKey {
	return PublicKey{Name: sk.Name, Key: sk.Key.Public().(ed25519.PublicKey)}
}

// Sign signs msg. ed25519 is deterministic: the same key and message give
// the same signature, as in Nix.
func (sk SecretKey) Sign(msg []byte) Signature {
	return Signature{KeyName: sk.Name, Sig: ed25519.Sign(sk.Key, msg)}
}

// Verify reports whether sig is pk's signature of msg. A signature by
// another key name never verifies.
func (pk PublicKey) Verify(msg []byte, sig Signature) bool {
	return sig.KeyName == pk.Name && len(pk.Key) == ed25519.PublicKeySize &&
		len(sig.Sig) == ed25519.SignatureSize && ed25519.Verify(pk.Key, msg, sig.Sig)
}

// Keyring is a set of trusted public keys, one per name as in Nix's
// trusted-public-keys. The zero Keyring trusts nothing.
type Keyring struct {
	keys map[string]PublicKey
}

// NewKeyring trusts keys. When two keys share a name the first wins, as
// in Nix.
func NewKeyring(keys ...PublicKey) *Keyring {
	kr := &Keyring{keys: make(map[string]PublicKey, len(keys))}
	for _, k := range keys {
		if _, dup := kr.keys[k.Name]; !dup {
			kr.keys[k.Name] = k
		}
	}
	return kr
}

// Verify reports the first trusted key that signed msg among sigs.
func (kr *Keyring) Verify(msg []byte, sigs []Signature) (PublicKey, bool) {
	if kr == nil {
		return PublicKey{}, false
	}
	for _, s := range sigs {
		if k, ok := kr.keys[s.KeyName]; ok && k.Verify(msg, s) {
			return k, true
		}
	}
	return PublicKey{}, false
}
