package nixtest_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/nixtest"
)

func TestHermeticStore(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	f := filepath.Join(t.TempDir(), "hello.txt")
	if err := os.WriteFile(f, []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := n.Run(t, "nix-store", "--add", f)
	if !strings.HasPrefix(p, string(n.StoreDir)+"/") {
		t.Fatalf("nix-store --add gave %q, want a path in %s", p, n.StoreDir)
	}
	if got := n.Run(t, "nix", "eval", "--raw", "--expr", "builtins.storeDir"); got != string(n.StoreDir) {
		t.Fatalf("builtins.storeDir = %q, want %q", got, n.StoreDir)
	}
}
