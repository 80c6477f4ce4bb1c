package server_test

import (
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/server"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// FuzzMirrorPath checks that ParseMirrorPath never panics and that a hash
// it accepts is found again under every spelling clients use.
func FuzzMirrorPath(f *testing.F) {
	for _, s := range []string{
		"/sha256/0000000000000000000000000000000000000000000000000000000000000000",
		"/sha256/1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s",
		"/sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
		"//sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
		"/sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
		"/md5/d41d8cd98f00b204e9800998ecf8427e",
		"/sha1/da39a3ee5e6b4b0d3255bfef95601890afd80709",
		"/sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==",
		"/sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
		"/sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
		"///sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
		"//sha256/0000000000000000000000000000000000000000000000000000000000000000",
		"/sha256/../../etc/passwd",
		"/nar/abc.nar.xz",
		"/0000000000000000000000000000000a.narinfo",
		"/SHA256/0000000000000000000000000000000000000000000000000000000000000000",
		"",
		"/",
		"//",
		"/-",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		h, ok := server.ParseMirrorPath(p)
		if !ok {
			return
		}
		if _, err := storepath.NewHash(h.Algo, h.Digest); err != nil {
			t.Fatalf("ParseMirrorPath(%q) accepted an invalid hash: %v", p, err)
		}
		if strings.ContainsAny(p, "\x00\r\n\\.%") {
			t.Fatalf("ParseMirrorPath(%q) accepted a byte no hash spelling has", p)
		}
		a := h.Algo.String()
		for _, spelling := range []string{"/" + a + "/" + h.Hex(), "/" + a + "/" + h.Nix32(), "/" + a + "/" + h.Base64(), "/" + h.SRI(), "//" + h.SRI()} {
			h2, ok := server.ParseMirrorPath(spelling)
			if !ok || !h2.Equal(h) {
				t.Fatalf("ParseMirrorPath(%q) = %v, %v; want %v (from %q)", spelling, h2, ok, h, p)
			}
		}
	})
}

// FuzzParseCredentials checks that the auth file parser never panics and
// never puts a secret in an error.
func FuzzParseCredentials(f *testing.F) {
	for _, s := range []string{
		"basic alice:secret\nbearer tok\n",
		"# comment\n\n  basic   bob:pw:with:colons  \n",
		"basic alice\n",
		"bearer a b\n",
		"digest x\n",
		"",
		"basic :\n",
		strings.Repeat("x", 70000) + "\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		c, err := server.ParseCredentials(strings.NewReader(in))
		if (c == nil) == (err == nil) {
			t.Fatalf("ParseCredentials(%q) = %v, %v", in, c, err)
		}
	})
}
