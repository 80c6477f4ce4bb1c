package cache_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// A cache is written NAR first, narinfo second, and read back with every
// hash checked.
func Example() {
	ctx := context.Background()
	tmp, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(tmp)
	os.WriteFile(filepath.Join(tmp, "hello"), []byte("hello\n"), 0o644)
	var narBytes bytes.Buffer
	nar.Dump(&narBytes, filepath.Join(tmp, "hello"))

	d, err := cache.CreateDir(filepath.Join(tmp, "cache"), storepath.DefaultDir, 40)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close()
	file, stats, err := d.AddNAR(ctx, &narBytes, "zstd", compression.WriterOptions{}, cache.NarStats{})
	if err != nil {
		fmt.Println(err)
		return
	}
	p, _ := storepath.DefaultDir.Base("0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello")
	ni := &narinfo.NarInfo{
		StorePath: p, URL: file.URL, Compression: "zstd",
		FileHash: file.Hash, FileSize: uint64(file.Size),
		NarHash: stats.NarHash, NarSize: uint64(stats.NarSize),
	}
	if err := d.PutNarInfo(ctx, ni); err != nil {
		fmt.Println(err)
		return
	}

	src, _ := cache.Open(ctx, "file://"+d.String(), nil)
	got, _ := src.NarInfo(ctx, p.Hash)
	f, _ := src.Open(ctx, got.URL)
	defer f.Close()
	fmt.Println(got.StorePath, got.NarSize, cache.CheckNAR(f, got))
	// Output: /nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello 120 <nil>
}
