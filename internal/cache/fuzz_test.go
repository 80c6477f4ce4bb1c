package cache

import (
	"bytes"
	"errors"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLocalURL checks narinfo URLs as a cache opens them. A URL it takes
// is returned as given, and is a clean relative name that stays inside
// the cache and names no hidden or temporary file.
func FuzzLocalURL(f *testing.F) {
	f.Fuzz(func(t *testing.T, url string) {
		rel, err := localURL(url)
		if err != nil {
			return
		}
		if rel != url {
			t.Fatalf("localURL(%q) = %q", url, rel)
		}
		joined := filepath.Join("/cache", rel)
		if !strings.HasPrefix(joined, "/cache/") || path.Clean(rel) != rel || !filepath.IsLocal(rel) || strings.ContainsAny(rel, "\\\x00") {
			t.Fatalf("localURL(%q) took a name that leaves the cache (%s)", url, joined)
		}
		for part := range strings.SplitSeq(rel, "/") {
			if part == "" || strings.HasPrefix(part, ".") {
				t.Fatalf("localURL(%q) took a hidden or empty part %q", url, part)
			}
		}
	})
}

// fuzzHashPart is the hash part FuzzParseNarInfo looks narinfos up by.
const fuzzHashPart = "syd87l2rxw8cbsxmxl853h0r6pdwhwjr"

// FuzzParseNarInfo parses a narinfo as a cache reads one by hash part. A
// narinfo it takes describes that hash part in the cache's store; any
// error is a *NarInfoError naming the path and file, and, there being no
// I/O to fail, ErrCorrupt.
func FuzzParseNarInfo(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		ni, err := parseNarInfo(bytes.NewReader(data), "/nix/store", fuzzHashPart, "fuzz")
		if err != nil {
			var ne *NarInfoError
			if !errors.As(err, &ne) || ne.Name != "fuzz" || ne.File != NarInfoFile(fuzzHashPart) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %q (%T): want a corrupt *NarInfoError for %s", err, err, NarInfoFile(fuzzHashPart))
			}
			return
		}
		if ni.StorePath.Hash != fuzzHashPart || ni.StorePath.Dir != "/nix/store" {
			t.Fatalf("parsed %s, looked up as %s", ni.StorePath, fuzzHashPart)
		}
	})
}
