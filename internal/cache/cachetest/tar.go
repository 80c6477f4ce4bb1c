package cachetest

import (
	"archive/tar"
	"bytes"
	"io"
	"os"

	"github.com/nix-airgap/nix-airgap/internal/cache"
)

// TarNarInfos counts the narinfos whole in the tar file name, which may be
// cut short (a killed pack's), and says where the last one's data ends.
func TarNarInfos(name string) (end int64, n int, err error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return 0, 0, err
	}
	r := bytes.NewReader(data)
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err != nil {
			return end, n, nil
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return end, n, nil
		}
		if _, ok := cache.NarInfoHashPart(hdr.Name); ok {
			n++
			end = int64(len(data)) - int64(r.Len())
		}
	}
}
