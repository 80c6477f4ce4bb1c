package nardelta

import (
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite testdata/fuzz/FuzzRebuild from Encode")

func quote(b []byte) string { return strconv.Quote(string(b)) }

func seedFile(name string) string { return filepath.Join("testdata", "fuzz", "FuzzRebuild", name) }

func writeSeed(t *testing.T, name, data string) {
	if err := os.MkdirAll(filepath.Dir(seedFile(name)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(seedFile(name), []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// readSeed reads the delta a seed file holds.
func readSeed(t *testing.T, name string) []byte {
	data, err := os.ReadFile(seedFile(name))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSuffix(strings.TrimPrefix(string(data), "go test fuzz v1\n[]byte("), ")\n")
	delta, err := strconv.Unquote(s)
	if err != nil {
		t.Fatalf("%s: %v", seedFile(name), err)
	}
	return []byte(delta)
}
