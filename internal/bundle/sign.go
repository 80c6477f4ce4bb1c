package bundle

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/signing"
)

// MaxSigSize caps manifest.json.sig: a line is under 200 bytes.
const MaxSigSize = 1 << 20

// Sign returns the content of manifest.json.sig for data: one
// "KEYNAME:BASE64" line per key, each an ed25519 signature over data's
// exact bytes. With no keys it returns nil (an unsigned bundle has no
// .sig file).
func Sign(data []byte, keys ...signing.SecretKey) []byte {
	var b bytes.Buffer
	for _, k := range keys {
		b.WriteString(k.Sign(data).String())
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// ParseSigs parses manifest.json.sig: one signature per line, blank
// lines ignored. Errors wrap ErrCorrupt.
func ParseSigs(sig []byte) ([]signing.Signature, error) {
	if len(sig) > MaxSigSize {
		return nil, fmt.Errorf("parse %s: %w: larger than %d bytes", SigName, ErrCorrupt, MaxSigSize)
	}
	var sigs []signing.Signature
	for i, line := range strings.Split(string(sig), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		s, err := signing.ParseSignature(line)
		if err != nil {
			return nil, fmt.Errorf("parse %s line %d: %w: %w", SigName, i+1, ErrCorrupt, err)
		}
		sigs = append(sigs, s)
	}
	return sigs, nil
}

// VerifySignatures checks manifest.json's bytes data against the content
// of manifest.json.sig and returns the trusted key that signed it. A
// missing or empty sig gives ErrUnsigned; signatures of which none
// verifies with a key in kr give ErrUntrusted, naming the key names
// found, or ErrBadSignature when kr trusts each of them by name; a
// malformed line gives ErrCorrupt.
func VerifySignatures(data, sig []byte, kr *signing.Keyring) (signing.PublicKey, error) {
	sigs, err := ParseSigs(sig)
	if err != nil {
		return signing.PublicKey{}, err
	}
	if len(sigs) == 0 {
		return signing.PublicKey{}, fmt.Errorf("verify %s: %w", ManifestName, ErrUnsigned)
	}
	if kr != nil {
		if pk, ok := kr.Verify(data, sigs); ok {
			return pk, nil
		}
	}
	return signing.PublicKey{}, fmt.Errorf("verify %s: %w", ManifestName, untrustedSigs(kr, sigs, ManifestName))
}

// untrustedSigs says why none of sigs, the signatures of what, verifies
// with kr: their signers kr does not trust (ErrUntrusted), or, when it
// trusts each of them by name, that their signatures do not match
// (ErrBadSignature): a wrong --public-key is the cause only of the first.
func untrustedSigs(kr *signing.Keyring, sigs []signing.Signature, what string) error {
	var unknown, bad []string
	for _, s := range sigs {
		if kr.Trusts(s.KeyName) {
			bad = append(bad, s.KeyName)
		} else {
			unknown = append(unknown, s.KeyName)
		}
	}
	notTrusted := "not a trusted key"
	if len(unknown) > 1 {
		notTrusted = "none of them a trusted key"
	}
	const changed = "it or its signature was changed after it was signed (damaged, or tampered with), or another key of that name signed it"
	switch {
	case len(unknown) == 0:
		return fmt.Errorf("%w: the signature by %s does not match %s: %s", ErrBadSignature, strings.Join(bad, ", "), what, changed)
	case len(bad) == 0:
		return untrusted(fmt.Sprintf("signed by %s, %s", strings.Join(unknown, ", "), notTrusted))
	}
	return untrusted(fmt.Sprintf("signed by %s, %s, and by %s, whose signature does not match %s: %s", strings.Join(unknown, ", "), notTrusted, strings.Join(bad, ", "), what, changed))
}

// untrusted is ErrUntrusted in other words: it names the signers, and is
// not prefixed with ErrUntrusted's text, which would say it twice.
type untrusted string

func (e untrusted) Error() string      { return string(e) }
func (untrusted) Is(target error) bool { return target == ErrUntrusted }
