package world

import (
	"errors"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestGenerateIsDeterministic(t *testing.T) {
	a, err := Generate(t.TempDir(), "http://127.0.0.1:1", Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Generate(t.TempDir(), "http://127.0.0.1:1/", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a.FODs, b.FODs); diff != "" {
		t.Errorf("FODs differ between two generations (-a +b):\n%s", diff)
	}
	exprA, _ := os.ReadFile(a.File)
	exprB, _ := os.ReadFile(b.File)
	if string(exprA) != string(exprB) {
		t.Error("the expression differs between two generations")
	}
	salted, err := Generate(t.TempDir(), "http://127.0.0.1:1", Options{Salt: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range salted.FODs {
		if f.Hash.Equal(a.FODs[i].Hash) {
			t.Errorf("salted FOD %s has the unsalted hash", f.Attr)
		}
		if _, ok := salted.Files[f.File]; !ok {
			t.Errorf("FOD %s: file %s is not served", f.Attr, f.File)
		}
	}
}

func TestGenerateRejectsBadSalt(t *testing.T) {
	if _, err := Generate(t.TempDir(), "http://127.0.0.1:1", Options{Salt: "a/b"}); !errors.Is(err, ErrBadSalt) {
		t.Errorf("Generate with salt a/b: error = %v, want ErrBadSalt", err)
	}
}

// LibbaseData grows libbase's source, and so its FOD, by that much and
// changes nothing else.
func TestGenerateLibbaseData(t *testing.T) {
	a, err := Generate(t.TempDir(), "http://127.0.0.1:1", Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Generate(t.TempDir(), "http://127.0.0.1:1", Options{LibbaseData: 4096})
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range b.FODs {
		grown := len(b.Files[f.File]) - len(a.Files[f.File])
		if f.Attr == "libbaseSrc" {
			if grown < 4096 || f.Hash.Equal(a.FODs[i].Hash) {
				t.Errorf("libbaseSrc grew by %d bytes, hash changed %v; want at least 4096 bytes, a new hash", grown, !f.Hash.Equal(a.FODs[i].Hash))
			}
		} else if grown != 0 || !f.Hash.Equal(a.FODs[i].Hash) {
			t.Errorf("FOD %s changed with LibbaseData", f.Attr)
		}
	}
}
