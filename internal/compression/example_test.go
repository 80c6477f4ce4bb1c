package compression_test

import (
	"bytes"
	"fmt"
	"io"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/compression"
)

func Example() {
	ext, _ := compression.Ext("zstd")
	var file bytes.Buffer
	w, err := compression.NewWriter(&file, "zstd", compression.WriterOptions{Level: 3})
	if err != nil {
		fmt.Println(err)
		return
	}
	io.Copy(w, strings.NewReader("nix-archive-1 ..."))
	w.Close()

	r, err := compression.NewReader(&file, "zstd")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()
	nar, _ := io.ReadAll(r)
	fmt.Printf("nar/HASH.nar%s holds %q\n", ext, nar)
	// Output: nar/HASH.nar.zst holds "nix-archive-1 ..."
}
