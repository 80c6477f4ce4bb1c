package narinfo_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/signing"
)

// TestParseLikeNix serves edited copies of a narinfo Nix wrote and checks
// that Parse accepts exactly what nix path-info accepts, except for the
// documented cases where we are stricter.
func TestParseLikeNix(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	nixVersion, err := nixtest.Version()
	if err != nil {
		t.Fatal(err)
	}
	sk, _, err := signing.Generate("test-1")
	if err != nil {
		t.Fatal(err)
	}
	cache := nixCache(t, n, sk)
	files, _ := filepath.Glob(filepath.Join(cache, "*.narinfo"))
	var orig string
	for _, f := range files {
		if b := readFile(t, f); bytes.Contains(b, []byte("Deriver: ")) && bytes.Contains(b, []byte("-with-refs\n")) {
			orig = string(b)
		}
	}
	if orig == "" {
		t.Fatal("no narinfo for with-refs")
	}
	ni := parse(t, []byte(orig), n.StoreDir)
	storePath, ref := ni.StorePath.String(), ni.References[0].Base()
	replace := func(old, new string) string {
		if !strings.Contains(orig, old) {
			t.Fatalf("narinfo lacks %q", old)
		}
		return strings.Replace(orig, old, new, 1)
	}
	narSize := fmt.Sprintf("NarSize: %d\n", ni.NarSize)
	tests := []struct {
		name     string
		in       string
		nixOK    bool
		stricter bool // we reject what Nix accepts
	}{
		{"as written", orig, true, false},
		{"unknown key", orig + "Foo: bar\n", true, false},
		{"no Compression", replace("Compression: none\n", ""), true, false},
		// Nix (2.8 to 2.34) reads any name; only a download needs the
		// codec, and CopyVerified refuses a name it has none for.
		{"unknown Compression", replace("Compression: none\n", "Compression: lz77\n"), true, false},
		{"CRLF", strings.ReplaceAll(orig, "\n", "\r\n"), false, false},
		{"junk line before URL", replace("URL: ", "junk\nURL: "), false, false},
		{"junk line after URL", replace("Compression: ", "junk\nCompression: "), true, false},
		{"any byte after colon", replace("URL: ", "URL:\t"), true, false},
		{"NarSize 0", replace(narSize, "NarSize: 0\n"), false, false},
		{"NarSize plus", replace("NarSize: ", "NarSize: +"), true, false},
		{"NarSize leading zero", replace("NarSize: ", "NarSize: 0"), true, false},
		{"NarSize negative", replace("NarSize: ", "NarSize: -"), false, false},
		{"NarSize space", replace("NarSize: ", "NarSize:  "), false, false},
		{"no URL", replace("URL: ", "Url: "), false, false},
		{"NarHash hex", replace("NarHash: "+ni.NarHash.String(), "NarHash: sha256:"+ni.NarHash.Hex()), true, false},
		{"NarHash SRI", replace("NarHash: "+ni.NarHash.String(), "NarHash: "+ni.NarHash.SRI()), true, false},
		{"NarHash base64", replace("NarHash: "+ni.NarHash.String(), "NarHash: sha256:"+ni.NarHash.Base64()), true, false},
		{"NarHash no algo", replace("NarHash: sha256:", "NarHash: "), false, false},
		{"empty then full References", replace("References: ", "References: \nReferences: "), true, false},
		{"two References", orig + "References: " + ref + "\n", false, false},
		{"References spaces", replace("References: "+ref, "References:  "+ref+"  "+ref+" "), true, false},
		{"StorePath twice", orig + "StorePath: " + storePath + "\n", true, false},
		{"StorePath uncanonical", replace("StorePath: "+string(n.StoreDir), "StorePath: "+string(n.StoreDir)+"/."), true, false},
		{"StorePath other dir", replace("StorePath: "+string(n.StoreDir), "StorePath: /nix/store"), false, false},
		{"unknown-deriver", replace("Deriver: ", "Deriver: unknown-deriver\nX: "), true, false},
		{"bad Deriver", replace("Deriver: ", "Deriver: e"), false, false},
		// Nix 2.8's StorePath checks 32 hash characters but not the dash
		// after them; storepath.ParseBase does.
		{"Deriver without dash", replace("Deriver: ", "Deriver: x"), true, true},
		{"no final newline", strings.TrimSuffix(orig, "\n"), false, false},
		{"blank line at end", orig + "\n", false, false},
		{"blank line at start", "\n" + orig, false, false},
		{"empty", "", false, false},
		{"no FileHash", replace("FileHash: ", "X: "), true, false},
		{"System", orig + "System: x86_64-linux\n", true, false},
		{"empty CA twice", orig + "CA: \nCA: \n", true, false},
		{"two CA", orig + "CA: fixed:sha256:" + ni.NarHash.Nix32() + "\nCA: fixed:sha256:" + ni.NarHash.Nix32() + "\n", false, false},
		{"bad CA", orig + "CA: fixed:sha256\n", false, false},
		// Nix before 2.34 keeps a malformed Sig and fails only when
		// verifying with a trusted key of that name; 2.34 refuses the
		// narinfo, as we do.
		{"malformed Sig", orig + "Sig: foo\n", !nixVersion.AtLeast(2, 34), true},
		// Nix reads a sha512 NarHash but cannot check a NAR against it.
		{"NarHash sha512", replace("NarHash: "+ni.NarHash.String(), "NarHash: sha512:"+strings.Repeat("0", 128)), true, true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A cache of its own, so Nix's narinfo disk cache cannot answer.
			dir := filepath.Join(cache+"-case", fmt.Sprint(i))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{"nix-cache-info", ni.StorePath.Hash + ".narinfo"} {
				content := readFile(t, filepath.Join(cache, "nix-cache-info"))
				if f != "nix-cache-info" {
					content = []byte(tt.in)
				}
				if err := os.WriteFile(filepath.Join(dir, f), content, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_, nixErr := n.Output(t.Context(), "nix", "path-info", "--store", "file://"+dir, storePath)
			if nixOK := nixErr == nil; nixOK != tt.nixOK {
				t.Fatalf("nix path-info ok = %v, want %v: %v", nixOK, tt.nixOK, nixErr)
			}
			_, err := narinfo.Parse(strings.NewReader(tt.in), n.StoreDir)
			if wantOK := tt.nixOK && !tt.stricter; (err == nil) != wantOK {
				t.Errorf("Parse ok = %v, want %v: %v", err == nil, wantOK, err)
			}
		})
	}
}
