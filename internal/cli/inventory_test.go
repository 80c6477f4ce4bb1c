package cli_test

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cli"
)

// TestInventoryCommand writes a cache's inventory to stdout and to a file,
// and shows it.
func TestInventoryCommand(t *testing.T) {
	dir, p, pub := writeBundle(t, "0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello.txt")
	cacheDir := filepath.Join(t.TempDir(), "cache")
	if code, _, stderr := run(t, "import", dir, "--cache", cacheDir, "--public-key", pub); code != 0 {
		t.Fatalf("import: %s", stderr)
	}
	code, stdout, stderr := run(t, "inventory", "--cache", cacheDir)
	if code != 0 {
		t.Fatalf("inventory: exit %d: %s", code, stderr)
	}
	inv, err := bundle.ParseCacheInventory([]byte(stdout))
	if err != nil {
		t.Fatal(err)
	}
	id := bundle.ID(mustReadFile(t, filepath.Join(dir, bundle.ManifestName)))
	if len(inv.Paths) != 1 || inv.Paths[0].Path != p || len(inv.Bundles) != 1 || !inv.Bundles[0].ID.Equal(id) || len(inv.Paths[0].Bundles) != 1 {
		t.Errorf("inventory = %+v, want %s from bundle %s", inv, p, id)
	}

	out := filepath.Join(t.TempDir(), "site.json")
	if code, _, stderr := run(t, "inventory", "--cache", cacheDir, "--out", out); code != 0 || !strings.Contains(stderr, ": 1 path from 1 bundle\n") {
		t.Fatalf("inventory --out: exit %d: %s", code, stderr)
	}
	code, stdout, stderr = run(t, "show", "--json", out)
	if code != 0 {
		t.Fatalf("show inventory: exit %d: %s", code, stderr)
	}
	var shown struct {
		Kind   string
		Totals struct{ Paths int }
	}
	if err := json.Unmarshal([]byte(stdout), &shown); err != nil || shown.Kind != "inventory" || shown.Totals.Paths != 1 {
		t.Errorf("show of the inventory: %+v, %v\n%s", shown, err, stdout)
	}

	// What --out must not replace: a directory, and a file that is not
	// an earlier inventory. What it writes into: a device or a pipe.
	bundleManifest := filepath.Join(dir, bundle.ManifestName)
	before := mustReadFile(t, bundleManifest)
	for _, tt := range []struct{ out, want string }{
		{filepath.Dir(out), "nix-airgap: inventory: --out " + filepath.Dir(out) + ": a directory; give the file to write, such as " + filepath.Join(filepath.Dir(out), "inventory.json") + "\n"},
		{bundleManifest, "nix-airgap: inventory: --out " + bundleManifest + ": a file that is not a cache inventory; inventory replaces only an earlier one\n"},
	} {
		if code, _, stderr := run(t, "inventory", "--cache", cacheDir, "--out", tt.out); code != cli.ExitUsage || !strings.HasPrefix(stderr, tt.want) {
			t.Errorf("inventory --out %s: exit %d, stderr %q; want %d, %q", tt.out, code, stderr, cli.ExitUsage, tt.want)
		}
	}
	if !bytes.Equal(mustReadFile(t, bundleManifest), before) {
		t.Errorf("inventory --out replaced a bundle's manifest")
	}
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		data, _ := os.ReadFile(fifo)
		got <- data
	}()
	if code, _, stderr := run(t, "inventory", "--cache", cacheDir, "--out", fifo); code != 0 {
		t.Errorf("inventory --out FIFO: exit %d: %s", code, stderr)
	}
	select {
	case data := <-got:
		if _, err := bundle.ParseCacheInventory(data); err != nil {
			t.Errorf("inventory --out FIFO: what the reader got: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("inventory --out FIFO: nothing written to the FIFO")
	}
	if fi, err := os.Lstat(fifo); err != nil || fi.Mode().Type() != fs.ModeNamedPipe {
		t.Errorf("inventory --out FIFO replaced it: %v, %v", fi, err)
	}

	// A symlink, as /dev/stdout is one, stays one: written through.
	link := filepath.Join(t.TempDir(), "latest.json")
	if err := os.Symlink(out, link); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := run(t, "inventory", "--cache", cacheDir, "--out", link); code != 0 {
		t.Errorf("inventory --out SYMLINK: exit %d: %s", code, stderr)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode().Type() != fs.ModeSymlink {
		t.Errorf("inventory --out SYMLINK replaced it: %v, %v", fi, err)
	}

	if code, _, _ := run(t, "inventory"); code != cli.ExitUsage {
		t.Errorf("inventory without --cache: exit %d, want %d", code, cli.ExitUsage)
	}
	if code, _, _ := run(t, "inventory", "--cache", t.TempDir()); code == 0 {
		t.Errorf("inventory of a directory that is no cache: exit 0")
	}
}

func mustReadFile(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
