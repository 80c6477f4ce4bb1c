package sbom_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/inventory"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/sbom"
	"github.com/nix-airgap/nix-airgap/internal/sbom/sbomtest"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

func hash(s string) storepath.Hash {
	sum := sha256.Sum256([]byte(s))
	return storepath.Hash{Algo: storepath.SHA256, Digest: sum[:]}
}

func path(t *testing.T, name string) storepath.Path {
	p, err := storepath.Dir("/nix/store").Base(hash(name).Nix32()[:32] + "-" + name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func entry(t *testing.T, name, drv string, roles role.Set, refs ...storepath.Path) bundle.PathEntry {
	e := bundle.PathEntry{
		Path: path(t, name), NarHash: hash(name), NarSize: 1000, URL: "nar/" + hash(name).Nix32() + ".nar.zst",
		FileHash: hash(name + "f"), FileSize: 500, Compression: "zstd", Roles: roles, References: refs,
		Origin: &bundle.Origin{From: bundle.FromUpstream, URL: "https://cache.example.org", Keys: []string{"cache.example.org-1"}},
	}
	if drv != "" {
		e.Deriver = path(t, drv+".drv")
	}
	return e
}

func sample(t *testing.T) *inventory.Inventory {
	glibc := entry(t, "glibc-2.40", "glibc-2.40", role.Runtime)
	hello := entry(t, "hello-2.12", "hello-2.12", role.Runtime, glibc.Path)
	man := entry(t, "hello-2.12-man", "hello-2.12", role.Runtime)
	tarball := entry(t, "hello-2.12.tar.gz", "hello-2.12.tar.gz", role.Source)
	tarball.Fetch = &bundle.Fetch{URLs: []string{"mirror://gnu/hello/hello-2.12.tar.gz", "https://ftp.gnu.org/gnu/hello/hello-2.12.tar.gz"}, Method: storepath.Flat, Hash: hash("tarball")}
	tarball.CA = "fixed:" + tarball.Fetch.Hash.String()
	tarball.Flat = &bundle.FlatHashes{MD5: make([]byte, 16), SHA1: make([]byte, 20), SHA256: hash("tarball").Digest, SHA512: make([]byte, 64)}
	gh := entry(t, "source", "source", role.Source)
	gh.Fetch = &bundle.Fetch{URLs: []string{"https://github.com/NixOS/nix/archive/2.28.3.tar.gz"}, Method: storepath.Recursive, Hash: hash("gh")}
	drv := entry(t, "hello-2.12.drv", "", role.Derivation)
	m := &bundle.Manifest{
		Tool: "nix-airgap v0.1.0", Created: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC), StoreDir: "/nix/store", Mode: role.ModeSources,
		Targets: []bundle.Target{{Spec: "nixpkgs#hello", Outputs: map[string]storepath.Path{"out": hello.Path, "man": man.Path}}},
		Paths:   []bundle.PathEntry{glibc, hello, man, tarball, gh, drv},
	}
	return inventory.FromManifest("bundle", m)
}

func TestCycloneDX(t *testing.T) {
	inv := sample(t)
	data, err := sbom.CycloneDX(inv)
	if err != nil {
		t.Fatal(err)
	}
	sbomtest.Validate(t, data)
	again, err := sbom.CycloneDX(inv)
	if err != nil || !bytes.Equal(data, again) {
		t.Errorf("two SBOMs of one inventory differ (%v)", err)
	}

	var bom struct {
		SpecVersion string
		Components  []struct {
			Type, Name, Version, Purl string
			Hashes                    []struct{ Alg, Content string }
			ExternalReferences        []struct{ Type, URL string }
		}
		Dependencies []struct {
			Ref       string
			DependsOn []string
		}
	}
	if err := json.Unmarshal(data, &bom); err != nil {
		t.Fatal(err)
	}
	type comp struct{ Type, Name, Version, Purl, Hashes, URLs string }
	var got []comp
	for _, c := range bom.Components {
		x := comp{Type: c.Type, Name: c.Name, Version: c.Version, Purl: c.Purl}
		for _, h := range c.Hashes {
			x.Hashes += h.Alg + " "
		}
		for _, r := range c.ExternalReferences {
			x.URLs += r.Type + " " + r.URL + " "
		}
		got = append(got, x)
	}
	sha := "sha256:" + hash("tarball").Hex()
	want := []comp{
		{"library", "glibc", "2.40", "pkg:nix/glibc@2.40", "SHA-256 ", ""},
		{"file", "hello-2.12.tar.gz", "", "pkg:generic/hello-2.12.tar.gz?checksum=" + sha + "&download_url=mirror:%2F%2Fgnu%2Fhello%2Fhello-2.12.tar.gz", "MD5 SHA-1 SHA-256 SHA-512 ",
			"source-distribution mirror://gnu/hello/hello-2.12.tar.gz source-distribution https://ftp.gnu.org/gnu/hello/hello-2.12.tar.gz "},
		{"application", "hello", "2.12", "pkg:nix/hello@2.12", "SHA-256 ", ""},
		{"application", "hello", "2.12", "pkg:nix/hello@2.12?output=man", "SHA-256 ", ""},
		{"file", "source", "", "pkg:github/nixos/nix@2.28.3", "SHA-256 ", "source-distribution https://github.com/NixOS/nix/archive/2.28.3.tar.gz "},
	}
	// Components follow the paths' order, which the hashes decide.
	less := func(a, b comp) bool { return a.Purl < b.Purl }
	if diff := cmp.Diff(want, got, cmp.Transformer("sort", func(in []comp) []comp {
		out := append([]comp(nil), in...)
		for i := range out {
			for j := i + 1; j < len(out); j++ {
				if less(out[j], out[i]) {
					out[i], out[j] = out[j], out[i]
				}
			}
		}
		return out
	})); diff != "" {
		t.Errorf("components (-want +got):\n%s", diff)
	}
	if bom.SpecVersion != "1.6" {
		t.Errorf("specVersion %s", bom.SpecVersion)
	}
	deps := map[string][]string{}
	for _, d := range bom.Dependencies {
		deps[d.Ref] = d.DependsOn
	}
	if h := path(t, "hello-2.12").String(); !cmp.Equal(deps[h], []string{path(t, "glibc-2.40").String()}) {
		t.Errorf("hello depends on %v, want glibc", deps[h])
	}
	if top := deps["nix-airgap:bundle"]; len(top) != 2 {
		t.Errorf("the bundle depends on %v, want hello's two outputs", top)
	}
}

// TestCycloneDXBinaryDelta: a path the bundle carries as a binary delta
// has no NAR file of its own in it, so its nix:narinfo: properties say
// nothing of the delta file (a cache's narinfo will name the rebuilt
// NAR's); nix-airgap:delta: properties name the delta and its base.
func TestCycloneDXBinaryDelta(t *testing.T) {
	old := entry(t, "hello-2.12", "hello-2.12", role.Runtime)
	e := entry(t, "hello-2.13", "hello-2.13", role.Runtime)
	e.URL = "nar/" + hash("delta").Nix32() + ".nar.delta"
	e.Delta = &bundle.Delta{Base: old.Path, BaseNarHash: old.NarHash, BaseNarSize: old.NarSize, System: "x86_64-linux"}
	m := &bundle.Manifest{
		Tool: "nix-airgap v0.1.0", Created: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC), StoreDir: "/nix/store", Mode: role.ModeRuntime,
		Targets: []bundle.Target{{Spec: "nixpkgs#hello", Outputs: map[string]storepath.Path{"out": e.Path}}},
		Paths:   []bundle.PathEntry{e},
	}
	data, err := sbom.CycloneDX(inventory.FromManifest("bundle", m))
	if err != nil {
		t.Fatal(err)
	}
	sbomtest.Validate(t, data)
	var bom struct {
		Components []struct {
			Properties []struct{ Name, Value string }
		}
	}
	if err := json.Unmarshal(data, &bom); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, p := range bom.Components[0].Properties {
		got[p.Name] = p.Value
	}
	want := map[string]string{
		"nix:narinfo:nar_hash":    e.NarHash.String(),
		"nix:narinfo:nar_size":    "1000",
		"nix:narinfo:compression": "zstd",
		"nix-airgap:delta:base":   old.Path.String(),
		"nix-airgap:delta:url":    e.URL,
	}
	for _, name := range []string{"nix:narinfo:url", "nix:narinfo:file_hash", "nix:narinfo:file_size"} {
		want[name] = "" // absent
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("property %s = %q, want %q", name, got[name], w)
		}
	}
}
