package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
)

// corruptions of a stored file or of its narinfo, each of which CheckNAR
// and CopyVerified must catch.
var corruptions = []struct {
	name    string
	file    func([]byte) []byte
	narinfo func(*narinfo.NarInfo)
	want    string
}{
	{name: "flipped byte", file: func(b []byte) []byte { b[len(b)/2] ^= 1; return b }, want: "FileHash"},
	{name: "truncated", file: func(b []byte) []byte { return b[:len(b)-1] }, want: "FileSize"},
	{name: "extended", file: func(b []byte) []byte { return append(b, 0) }, want: "longer than FileSize"},
	{name: "wrong NarHash", narinfo: func(ni *narinfo.NarInfo) { ni.NarHash.Digest[0] ^= 1 }, want: "NarHash"},
	{name: "wrong NarSize", narinfo: func(ni *narinfo.NarInfo) { ni.NarSize++ }, want: "NarSize"},
	{name: "wrong compression", narinfo: func(ni *narinfo.NarInfo) { ni.Compression = "xz" }, want: "decompress xz"},
	// Without FileHash and FileSize only the NAR check can notice (our
	// zstd frames carry no checksum: the NAR hash covers them).
	{name: "flipped byte, no FileHash", file: func(b []byte) []byte { b[len(b)/2] ^= 1; return b },
		narinfo: func(ni *narinfo.NarInfo) { ni.FileHash.Algo, ni.FileHash.Digest, ni.FileSize = 0, nil, 0 }, want: "NarHash"},
}

func TestCheckNARCorrupt(t *testing.T) {
	d := newDir(t)
	orig := addTestNAR(t, d, "c", strings.Repeat("some content ", 1000), "zstd")
	good, err := os.ReadFile(filepath.Join(d.String(), orig.URL))
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckNAR(bytes.NewReader(good), orig); err != nil {
		t.Fatalf("CheckNAR of a good file: %v", err)
	}
	for _, tt := range corruptions {
		t.Run(tt.name, func(t *testing.T) {
			ni := cloneNarInfo(orig)
			data := bytes.Clone(good)
			if tt.file != nil {
				data = tt.file(data)
			}
			if tt.narinfo != nil {
				tt.narinfo(ni)
			}
			err := CheckNAR(bytes.NewReader(data), ni)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), ni.URL) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("CheckNAR = %v, want ErrCorrupt naming %s and mentioning %q", err, ni.URL, tt.want)
			}
		})
	}
	// A read error is not corruption.
	fail := errors.New("cable cut")
	err = CheckNAR(io.MultiReader(bytes.NewReader(good[:10]), iotestErr(fail)), orig)
	if !errors.Is(err, fail) || errors.Is(err, ErrCorrupt) {
		t.Errorf("CheckNAR with a read error = %v, want it, not ErrCorrupt", err)
	}
}

func iotestErr(err error) io.Reader { return readerFunc(func([]byte) (int, error) { return 0, err }) }

func cloneNarInfo(ni *narinfo.NarInfo) *narinfo.NarInfo {
	c := *ni
	c.FileHash.Digest = bytes.Clone(ni.FileHash.Digest)
	c.NarHash.Digest = bytes.Clone(ni.NarHash.Digest)
	return &c
}

// TestCheckNAREndless checks that a file running past its FileSize is
// refused there, so that an endless body cannot run on.
func TestCheckNAREndless(t *testing.T) {
	d := newDir(t)
	ni := addTestNAR(t, d, "v", "verify me", "none")
	data, _ := os.ReadFile(filepath.Join(d.String(), ni.URL))
	var n int64
	endless := readerFunc(func(p []byte) (int, error) { n += int64(len(p)); clear(p); return len(p), nil })
	err := CheckNAR(io.MultiReader(bytes.NewReader(data), endless), ni)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "longer than FileSize") || n > 1 {
		t.Errorf("CheckNAR of an endless file read %d bytes past it: %v", n, err)
	}
}

func TestCopyVerified(t *testing.T) {
	ctx := context.Background()
	src := newDir(t)
	for _, comp := range []string{"none", "zstd", "xz", "gzip"} {
		t.Run(comp, func(t *testing.T) {
			orig := addTestNAR(t, src, "cv-"+comp, strings.Repeat("copy me ", 100000), comp)
			good, err := os.ReadFile(filepath.Join(src.String(), orig.URL))
			if err != nil {
				t.Fatal(err)
			}
			for _, tt := range corruptions {
				ni := cloneNarInfo(orig)
				data := bytes.Clone(good)
				if tt.file != nil {
					data = tt.file(data)
				}
				if tt.narinfo != nil {
					tt.narinfo(ni)
				}
				if comp != "zstd" && strings.HasPrefix(tt.name, "wrong compression") {
					continue
				}
				if comp == "none" && strings.HasSuffix(tt.name, "no FileHash") {
					continue // a flipped byte in an uncompressed file changes only the NarHash
				}
				dst := newDir(t)
				_, err := dst.CopyVerified(ctx, bytes.NewReader(data), ni, nil)
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), ni.URL) {
					t.Errorf("%s: CopyVerified = %v, want ErrCorrupt naming %s", tt.name, err, ni.URL)
				}
				if diff := cmp.Diff([]string{"nix-cache-info"}, files(t, dst.String())); diff != "" {
					t.Errorf("%s: files left behind (-want +got):\n%s", tt.name, diff)
				}
			}
			dst := newDir(t)
			f, err := dst.CopyVerified(ctx, bytes.NewReader(good), orig, nil)
			if err != nil {
				t.Fatal(err)
			}
			if f.URL != orig.URL || !f.Hash.Equal(orig.FileHash) || uint64(f.Size) != orig.FileSize {
				t.Errorf("CopyVerified = %+v, want the source's URL, hash and size", f)
			}
			if err := dst.PutNarInfo(t.Context(), orig); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestCopyVerifiedUnsupported(t *testing.T) {
	d := newDir(t)
	ni := addTestNAR(t, d, "br", "br", "none")
	ni.Compression = "br"
	if _, err := d.CopyVerified(context.Background(), strings.NewReader("x"), ni, nil); !errors.Is(err, compression.ErrUnsupported) {
		t.Errorf("CopyVerified of a br file = %v, want ErrUnsupported", err)
	}
}
