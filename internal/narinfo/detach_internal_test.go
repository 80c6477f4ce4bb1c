package narinfo

import (
	"os"
	"path/filepath"
	"testing"
	"unsafe"
)

// TestParseDetaches checks that no string of a parsed narinfo points
// into its text, which would keep the whole text alive.
func TestParseDetaches(t *testing.T) {
	names, err := filepath.Glob("testdata/cache.nixos.org/*.narinfo")
	if err != nil || len(names) == 0 {
		t.Fatalf("no narinfos in testdata: %v", err)
	}
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		ni, err := parse(text, "/nix/store")
		if err != nil {
			t.Fatal(err)
		}
		start := uintptr(unsafe.Pointer(unsafe.StringData(text)))
		check := func(what, s string) {
			if p := uintptr(unsafe.Pointer(unsafe.StringData(s))); s != "" && p >= start && p < start+uintptr(len(text)) {
				t.Errorf("%s: %s %q is a slice of the text", name, what, s)
			}
		}
		strs := map[string]string{"StorePath hash": ni.StorePath.Hash, "StorePath name": ni.StorePath.Name, "URL": ni.URL,
			"Compression": ni.Compression, "Deriver hash": ni.Deriver.Hash, "Deriver name": ni.Deriver.Name, "System": ni.System, "CA": ni.CA}
		for what, s := range strs {
			check(what, s)
		}
		for _, r := range ni.References {
			check("reference hash", r.Hash)
			check("reference name", r.Name)
		}
		for _, s := range ni.Sigs {
			check("signature key name", s.KeyName)
		}
	}
}
