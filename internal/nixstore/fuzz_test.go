package nixstore

import (
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// FuzzParseNARName parses the NAR names a store serves (after nar/). A
// name it takes is one NARURL makes: of a store path's hash part, a
// sha256 NAR hash and no compression or zstd.
func FuzzParseNARName(f *testing.F) {
	f.Fuzz(func(t *testing.T, name string) {
		hashPart, narHash32, comp, ok := parseNARName(name)
		if ok != IsNARName(name) {
			t.Fatalf("parseNARName(%q) ok = %v, IsNARName = %v", name, ok, !ok)
		}
		if !ok {
			return
		}
		h, err := storepath.ParseHash("sha256:" + narHash32)
		if err != nil {
			t.Fatalf("parseNARName(%q) took NAR hash %q: %v", name, narHash32, err)
		}
		ext := map[string]string{compression.None: "", compression.Zstd: ".zst"}[comp]
		if want := NARURL(storepath.Path{Dir: "/nix/store", Hash: hashPart, Name: "x"}, h, ext); want != "nar/"+name {
			t.Fatalf("parseNARName(%q) = %s %s %s, which NARURL writes %s", name, hashPart, narHash32, comp, want)
		}
	})
}
