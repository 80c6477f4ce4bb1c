package cache

import (
	"errors"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storage/s3test"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Has of a cache whose store stopped answering says so, naming the
// narinfo, rather than that the path is absent.
func TestHasStoreDown(t *testing.T) {
	b, err := storage.Open(t.Context(), "s3://cache?endpoint="+s3test.RefusedAddr(t)+"&scheme=http")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// Opened while the store answered.
	c := &Cache{b: b, info: CacheInfo{StoreDir: storepath.DefaultDir}}
	hash := strings.Repeat("0", 32)
	has, err := c.Has(t.Context(), hash)
	if has || !errors.Is(err, storage.ErrUnavailable) || !strings.Contains(err.Error(), "s3://cache/"+hash+".narinfo") {
		t.Errorf("Has with the store down = %v, %v; want ErrUnavailable naming the narinfo", has, err)
	}
}
