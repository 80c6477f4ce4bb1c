package drvname_test

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/drvname"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
)

// TestParseMatchesNix compares Parse with builtins.parseDrvName on real
// store path names and thousands of random ones, in one evaluation.
func TestParseMatchesNix(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	names := []string{
		"apache-httpd-2.0.48", "hello-1.0-man", "demo-system", "foo--1", "foo-", "-1", "-", "",
		"python3.12-requests-2.31.0", "linux-6.6-modules", "x-\u00e9", "x-\u00c9t\u00e9-1", "a-b-c",
		"source", "bootstrap-tools.nar", "hello-1.0.tar.gz", "libbase-1.0", "cc-1.0",
	}
	// Store path names are [A-Za-z0-9+-._?=]; weight the dash and digits
	// so that every position of the rule is hit often.
	const alphabet = "--------0123456789abcxyzABCXYZ+._?="
	r := rand.New(rand.NewPCG(19, 1))
	for range 5000 {
		b := make([]byte, 1+r.IntN(12))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		names = append(names, string(b))
	}
	data, err := json.Marshal(names)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "names.json")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out := n.Run(t, "nix-instantiate", "--eval", "--strict", "--json", "--expr",
		"map builtins.parseDrvName (builtins.fromJSON (builtins.readFile "+file+"))")
	var got []struct{ Name, Version string }
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("nix-instantiate printed %.200q: %v", out, err)
	}
	if len(got) != len(names) {
		t.Fatalf("Nix parsed %d names, want %d", len(got), len(names))
	}
	for i, s := range names {
		want := drvname.Name{Name: got[i].Name, Version: got[i].Version}
		if p := drvname.Parse(s); p != want {
			t.Errorf("Parse(%q) = %#v, Nix says %#v", s, p, want)
		}
	}
}
