package cache

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/compression"
)

// FuzzDecodeNarInfo reads a narinfo as an http cache sends one, with a
// Content-Encoding (Nix 2.32 and later upload narinfos compressed):
// decodeContent and parseNarInfo may not panic, an encoding nix-airgap has
// no decoder for is ErrUnsupported (a known one may still fail on a body
// that is not what it says), and a narinfo taken describes the hash
// part it was fetched by. The seeds are a narinfo Nix wrote, sent plain,
// gzipped and zstd-compressed, and with an encoding Nix knows and
// nix-airgap does not (br).
func FuzzDecodeNarInfo(f *testing.F) {
	f.Fuzz(func(t *testing.T, enc string, body []byte) {
		resp := &http.Response{Header: http.Header{"Content-Encoding": {enc}}, Body: io.NopCloser(bytes.NewReader(body))}
		r, err := decodeContent(resp)
		switch known := slices.Contains([]string{"", "identity", "gzip", "x-gzip", "zstd"}, strings.ToLower(strings.TrimSpace(enc))); {
		case err != nil && !known && !errors.Is(err, compression.ErrUnsupported):
			t.Fatalf("decodeContent(%q): %v, want ErrUnsupported", enc, err)
		case err != nil && known && errors.Is(err, compression.ErrUnsupported):
			t.Fatalf("decodeContent(%q): %v, a known encoding unsupported", enc, err)
		case err == nil && !known:
			t.Fatalf("decodeContent(%q) decoded an unknown encoding", enc)
		case err != nil:
			return
		}
		defer r.Close()
		ni, err := parseNarInfo(r, "/nix/store", fuzzHashPart, "fuzz")
		if err == nil && ni.StorePath.Hash != fuzzHashPart {
			t.Fatalf("parsed %s, looked up as %s", ni.StorePath, fuzzHashPart)
		}
	})
}
