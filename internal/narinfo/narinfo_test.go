package narinfo_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

const cacheNixosOrgKey = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="

func testKey(t testing.TB) signing.SecretKey {
	t.Helper()
	sk, err := signing.LoadSecretKey("testdata/nix-test-1.sec")
	if err != nil {
		t.Fatal(err)
	}
	return sk
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func parse(t testing.TB, b []byte, dir storepath.Dir) *narinfo.NarInfo {
	t.Helper()
	ni, err := narinfo.Parse(bytes.NewReader(b), dir)
	if err != nil {
		t.Fatal(err)
	}
	return ni
}

// TestGoldenNixStore checks narinfos Nix wrote for /nix/store, uncompressed
// and xz: parsing and writing back is byte-identical, and signing with the
// same key gives the same Sig line, so Fingerprint is right.
func TestGoldenNixStore(t *testing.T) {
	sk := testKey(t)
	files, _ := filepath.Glob("testdata/nix-store*/*.narinfo")
	if len(files) != 6 {
		t.Fatalf("want 6 golden narinfos, found %d", len(files))
	}
	wantCA := map[string]bool{
		"fixed.txt": true, "dep.txt": true, "with-refs.drv": true, "with-refs": false,
	}
	for _, file := range files {
		t.Run(filepath.Base(filepath.Dir(file))+"/"+filepath.Base(file), func(t *testing.T) {
			want := readFile(t, file)
			ni := parse(t, want, storepath.DefaultDir)
			got, err := ni.MarshalText()
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("re-serialised narinfo differs (-nix +ours):\n%s", diff)
			}
			resigned := *ni
			resigned.Sigs = nil
			resigned.Sign(sk)
			if diff := cmp.Diff(string(want), resigned.String()); diff != "" {
				t.Errorf("our signature differs from Nix's (-nix +ours):\n%s", diff)
			}
			if !ni.Verify(signing.NewKeyring(sk.Public())) {
				t.Error("Nix's signature does not verify")
			}
			if got, want := ni.IsContentAddressed(), wantCA[ni.StorePath.Name]; got != want {
				t.Errorf("IsContentAddressed = %v, want %v", got, want)
			}
		})
	}
}

func TestCacheNixosOrg(t *testing.T) {
	want := readFile(t, "testdata/cache.nixos.org/syd87l2rxw8cbsxmxl853h0r6pdwhwjr.narinfo")
	ni := parse(t, want, storepath.DefaultDir)
	if got := ni.String(); got != string(want) {
		t.Errorf("re-serialised narinfo differs (-upstream +ours):\n%s", cmp.Diff(string(want), got))
	}
	wantFP := "1;/nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl-7.82.0-bin;sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0;196040;" +
		"/nix/store/0jqd0rlxzra1rs38rdxl43yh6rxchgc6-curl-7.82.0,/nix/store/6w8g7njm4mck5dmjxws0z1xnrxvl81xa-glibc-2.34-115," +
		"/nix/store/j5jxw3iy7bbz4a57fh9g2xm2gxmyal8h-zlib-1.2.12,/nix/store/yxvjs9drzsphm9pcf42a4byzj1kb9m7k-openssl-1.1.1n"
	if got := ni.Fingerprint(); got != wantFP {
		t.Errorf("Fingerprint:\n got %s\nwant %s", got, wantFP)
	}
	pk, err := signing.ParsePublicKey(cacheNixosOrgKey)
	if err != nil {
		t.Fatal(err)
	}
	if !ni.Verify(signing.NewKeyring(pk)) {
		t.Error("cache.nixos.org's signature does not verify")
	}
	if ni.Verify(signing.NewKeyring(testKey(t).Public())) {
		t.Error("verified with a key that did not sign")
	}
	// The same narinfo moved to another store dir has another fingerprint.
	moved := parse(t, bytes.ReplaceAll(want, []byte("/nix/store/"), []byte("/gnu/store/")), "/gnu/store")
	if moved.Verify(signing.NewKeyring(pk)) {
		t.Error("signature verified for another store dir")
	}
	if ni.IsContentAddressed() {
		t.Error("input-addressed path reported content-addressed")
	}
}

const minimal = "StorePath: /nix/store/kld5ih003khwc5nlq58fir6vhzakpij3-dep.txt\n" +
	"URL: nar/x.nar\n" +
	"NarHash: sha256:13w19wwvpfqyfq1fixzqjphj7dil4vlv9gada02f9kpl04qnmkw4\n" +
	"NarSize: 128\n"

func TestParse(t *testing.T) {
	const ref = "6q1rkyz2b5m41r3gm2zvp5ndqqilq8ym-fixed.txt"
	refPath := storepath.Path{Dir: storepath.DefaultDir, Hash: "6q1rkyz2b5m41r3gm2zvp5ndqqilq8ym", Name: "fixed.txt"}
	base := func(edit func(*narinfo.NarInfo)) *narinfo.NarInfo {
		ni := &narinfo.NarInfo{
			StorePath:   storepath.Path{Dir: storepath.DefaultDir, Hash: "kld5ih003khwc5nlq58fir6vhzakpij3", Name: "dep.txt"},
			URL:         "nar/x.nar",
			Compression: "bzip2",
			NarHash:     mustHash(t, "sha256:13w19wwvpfqyfq1fixzqjphj7dil4vlv9gada02f9kpl04qnmkw4"),
			NarSize:     128,
		}
		if edit != nil {
			edit(ni)
		}
		return ni
	}
	tests := []struct {
		name string
		in   string
		want *narinfo.NarInfo
	}{
		{"minimal", minimal, base(nil)},
		{"unknown key", minimal + "Foo: bar\n", base(nil)},
		{"later line wins", minimal + "URL: nar/y.nar\n", base(func(ni *narinfo.NarInfo) { ni.URL = "nar/y.nar" })},
		{"hex NarHash", strings.Replace(minimal, "13w19wwvpfqyfq1fixzqjphj7dil4vlv9gada02f9kpl04qnmkw4", "84cf6a3101f4cee404504dbdb4e92634b623e195f8f7e802761ebbbb394f818f", 1), base(nil)},
		{"SRI NarHash", strings.Replace(minimal, "sha256:13w19wwvpfqyfq1fixzqjphj7dil4vlv9gada02f9kpl04qnmkw4", "sha256-hM9qMQH0zuQEUE29tOkmNLYj4ZX49+gCdh67uzlPgY8=", 1), base(nil)},
		{"any byte after the colon", strings.Replace(minimal, "URL: ", "URL:\t", 1), base(nil)},
		{"line without colon swallows the next", minimal + "junk\nCompression: xz\n", base(nil)},
		{"unknown-deriver", minimal + "Deriver: unknown-deriver\n", base(nil)},
		{"empty then full References", minimal + "References: \nReferences: " + ref + "  " + ref + "\n",
			base(func(ni *narinfo.NarInfo) { ni.References = []storepath.Path{refPath} })},
		{"empty CA", minimal + "CA: \n", base(nil)},
		{"CA in hex, rendered nix32", minimal + "CA: fixed:r:sha256:84cf6a3101f4cee404504dbdb4e92634b623e195f8f7e802761ebbbb394f818f\n",
			base(func(ni *narinfo.NarInfo) {
				ni.CA = "fixed:r:sha256:13w19wwvpfqyfq1fixzqjphj7dil4vlv9gada02f9kpl04qnmkw4"
			})},
		{"NarSize with plus", strings.Replace(minimal, "NarSize: 128", "NarSize: +128", 1), base(nil)},
		{"StorePath canonicalised", strings.Replace(minimal, "/nix/store/", "/nix//store/./", 1), base(nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := narinfo.Parse(strings.NewReader(tt.in), storepath.DefaultDir)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
		})
	}
}

func mustHash(t testing.TB, s string) storepath.Hash {
	t.Helper()
	h, err := storepath.ParseHash(s)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		wantLine string // in the message, or "" for the final checks
		want     error
	}{
		{"empty", "", "", narinfo.ErrCorrupt},
		{"no StorePath", strings.SplitN(minimal, "\n", 2)[1], "", narinfo.ErrCorrupt},
		{"no URL", strings.Replace(minimal, "URL: nar/x.nar\n", "", 1), "", narinfo.ErrCorrupt},
		{"empty URL", minimal + "URL: \n", "", narinfo.ErrCorrupt},
		{"no NarHash", strings.Replace(minimal, "NarHash", "Narhash", 1), "", narinfo.ErrCorrupt},
		{"NarSize 0", minimal + "NarSize: 0\n", "", narinfo.ErrCorrupt},
		{"NarSize negative", minimal + "NarSize: -1\n", "line 5", narinfo.ErrCorrupt},
		{"NarSize overflow", minimal + "NarSize: 18446744073709551616\n", "line 5", narinfo.ErrCorrupt},
		{"NarHash sha512", minimal + "NarHash: sha512:" + strings.Repeat("0", 128) + "\n", "line 5", narinfo.ErrCorrupt},
		{"bad FileHash", minimal + "FileHash: sha256:xyz\n", "line 5", narinfo.ErrCorrupt},
		{"other store dir", strings.Replace(minimal, "/nix/store/", "/gnu/store/", 1), "line 1", narinfo.ErrCorrupt},
		{"relative StorePath", strings.Replace(minimal, "/nix/store/", "nix/store/", 1), "line 1", narinfo.ErrCorrupt},
		{"CRLF", strings.ReplaceAll(minimal, "\n", "\r\n"), "line 1", narinfo.ErrCorrupt},
		{"no final newline", strings.TrimSuffix(minimal, "\n"), "line 4", narinfo.ErrCorrupt},
		{"blank last line", minimal + "\n", "line 5", narinfo.ErrCorrupt},
		{"two References", minimal + "References: 6q1rkyz2b5m41r3gm2zvp5ndqqilq8ym-fixed.txt\nReferences: 6q1rkyz2b5m41r3gm2zvp5ndqqilq8ym-fixed.txt\n", "line 6", narinfo.ErrCorrupt},
		{"bad reference", minimal + "References: /nix/store/6q1rkyz2b5m41r3gm2zvp5ndqqilq8ym-fixed.txt\n", "line 5", narinfo.ErrCorrupt},
		{"bad Deriver", minimal + "Deriver: unknown\n", "line 5", narinfo.ErrCorrupt},
		{"two CA", minimal + "CA: text:sha256:13w19wwvpfqyfq1fixzqjphj7dil4vlv9gada02f9kpl04qnmkw4\nCA: text:sha256:13w19wwvpfqyfq1fixzqjphj7dil4vlv9gada02f9kpl04qnmkw4\n", "line 6", narinfo.ErrCorrupt},
		{"bad CA", minimal + "CA: text:sha1:13w19wwvpfqyfq1fixzqjphj7dil4vlv9gada02f9kpl04qnmkw4\n", "line 5", narinfo.ErrCorrupt},
		{"bad Sig", minimal + "Sig: foo\n", "line 5", narinfo.ErrCorrupt},
		{"late line", strings.Repeat("a: \n", 1000) + "b:\n\n" + minimal + "NarSize: x\n", "line 1007", narinfo.ErrCorrupt},
		{"too large", minimal + "Foo: " + strings.Repeat("x", narinfo.MaxSize) + "\n", "", narinfo.ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := narinfo.Parse(strings.NewReader(tt.in), storepath.DefaultDir)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got error %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.wantLine) {
				t.Errorf("error %q does not name %q", err, tt.wantLine)
			}
		})
	}
}

func TestMarshalTextRejects(t *testing.T) {
	good := parse(t, []byte(minimal), storepath.DefaultDir)
	tests := []struct {
		name string
		edit func(*narinfo.NarInfo)
	}{
		{"newline in URL", func(ni *narinfo.NarInfo) { ni.URL = "nar/x\nStorePath: /evil" }},
		{"empty URL", func(ni *narinfo.NarInfo) { ni.URL = "" }},
		{"zero NarSize", func(ni *narinfo.NarInfo) { ni.NarSize = 0 }},
		{"zero NarHash", func(ni *narinfo.NarInfo) { ni.NarHash = storepath.Hash{} }},
		{"reference in another dir", func(ni *narinfo.NarInfo) {
			ni.References = []storepath.Path{{Dir: "/gnu/store", Hash: ni.StorePath.Hash, Name: "x"}}
		}},
		{"bad deriver name", func(ni *narinfo.NarInfo) {
			ni.Deriver = storepath.Path{Dir: ni.StorePath.Dir, Hash: ni.StorePath.Hash, Name: "a b"}
		}},
		{"bad CA", func(ni *narinfo.NarInfo) { ni.CA = "fixed:sha256" }},
		{"bad signature", func(ni *narinfo.NarInfo) { ni.Sigs = []signing.Signature{{KeyName: "k\n", Sig: make([]byte, 64)}} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ni := *good
			tt.edit(&ni)
			if _, err := ni.MarshalText(); !errors.Is(err, narinfo.ErrCorrupt) && !errors.Is(err, storepath.ErrBadPath) {
				t.Errorf("MarshalText: got %v, want ErrCorrupt or ErrBadPath", err)
			}
			if _, err := ni.WriteTo(&bytes.Buffer{}); err == nil {
				t.Error("WriteTo accepted what MarshalText rejects")
			}
		})
	}
}

func TestSignReplacesSameKeyName(t *testing.T) {
	sk := testKey(t)
	ni := parse(t, []byte(minimal), storepath.DefaultDir)
	other, _, err := signing.Generate("other-1")
	if err != nil {
		t.Fatal(err)
	}
	ni.Sign(other)
	ni.NarSize = 129 // the first nix-test-1 signature goes stale
	ni.Sign(sk)
	ni.NarSize = 128
	ni.Sign(sk)
	ni.Sign(sk)
	if len(ni.Sigs) != 2 {
		t.Fatalf("got %d signatures, want 2: %v", len(ni.Sigs), ni.Sigs)
	}
	if !ni.Verify(signing.NewKeyring(sk.Public())) || !ni.Verify(signing.NewKeyring(other.Public())) {
		t.Error("a signature does not verify")
	}
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*/*.narinfo")
	for _, file := range files {
		f.Add(string(readFile(f, file)))
	}
	f.Add(minimal)
	f.Fuzz(func(t *testing.T, s string) {
		ni, err := narinfo.Parse(strings.NewReader(s), storepath.DefaultDir)
		if err != nil {
			return
		}
		text, err := ni.MarshalText()
		if err != nil {
			t.Fatalf("parsed narinfo does not marshal: %v\n%q", err, s)
		}
		again, err := narinfo.Parse(bytes.NewReader(text), storepath.DefaultDir)
		if err != nil {
			t.Fatalf("re-parse: %v\n%s", err, text)
		}
		if diff := cmp.Diff(ni, again); diff != "" {
			t.Errorf("Parse(String(Parse(x))) differs (-first +second):\n%s", diff)
		}
		if again.String() != string(text) {
			t.Errorf("String not stable:\n%s\n%s", text, again)
		}
		ni.Fingerprint()
		ni.IsContentAddressed()
	})
}

func TestFlatHash(t *testing.T) {
	const nix32 = "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"
	want := mustHash(t, "sha256:"+nix32)
	for _, c := range []struct {
		ca   string
		flat bool
	}{
		{"fixed:sha256:" + nix32, true},
		{"fixed:r:sha256:" + nix32, false},
		{"text:sha256:" + nix32, false},
		{"fixed:git:sha1:0123456789abcdef0123456789abcdef01234567", false},
		{"", false},
		{"fixed:sha256:nonsense", false},
	} {
		h, ok := narinfo.FlatHash(c.ca)
		if ok != c.flat || ok && !h.Equal(want) {
			t.Errorf("FlatHash(%q) = %s, %v; want flat %v", c.ca, h, ok, c.flat)
		}
	}
}

// BenchmarkParse parses a narinfo from cache.nixos.org: verify, import
// and serve parse one per store path.
func BenchmarkParse(b *testing.B) {
	data := readFile(b, "testdata/cache.nixos.org/syd87l2rxw8cbsxmxl853h0r6pdwhwjr.narinfo")
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := narinfo.Parse(bytes.NewReader(data), storepath.DefaultDir); err != nil {
			b.Fatal(err)
		}
	}
}
