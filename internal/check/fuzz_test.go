package check

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/cache"
)

// FuzzReadTar feeds readTar arbitrary streams: it must never panic, and
// every narinfo it keeps must be one it answers for under its hash part.
func FuzzReadTar(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("not a tar"))
	f.Fuzz(func(t *testing.T, data []byte) {
		idx, err := readTar(bytes.NewReader(data), "fuzz.tar", "/nix/store")
		if err != nil {
			return
		}
		for hash, ni := range idx.narinfos {
			got, err := idx.NarInfo(context.Background(), hash)
			if err != nil || got != ni || ni.StorePath.Hash != hash {
				t.Fatalf("narinfo %s: got %v, %v", hash, got, err)
			}
		}
		if _, err := idx.NarInfo(context.Background(), "00000000000000000000000000000000"); err != nil && !errors.Is(err, cache.ErrNotFound) {
			t.Fatalf("missing narinfo: %v", err)
		}
	})
}

func TestReadTarSeeds(t *testing.T) {
	for _, tc := range []struct {
		seed    string
		wantErr error
		paths   int
		flat    string
	}{
		{"bundle", nil, 1, "sha256/00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"},
		{"otherstore", ErrStoreDir, 0, ""},
		{"wrongname", ErrBadSource, 0, ""},
		{"badnarinfo", ErrBadSource, 0, ""},
		{"badmanifest", ErrBadSource, 0, ""},
		{"truncated", ErrBadSource, 0, ""},
	} {
		t.Run(tc.seed, func(t *testing.T) {
			data := readSeed(t, "testdata/fuzz/FuzzReadTar/"+tc.seed)
			idx, err := readTar(bytes.NewReader(data), tc.seed, "/nix/store")
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if idx.Len() != tc.paths {
				t.Errorf("%d narinfos, want %d", idx.Len(), tc.paths)
			}
			if ok, _ := idx.flat.HasFlat(context.Background(), tc.flat); !ok {
				t.Errorf("no flat %s in %v", tc.flat, idx.flat)
			}
		})
	}
}

// readSeed reads a fuzz corpus file holding one []byte.
func readSeed(t *testing.T, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitN(string(raw), "\n", 3)
	if len(lines) < 2 || !strings.HasPrefix(lines[1], "[]byte(") {
		t.Fatalf("%s: not a corpus file", name)
	}
	s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return []byte(s)
}
