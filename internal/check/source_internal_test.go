package check

import (
	"archive/tar"
	"bytes"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
)

// TestReadTarLongCacheInfo: a bundle tar's nix-cache-info longer than
// any real one is refused, not read cut short.
func TestReadTarLongCacheInfo(t *testing.T) {
	info := "StoreDir: /nix/store\n" + strings.Repeat("#", 1<<16)
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(&tar.Header{Name: bundle.CacheInfo, Mode: 0o644, Size: int64(len(info))}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte(info)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := readTar(&b, "b.tar", "/nix/store")
	if err == nil || !strings.Contains(err.Error(), "check source b.tar: "+bundle.CacheInfo+": invalid source: longer than") {
		t.Errorf("readTar = %v, want the long %s refused", err, bundle.CacheInfo)
	}
}
