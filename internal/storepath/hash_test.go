package storepath

import (
	"errors"
	"testing"
)

func TestParseHashSpellings(t *testing.T) {
	// sha256("hello\n") in every spelling Nix accepts.
	const hexDigest = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
	spellings := []string{
		"sha256:" + hexDigest,
		"sha256:00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq",
		"sha256:WJG1tSLV3whtD/CxEPvZ0hu0/HFjrzTQgoai6Eb2vgM=",
		"sha256-WJG1tSLV3whtD/CxEPvZ0hu0/HFjrzTQgoai6Eb2vgM=",
	}
	for _, s := range spellings {
		h, err := ParseHash(s)
		if err != nil {
			t.Fatalf("ParseHash(%q): %v", s, err)
		}
		if h.Hex() != hexDigest {
			t.Errorf("ParseHash(%q).Hex() = %s, want %s", s, h.Hex(), hexDigest)
		}
	}
	h, _ := ParseHash(spellings[0])
	if got, want := h.String(), spellings[1]; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got, want := h.SRI(), spellings[3]; got != want {
		t.Errorf("SRI() = %q, want %q", got, want)
	}
}

func TestParseHashErrors(t *testing.T) {
	for _, s := range []string{
		"",
		"sha256",
		"sha256:",
		"sha257:1vdqpkz6gi2rf9mnd11xqpl6fp0sfdzmsr8j4i0ngsr8ll71c7ma",
		"sha256:1vdqpkz6gi2rf9mnd11xqpl6fp0sfdzmsr8j4i0ngsr8ll71c7m",  // short
		"sha256:1vdqpkz6gi2rf9mnd11xqpl6fp0sfdzmsr8j4i0ngsr8ll71c7me", // 'e' is not nix32
		"sha1-WJG1tSLV3whtD/CxEPvZ0hu0/HFjrzTQgoai6Eb2vgM=",           // wrong length for sha1
		"md5:zz",
		"sha256-!!!!",
	} {
		if _, err := ParseHash(s); !errors.Is(err, ErrBadHash) {
			t.Errorf("ParseHash(%q) error = %v, want ErrBadHash", s, err)
		}
	}
}

func FuzzParseHash(f *testing.F) {
	for _, s := range []string{
		"sha256:00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq",
		"sha256-WJG1tSLV3whtD/CxEPvZ0hu0/HFjrzTQgoai6Eb2vgM=",
		"md5:d41d8cd98f00b204e9800998ecf8427e",
		"sha1:2jmj7l5rSw0yVb/vlWAYkK/YBwk=",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ParseHash(s)
		if err != nil {
			return
		}
		for _, spelled := range []string{h.String(), h.SRI(), h.Algo.String() + ":" + h.Hex(), h.Algo.String() + ":" + h.Base64()} {
			h2, err := ParseHash(spelled)
			if err != nil || !h2.Equal(h) {
				t.Fatalf("ParseHash(%q) = %v, %v; want %v", spelled, h2, err, h)
			}
		}
	})
}
