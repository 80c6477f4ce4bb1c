package signing_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/signing"
)

// A key pair from nix-store --generate-binary-cache-key (Nix 2.8), kept in
// testdata exactly as Nix wrote it.
func nixKeys(t testing.TB) (sec, pub string) {
	t.Helper()
	s, err := os.ReadFile("testdata/nix-test-1.sec")
	if err != nil {
		t.Fatal(err)
	}
	p, err := os.ReadFile("testdata/nix-test-1.pub")
	if err != nil {
		t.Fatal(err)
	}
	return string(s), string(p)
}

func TestParseRoundTrip(t *testing.T) {
	sec, pub := nixKeys(t)
	sk, err := signing.ParseSecretKey(sec)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := signing.ParsePublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if sk.String() != sec || pk.String() != pub {
		t.Errorf("String() does not reproduce the key files:\n%s\n%s", sk, pk)
	}
	if diff := cmp.Diff(pk, sk.Public()); diff != "" {
		t.Errorf("Public() differs from Nix's public key (-nix +ours):\n%s", diff)
	}
	// Tolerated like Nix: a trailing newline and missing padding.
	for _, s := range []string{sec + "\n", "  " + sec + "\r\n", strings.TrimRight(sec, "=")} {
		got, err := signing.ParseSecretKey(s)
		if err != nil {
			t.Errorf("ParseSecretKey(%q): %v", s, err)
			continue
		}
		if got.String() != sec {
			t.Errorf("ParseSecretKey(%q) = %s, want %s", s, got, sec)
		}
	}
}

func TestParseErrors(t *testing.T) {
	sec, pub := nixKeys(t)
	_, secData, _ := strings.Cut(sec, ":")
	_, pubData, _ := strings.Cut(pub, ":")
	tests := []struct {
		name  string
		parse func(string) error
		in    string
		want  error
	}{
		{"secret empty", parseSecret, "", signing.ErrBadKey},
		{"secret no colon", parseSecret, secData, signing.ErrBadKey},
		{"secret empty name", parseSecret, ":" + secData, signing.ErrBadKey},
		{"secret empty data", parseSecret, "k:", signing.ErrBadKey},
		{"secret is a public key", parseSecret, pub, signing.ErrBadKey},
		{"secret bad base64", parseSecret, "k:*" + secData[1:], signing.ErrBadKey},
		{"public is a secret key", parsePublic, sec, signing.ErrBadKey},
		{"public too short", parsePublic, "k:" + pubData[:40], signing.ErrBadKey},
		{"public empty name", parsePublic, ":" + pubData, signing.ErrBadKey},
		{"signature wrong length", parseSig, pub, signing.ErrBadSignature},
		{"signature no name", parseSig, ":" + secData, signing.ErrBadSignature},
		{"signature space", parseSig, "k: " + secData, signing.ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.parse(tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got error %v, want %v", err, tt.want)
			}
		})
	}
}

// TestSignatureIsNoSecretKey: a signature is as long as a secret key,
// but it is refused as one, and so is a key whose halves do not match,
// without quoting either.
func TestSignatureIsNoSecretKey(t *testing.T) {
	sec, _ := nixKeys(t)
	sk, err := signing.ParseSecretKey(sec)
	if err != nil {
		t.Fatal(err)
	}
	damaged := sk
	damaged.Key = bytes.Clone(sk.Key)
	damaged.Key[40] ^= 1
	for name, in := range map[string]string{"signature": sk.Sign([]byte("fingerprint")).String(), "damaged key": damaged.String()} {
		_, err := signing.ParseSecretKey(in)
		_, b64, _ := strings.Cut(in, ":")
		if !errors.Is(err, signing.ErrBadKey) || !strings.Contains(err.Error(), "not a secret key") || strings.Contains(err.Error(), b64[:16]) {
			t.Errorf("ParseSecretKey(a %s) = %v, want ErrBadKey, saying it is not a secret key without quoting it", name, err)
		}
	}
}

func parseSecret(s string) error { _, err := signing.ParseSecretKey(s); return err }
func parsePublic(s string) error { _, err := signing.ParsePublicKey(s); return err }
func parseSig(s string) error    { _, err := signing.ParseSignature(s); return err }

func TestGenerateRejectsBadNames(t *testing.T) {
	for _, name := range []string{"", "a:b", "a b", "a\nb", "tab\t"} {
		if _, _, err := signing.Generate(name); !errors.Is(err, signing.ErrBadKey) {
			t.Errorf("Generate(%q): got %v, want ErrBadKey", name, err)
		}
	}
}

func TestSignVerify(t *testing.T) {
	sk, pk, err := signing.Generate("cache.example.org-1")
	if err != nil {
		t.Fatal(err)
	}
	other, otherPub, err := signing.Generate("cache.example.org-1")
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("1;/nix/store/x;sha256:y;1;")
	sig := sk.Sign(msg)
	if again := sk.Sign(msg); !bytes.Equal(again.Sig, sig.Sig) {
		t.Error("Sign is not deterministic")
	}
	parsed, err := signing.ParseSignature(sig.String())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sig, parsed); diff != "" {
		t.Errorf("signature round trip (-want +got):\n%s", diff)
	}
	renamed := signing.PublicKey{Name: "other", Key: pk.Key}
	tests := []struct {
		name    string
		kr      *signing.Keyring
		sigs    []signing.Signature
		msg     []byte
		wantKey signing.PublicKey
		wantOK  bool
	}{
		{"trusted", signing.NewKeyring(pk), []signing.Signature{sig}, msg, pk, true},
		{"second signature", signing.NewKeyring(pk), []signing.Signature{other.Sign(msg), sig}, msg, pk, true},
		{"same name, other key", signing.NewKeyring(otherPub), []signing.Signature{sig}, msg, signing.PublicKey{}, false},
		{"first key of a name wins", signing.NewKeyring(otherPub, pk), []signing.Signature{sig}, msg, signing.PublicKey{}, false},
		{"other name, same key", signing.NewKeyring(renamed), []signing.Signature{sig}, msg, signing.PublicKey{}, false},
		{"other message", signing.NewKeyring(pk), []signing.Signature{sig}, []byte("1;/nix/store/x;sha256:y;2;"), signing.PublicKey{}, false},
		{"no signatures", signing.NewKeyring(pk), nil, msg, signing.PublicKey{}, false},
		{"nil keyring", nil, []signing.Signature{sig}, msg, signing.PublicKey{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, ok := tt.kr.Verify(tt.msg, tt.sigs)
			if ok != tt.wantOK {
				t.Fatalf("Verify ok = %v, want %v", ok, tt.wantOK)
			}
			if diff := cmp.Diff(tt.wantKey, key); diff != "" {
				t.Errorf("Verify key (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadNamesFile(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.sec")
	if err := os.WriteFile(bad, []byte("name:AAAA\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{bad, filepath.Join(dir, "missing.sec")} {
		_, err := signing.LoadSecretKey(path)
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("LoadSecretKey(%s): error %v does not name the file", path, err)
		}
		_, err = signing.LoadPublicKey(path)
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("LoadPublicKey(%s): error %v does not name the file", path, err)
		}
	}
	if _, err := signing.LoadSecretKey(bad); !errors.Is(err, signing.ErrBadKey) {
		t.Errorf("LoadSecretKey: got %v, want ErrBadKey", err)
	}
}

func FuzzParse(f *testing.F) {
	sec, pub := nixKeys(f)
	for _, s := range []string{sec, pub, sec + "\n", "k:", ":", "", "a:b:c", "k:AAAA===", "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if sk, err := signing.ParseSecretKey(s); err == nil {
			again, err := signing.ParseSecretKey(sk.String())
			if err != nil || !cmp.Equal(sk, again) {
				t.Errorf("secret key %q does not round-trip: %v", s, err)
			}
			// ed25519 secret keys carry their public half; a mismatched
			// one must not panic, only sign uselessly.
			sk.Sign([]byte(s))
		}
		if pk, err := signing.ParsePublicKey(s); err == nil {
			again, err := signing.ParsePublicKey(pk.String())
			if err != nil || !cmp.Equal(pk, again) {
				t.Errorf("public key %q does not round-trip: %v", s, err)
			}
		}
		if sig, err := signing.ParseSignature(s); err == nil {
			again, err := signing.ParseSignature(sig.String())
			if err != nil || !cmp.Equal(sig, again) {
				t.Errorf("signature %q does not round-trip: %v", s, err)
			}
		}
	})
}

// TestReadKeyArgs reads keys as key flags give them: a file or the key's
// text. Errors say which kind of key it was, and never quote one.
func TestReadKeyArgs(t *testing.T) {
	sec, pub := nixKeys(t)
	dir := t.TempDir()
	secFile, pubFile := filepath.Join(dir, "k.sec"), filepath.Join(dir, "k.pub")
	os.WriteFile(secFile, []byte(sec), 0o600)
	os.WriteFile(pubFile, []byte(pub), 0o644)
	for _, arg := range []string{pub, pub + "\n", pubFile} {
		if pk, err := signing.ReadPublicKey(arg); err != nil || pk.String() != pub {
			t.Errorf("ReadPublicKey(%q) = %v, %v; want %s", arg, pk, err, pub)
		}
	}
	for _, arg := range []string{sec, secFile} {
		if sk, err := signing.ReadSecretKey(arg); err != nil || sk.String() != sec {
			t.Errorf("ReadSecretKey(%q) = %v; want the key", arg, err)
		}
	}
	_, secData, _ := strings.Cut(sec, ":")
	tests := []struct {
		name string
		read func(string) error
		arg  string
		want error
	}{
		{"secret key file for public", readPublic, secFile, signing.ErrWrongKind},
		{"secret key text for public", readPublic, sec, signing.ErrWrongKind},
		{"public key file for secret", readSecret, pubFile, signing.ErrWrongKind},
		{"public key text for secret", readSecret, pub, signing.ErrWrongKind},
		{"missing file", readPublic, filepath.Join(dir, "missing.pub"), fs.ErrNotExist},
		{"base64 alone", readPublic, secData, fs.ErrNotExist},
		{"bad name", readSecret, "a\tb:" + secData, signing.ErrBadKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.read(tt.arg)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if strings.Contains(err.Error(), secData[:12]) {
				t.Errorf("error quotes the secret key: %v", err)
			}
		})
	}
}

func readSecret(s string) error { _, err := signing.ReadSecretKey(s); return err }
func readPublic(s string) error { _, err := signing.ReadPublicKey(s); return err }
