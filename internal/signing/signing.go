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
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Sentinel errors, wrapped by every parse error. No error of this package
// quotes a key: a secret key in an error would land in scrollback and CI
// logs.
var (
	ErrBadKey       = errors.New("invalid key")
	ErrBadSignature = errors.New("invalid signature")
	// ErrWrongKind, wrapped with ErrBadKey, reports a secret key given
	// where a public key belongs, or the reverse.
	ErrWrongKind = errors.New("wrong kind of key")
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
	name, key, err := parseKey(s, ed25519.PrivateKeySize)
	if err != nil {
		return SecretKey{}, fmt.Errorf("parse secret key: %w", err)
	}
	return SecretKey{Name: name, Key: key}, nil
}

// ParsePublicKey parses a public key as found in a key file or a
// trusted-public-keys entry. Surrounding whitespace is ignored.
func ParsePublicKey(s string) (PublicKey, error) {
	name, key, err := parseKey(s, ed25519.PublicKeySize)
	if err != nil {
		return PublicKey{}, fmt.Errorf("parse public key: %w", err)
	}
	return PublicKey{Name: name, Key: key}, nil
}

// wrongKindError is ErrWrongKind with what to do instead.
type wrongKindError struct{ msg string }

func (e wrongKindError) Error() string { return e.msg }

func (e wrongKindError) Is(target error) bool { return target == ErrBadKey || target == ErrWrongKind }

// parseKey parses a key of size bytes: NAME:BASE64 with surrounding
// whitespace. A key of the other kind gets a wrongKindError.
func parseKey(s string, size int) (string, []byte, error) {
	name, key, err := split(strings.TrimSpace(s))
	if err != nil {
		return "", nil, fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	if err := validateName(name); err != nil {
		return "", nil, err
	}
	switch {
	case len(key) == size && size == ed25519.PrivateKeySize && !bytes.Equal(ed25519.NewKeyFromSeed(key[:ed25519.SeedSize])[ed25519.SeedSize:], key[ed25519.SeedSize:]):
		// An ed25519 secret key is its seed and the public key made
		// from it; a signature has the same length, but no such halves.
		return "", nil, fmt.Errorf("%w: not a secret key: its second half is not the public key of its first (a signature, or a damaged key)", ErrBadKey)
	case len(key) == size:
		return name, key, nil
	case size == ed25519.PublicKeySize && len(key) == ed25519.PrivateKeySize:
		return "", nil, wrongKindError{"this is a secret key, not a public key: pass the public key (the .pub file)"}
	case size == ed25519.PrivateKeySize && len(key) == ed25519.PublicKeySize:
		return "", nil, wrongKindError{"this is a public key, not a secret key: pass the secret key file (not the .pub file)"}
	}
	return "", nil, fmt.Errorf("%w: %d bytes, want %d", ErrBadKey, len(key), size)
}

// ParseSignature parses a narinfo Sig value.
func ParseSignature(s string) (Signature, error) {
	name, sig, err := split(s)
	if err == nil && len(sig) != ed25519.SignatureSize {
		err = fmt.Errorf("%d bytes, want %d", len(sig), ed25519.SignatureSize)
	}
	if err != nil {
		return Signature{}, fmt.Errorf("parse signature %q: %w: %w", s, ErrBadSignature, err)
	}
	return Signature{KeyName: name, Sig: sig}, nil
}

// LoadSecretKey reads and parses a secret key file.
func LoadSecretKey(path string) (SecretKey, error) {
	sk, err := readKey(path, false, ed25519.PrivateKeySize, secretKey)
	if err != nil {
		return SecretKey{}, fmt.Errorf("load secret key: %w", err)
	}
	return sk, nil
}

// LoadPublicKey reads and parses a public key file.
func LoadPublicKey(path string) (PublicKey, error) {
	pk, err := readKey(path, false, ed25519.PublicKeySize, publicKey)
	if err != nil {
		return PublicKey{}, fmt.Errorf("load public key: %w", err)
	}
	return pk, nil
}

// ReadSecretKey reads the secret key a command-line argument gives: the
// key's text, NAME:BASE64, or else a key file's name. Its errors name a
// file, but never quote an argument that may be key material; the caller
// says which argument it was.
func ReadSecretKey(arg string) (SecretKey, error) {
	return readKey(arg, true, ed25519.PrivateKeySize, secretKey)
}

// ReadPublicKey reads the public key a command-line argument gives, as
// ReadSecretKey does.
func ReadPublicKey(arg string) (PublicKey, error) {
	return readKey(arg, true, ed25519.PublicKeySize, publicKey)
}

func secretKey(name string, key []byte) SecretKey { return SecretKey{name, key} }
func publicKey(name string, key []byte) PublicKey { return PublicKey{name, key} }

// readKey reads a key of size bytes from the file arg, or, if text is
// set, from arg itself when it has a key's shape. Its errors start with
// what they are about: the file's name, the key's name, or a note that
// arg is not shown.
func readKey[K any](arg string, text bool, size int, mk func(string, []byte) K) (K, error) {
	var zero K
	if text && isKeyText(arg) {
		name, key, err := parseKey(arg, size)
		if err != nil {
			name, _, _ = strings.Cut(strings.TrimSpace(arg), ":")
			if mayBeKeyMaterial(name) {
				name = "NAME"
			}
			return zero, fmt.Errorf("%s:…: %w", name, err)
		}
		return mk(name, key), nil
	}
	b, err := os.ReadFile(arg)
	if err != nil {
		var pe *fs.PathError
		if !errors.As(err, &pe) {
			return zero, err
		}
		if text && !safeToQuote(arg) {
			return zero, fmt.Errorf("(not shown, in case it is key material): neither a key NAME:BASE64 nor a file: %w", pe.Err)
		}
		return zero, fmt.Errorf("%s: %w", arg, pe.Err)
	}
	name, key, err := parseKey(string(b), size)
	if err != nil {
		return zero, fmt.Errorf("%s: %w", arg, err)
	}
	return mk(name, key), nil
}

// isKeyText reports whether s has the shape of a key's text, NAME:BASE64
// with at least a public key's worth of base64, rather than a file name.
func isKeyText(s string) bool {
	name, data, ok := strings.Cut(strings.TrimSpace(s), ":")
	return ok && name != "" && !strings.ContainsAny(name, "/ ") && len(strings.TrimRight(data, "=")) >= 40 && isBase64(data)
}

// safeToQuote reports whether arg, which names no file, may be quoted:
// it holds nothing like a key, or it is a path in an existing directory
// (a missing file in a temp dir with a long random name, say).
func safeToQuote(arg string) bool {
	if !mayBeKeyMaterial(arg) {
		return true
	}
	d := filepath.Dir(arg)
	if d == "." || d == "/" {
		return false
	}
	st, err := os.Stat(d)
	return err == nil && st.IsDir()
}

// mayBeKeyMaterial reports whether s holds a run of base64 letters and
// digits long enough to be part of a key, and so must not be quoted. Path
// components rarely are; a key's base64 almost always is.
func mayBeKeyMaterial(s string) bool {
	run := 0
	for _, r := range s {
		if 'A' <= r && r <= 'Z' || 'a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '+' {
			if run++; run >= 16 {
				return true
			}
		} else {
			run = 0
		}
	}
	return false
}

func isBase64(s string) bool {
	s = strings.TrimRight(s, "=\n")
	return strings.IndexFunc(s, func(r rune) bool {
		return !('A' <= r && r <= 'Z' || 'a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '+' || r == '/')
	}) < 0
}

// split parses "NAME:BASE64" into a non-empty name and its bytes. Like
// Nix's base64Decode, it stops at the first '=' and skips newlines, so
// missing padding is accepted; other stray characters are not. Its errors
// never quote s.
func split(s string) (string, []byte, error) {
	name, data, ok := strings.Cut(s, ":")
	if !ok || name == "" || data == "" {
		return "", nil, errors.New("want NAME:BASE64")
	}
	data, _, _ = strings.Cut(data, "=")
	b, err := base64.RawStdEncoding.DecodeString(strings.ReplaceAll(data, "\n", ""))
	if err != nil {
		return "", nil, fmt.Errorf("bad base64: %w", err)
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

// Trusts reports whether kr has a key named name.
func (kr *Keyring) Trusts(name string) bool {
	if kr == nil {
		return false
	}
	_, ok := kr.keys[name]
	return ok
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
