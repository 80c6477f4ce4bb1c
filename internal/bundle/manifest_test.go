package bundle

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

var update = flag.Bool("update", false, "rewrite golden files")

func mustPath(t testing.TB, dir storepath.Dir, base string) storepath.Path {
	t.Helper()
	p, err := dir.Base(base)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// sampleManifest has every field set, paths out of order.
func sampleManifest(t testing.TB) *Manifest {
	dir := storepath.Dir("/nix/store")
	hello := mustPath(t, dir, "0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello-1.0")
	glibc := mustPath(t, dir, "1a7bjbqy2xhvqzk0h7q4wn8xg0mjrw9m-glibc-2.40")
	src := mustPath(t, dir, "2bzq4pxhf4nb4q8xl4qvq0wq6qr6khm5-hello-1.0.tar.gz")
	drv := mustPath(t, dir, "3cbc0a3dg45ifh9kd3g3sqnfqfprv0gg-hello-1.0.drv")
	h := func(s string) storepath.Hash {
		sum := sha256.Sum256([]byte(s))
		return storepath.Hash{Algo: storepath.SHA256, Digest: sum[:]}
	}
	return &Manifest{
		Tool:        "nix-airgap v0.1.0",
		Created:     time.Date(2026, 11, 24, 23, 40, 0, 0, time.UTC),
		StoreDir:    dir,
		Mode:        role.ModeBuild,
		Derivations: false,
		Targets:     []Target{{Spec: ".#hello", DrvPath: drv, Outputs: map[string]storepath.Path{"out": hello}}},
		Bases:       []Base{{ID: h("base"), Created: time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC), Paths: 120, Provides: []storepath.Path{glibc}, Channels: []string{"nixos", "nixpkgs"}}},
		Paths: []PathEntry{
			{
				Path: src, NarHash: h("src nar"), NarSize: 1000, URL: "nar/" + h("src file").Nix32() + ".nar.xz", FileHash: h("src file"), FileSize: 900,
				Compression: "xz", Roles: role.Source, CA: "fixed:sha256:" + h("src").Nix32(),
				Flat:   &FlatHashes{MD5: make([]byte, 16), SHA1: make([]byte, 20), SHA256: make([]byte, 32), SHA512: bytes.Repeat([]byte{0xab}, 64)},
				Origin: &Origin{From: FromUpstream, URL: "https://cache.example.org", Keys: []string{"cache.example.org-1"}},
				Fetch:  &Fetch{URLs: []string{"https://example.org/hello-1.0.tar.gz"}, Method: storepath.Flat, Hash: h("src")},
			},
			{
				Path: hello, NarHash: h("hello nar"), NarSize: 12345, URL: "nar/" + h("hello file").Nix32() + ".nar.zst", FileHash: h("hello file"), FileSize: 4567,
				Compression: "zstd", References: []storepath.Path{glibc, hello}, Deriver: drv, Roles: role.Runtime | role.Build,
				Origin: &Origin{From: FromBuild},
			},
		},
		Files:    []File{{Name: "channels/nixpkgs/nixexprs.tar.xz", SHA256: h("nixexprs").Digest, Size: 4000}, {Name: "flake-registry.json", SHA256: h("reg").Digest, Size: 120}},
		Channels: []Channel{{Name: "nixpkgs", Source: "<nixpkgs>"}},
	}
}

func TestManifestGolden(t *testing.T) {
	m := sampleManifest(t)
	got, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "manifest.golden.json")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("Marshal (-golden +got):\n%s", diff)
	}

	// Parse gives the manifest back, sorted and with defaults filled in.
	back, err := ParseManifest(got)
	if err != nil {
		t.Fatal(err)
	}
	m.Format, m.Version = Format, Version
	m.Paths[0], m.Paths[1] = m.Paths[1], m.Paths[0]
	m.Paths[0].References[0], m.Paths[0].References[1] = m.Paths[0].References[1], m.Paths[0].References[0]
	if m.Paths[0].Path.Hash > m.Paths[1].Path.Hash {
		t.Fatal("sample paths not in the expected order")
	}
	if diff := cmp.Diff(m, back); diff != "" {
		t.Errorf("Parse(Marshal(m)) (-want +got):\n%s", diff)
	}
	again, err := back.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, got) {
		t.Error("Marshal(Parse(b)) != b")
	}
}

// TestMarshalAsOneEncode checks that Marshal, which streams targets and
// paths, writes what encoding/json writes for the whole manifest at
// once, with none, one or several of each.
func TestMarshalAsOneEncode(t *testing.T) {
	sample := sampleManifest(t)
	sample.Targets = append(sample.Targets, Target{Spec: "/nix/store/x", Outputs: map[string]storepath.Path{"out": sample.Paths[0].Path, "dev": sample.Paths[1].Path}})
	for _, n := range []int{0, 1, 2} {
		m := *sample
		m.Targets, m.Paths = sample.Targets[:n], sample.Paths[:n]
		got, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		j, err := m.headJSON()
		if err != nil {
			t.Fatal(err)
		}
		paths := slices.Clone(m.Paths)
		slices.SortFunc(paths, func(a, b PathEntry) int { return storepath.Compare(a.Path, b.Path) })
		for i := range paths {
			jp, err := paths[i].toJSON()
			if err != nil {
				t.Fatal(err)
			}
			j.Paths = append(j.Paths, jp)
		}
		for i := range m.Targets {
			j.Targets = append(j.Targets, m.Targets[i].toJSON())
		}
		var want bytes.Buffer
		if err := newJSONEncoder(&want, "").Encode(j); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want.String(), string(got)); diff != "" {
			t.Errorf("%d targets and paths: Marshal (-one encode +got):\n%s", n, diff)
		}
	}
}

// TestParseManifestWithoutOrigin reads a manifest written before paths
// had origin and fetch keys: it parses without them and marshals back
// byte for byte.
func TestParseManifestWithoutOrigin(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "manifest.noorigin.json"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := ParseManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range m.Paths {
		if p.Origin != nil || p.Fetch != nil {
			t.Errorf("%s: origin %v, fetch %v; want none", p.Path, p.Origin, p.Fetch)
		}
	}
	again, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(data), string(again)); diff != "" {
		t.Errorf("Marshal(Parse(b)) (-b +got):\n%s", diff)
	}
}

func TestParseManifestErrors(t *testing.T) {
	good, err := sampleManifest(t).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	edit := func(old, new string) string {
		if !strings.Contains(string(good), old) {
			t.Fatalf("sample lacks %q", old)
		}
		return strings.Replace(string(good), old, new, 1)
	}
	tests := []struct {
		name, data string
		want       error
		msg        string
	}{
		{"not json", "{", ErrCorrupt, "unexpected end"},
		{"other format", edit(`"nix-airgap-bundle"`, `"tarball"`), ErrCorrupt, `format is "tarball"`},
		{"no format", `{"version":1}`, ErrCorrupt, "format is none"},
		{"newer version", edit(`"version": 1`, `"version": 4`), ErrUnsupportedVersion, "version 4"},
		{"version 0", edit(`"version": 1`, `"version": 0`), ErrCorrupt, "version 0"},
		{"no version", `{"format":"nix-airgap-bundle"}`, ErrCorrupt, "no version"},
		{"relative store dir", edit(`"storeDir": "/nix/store"`, `"storeDir": "nix/store"`), ErrCorrupt, "storeDir"},
		{"path outside store", edit(`"path": "/nix/store/0c9`, `"path": "/gnu/store/0c9`), ErrCorrupt, "paths[0]"},
		{"bad mode", edit(`"mode": "build"`, `"mode": "all"`), ErrCorrupt, "mode"},
		{"bad role", edit(`"runtime"`, `"everything"`), ErrCorrupt, "unknown role"},
		{"md5 nar hash", edit(`"narHash": "sha256:`, `"narHash": "md5:`), ErrCorrupt, "narHash"},
		{"absolute url", edit(`"url": "nar/`, `"url": "/nar/`), ErrCorrupt, "url"},
		{"url escapes", edit(`"url": "nar/`, `"url": "nar/../`), ErrCorrupt, "url"},
		{"bad provides", edit(`"1a7bjbqy2xhvqzk0h7q4wn8xg0mjrw9m-glibc-2.40"`, `"glibc"`), ErrCorrupt, "bases[0].provides"},
		{"bad base channel", edit(`"nixos",`, `".nixos",`), ErrCorrupt, "bases[0].channels"},
		{"unsorted base channels", edit(`"nixos",`, `"nixpkgs",`), ErrCorrupt, "bases[0].channels: nixpkgs: not sorted"},
		{"bad reference", edit(`"0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello-1.0",`, `"hello",`), ErrCorrupt, "references"},
		{"bad flat", edit(`"md5": "00000000000000000000000000000000"`, `"md5": "00"`), ErrCorrupt, "flat.md5"},
		{"unsorted paths", edit(`"path": "/nix/store/0c9`, `"path": "/nix/store/zc9`), ErrCorrupt, "not sorted"},
		{"file escapes", edit(`"name": "flake-registry.json"`, `"name": "../x"`), ErrCorrupt, "files[1]"},
		{"file shadows narinfo", edit(`"name": "flake-registry.json"`, `"name": "x.narinfo"`), ErrCorrupt, "reserved"},
		{"bad origin", edit(`"from": "build"`, `"from": "thin air"`), ErrCorrupt, "origin"},
		{"upstream without url", edit(`"url": "https://cache.example.org"`, `"url": ""`), ErrCorrupt, "without a url"},
		{"bad fetch method", edit(`"method": "flat"`, `"method": "git"`), ErrCorrupt, "fetch: method"},
		{"bad fetch hash", edit(`"hash": "sha256:`, `"hash": "sha257:`), ErrCorrupt, "fetch: hash"},
		{"bad created", edit(`"created": "2026-11-24T23:40:00Z"`, `"created": "yesterday"`), ErrCorrupt, "created"},
		{"bad channel name", edit(`"name": "nixpkgs"`, `"name": ".nixpkgs"`), ErrCorrupt, "channels[0]"},
		{"channel without its file", edit(`"name": "nixpkgs"`, `"name": "nixos"`), ErrCorrupt, "not in files"},
		{"channel file without its channel", edit("\"channels\": [\n    {", "\"unknown\": [\n    {"), ErrCorrupt, "no channel's"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseManifest([]byte(tt.data))
			if !errors.Is(err, tt.want) {
				t.Fatalf("ParseManifest = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) || !strings.Contains(err.Error(), ManifestName) {
				t.Errorf("error %q does not name %s and %q", err, ManifestName, tt.msg)
			}
		})
	}
}

func TestParseManifestTooLarge(t *testing.T) {
	_, err := ParseManifest(make([]byte, MaxManifestSize+1))
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("ParseManifest of %d bytes = %v, want ErrCorrupt", MaxManifestSize+1, err)
	}
}

func TestParseManifestIgnoresUnknownKeys(t *testing.T) {
	good, err := sampleManifest(t).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	data := strings.Replace(string(good), `"tool":`, `"future": {"x": [1,2]}, "tool":`, 1)
	data = strings.Replace(data, `"narSize":`, `"newField": true, "narSize":`, 1)
	m, err := ParseManifest([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Paths) != 2 || m.Tool != "nix-airgap v0.1.0" {
		t.Errorf("parsed %+v", m)
	}
}

// TestParseManifestKeysAsUnmarshal: the paths and targets, decoded one at
// a time, are found as json.Unmarshal finds keys (in any case, the last of
// a key given twice), and import's parse checks the targets but keeps none.
func TestParseManifestKeysAsUnmarshal(t *testing.T) {
	good, err := sampleManifest(t).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want, err := ParseManifest(good)
	if err != nil {
		t.Fatal(err)
	}
	data := strings.Replace(string(good), `"paths":`, `"paths": null, "PATHS":`, 1)
	data = strings.Replace(data, `"targets":`, `"targets": [{"spec": "x"}], "Targets":`, 1)
	got, err := ParseManifest([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("keys in another case (-want +got):\n%s", diff)
	}
	if got, err := parseManifest(good, false); err != nil || len(got.Targets) != 0 || len(got.Paths) != len(want.Paths) {
		t.Errorf("parse without targets: %v, %d targets, %d paths", err, len(got.Targets), len(got.Paths))
	}
	bad := strings.Replace(string(good), `"drvPath": "/nix/store/`, `"drvPath": "/elsewhere/`, 1)
	if _, err := parseManifest([]byte(bad), false); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "targets[0].drvPath") {
		t.Errorf("a bad target, not kept: %v", err)
	}
}

func TestSignatures(t *testing.T) {
	data := []byte(`{"format":"nix-airgap-bundle"}`)
	sk1, pk1, _ := signing.Generate("one-1")
	sk2, pk2, _ := signing.Generate("two-1")
	_, other, _ := signing.Generate("one-1") // same name, other key

	sig := Sign(data, sk1, sk2)
	if got := strings.Count(string(sig), "\n"); got != 2 {
		t.Fatalf("Sign wrote %d lines:\n%s", got, sig)
	}
	tests := []struct {
		name    string
		data    []byte
		sig     []byte
		kr      *signing.Keyring
		wantKey string
		wantErr error
	}{
		{"first trusted", data, sig, signing.NewKeyring(pk1), "one-1", nil},
		{"second trusted", data, sig, signing.NewKeyring(pk2), "two-1", nil},
		{"no keyring", data, sig, nil, "", ErrUntrusted},
		{"same name other key", data, sig, signing.NewKeyring(other), "", ErrUntrusted},
		{"tampered data", append(bytes.Clone(data), ' '), sig, signing.NewKeyring(pk1, pk2), "", ErrUntrusted},
		{"unsigned", data, nil, signing.NewKeyring(pk1), "", ErrUnsigned},
		{"blank sig file", data, []byte("\n\n"), signing.NewKeyring(pk1), "", ErrUnsigned},
		{"garbage line", data, append(bytes.Clone(sig), "nonsense\n"...), signing.NewKeyring(pk1), "", ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pk, err := VerifySignatures(tt.data, tt.sig, tt.kr)
			if !errors.Is(err, tt.wantErr) || pk.Name != tt.wantKey {
				t.Errorf("VerifySignatures = %q, %v; want %q, %v", pk.Name, err, tt.wantKey, tt.wantErr)
			}
		})
	}
	if !errors.Is(ErrUnsigned, ErrUntrusted) {
		t.Error("ErrUnsigned does not wrap ErrUntrusted")
	}
	// A signature named as a trusted key that does not verify says the
	// manifest may have changed: not only "untrusted", which reads as a
	// wrong --public-key.
	for _, tt := range []struct {
		name    string
		data    []byte
		kr      *signing.Keyring
		changed bool
	}{
		{"tampered data", append(bytes.Clone(data), ' '), signing.NewKeyring(pk1), true},
		{"same name other key", data, signing.NewKeyring(other), true},
		{"no key of its names", data, signing.NewKeyring(), false},
	} {
		_, err := VerifySignatures(tt.data, sig, tt.kr)
		if got := err != nil && strings.Contains(err.Error(), "changed after it was signed"); !errors.Is(err, ErrUntrusted) || got != tt.changed {
			t.Errorf("%s: VerifySignatures = %v; want untrusted, saying the manifest may have changed: %v", tt.name, err, tt.changed)
		}
	}
	// An untrusted signer is said to be untrusted once, not "not signed
	// by a trusted key: signed by X, none trusted".
	for _, tt := range []struct {
		data []byte
		kr   *signing.Keyring
		want string
	}{
		{data, signing.NewKeyring(), "verify manifest.json: signed by one-1, two-1, none of them a trusted key"},
		{data, signing.NewKeyring(pk1), ""}, // trusted
		{append(bytes.Clone(data), ' '), signing.NewKeyring(pk1), "verify manifest.json: signed by two-1, not a trusted key, and by one-1, whose signature does not match manifest.json: "},
	} {
		_, err := VerifySignatures(tt.data, sig, tt.kr)
		if tt.want == "" {
			if err != nil {
				t.Errorf("VerifySignatures = %v", err)
			}
			continue
		}
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) || strings.Count(err.Error(), "trusted") != 1 || !errors.Is(err, ErrUntrusted) || errors.Is(err, ErrBadSignature) {
			t.Errorf("VerifySignatures = %v; want untrusted, %q…, saying so once", err, tt.want)
		}
	}
}

func TestIDAndRecordName(t *testing.T) {
	id := ID([]byte("hello"))
	if id.Hex() != "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824" {
		t.Errorf("ID = %s", id.Hex())
	}
	want := "sha256-" + id.Nix32() + ".json"
	if got := RecordName(id); got != want {
		t.Errorf("RecordName = %q, want %q", got, want)
	}
}

func FuzzParseManifest(f *testing.F) {
	good, err := sampleManifest(f).Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"format":"nix-airgap-bundle","version":1,"storeDir":"/nix/store","mode":"runtime"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			return
		}
		// Whatever parses marshals, and the result parses to the same.
		out, err := m.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed manifest: %v", err)
		}
		m2, err := ParseManifest(out)
		if err != nil {
			t.Fatalf("Parse(Marshal): %v\n%s", err, out)
		}
		out2, err := m2.Marshal()
		if err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("Marshal not stable: %v\n%s\n%s", err, out, out2)
		}
	})
}

// TestSortedRefs checks that the writer shares a sorted reference list
// and sorts a copy of any other, leaving the caller's alone.
func TestSortedRefs(t *testing.T) {
	dir := storepath.Dir("/nix/store")
	a := mustPath(t, dir, "0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-a")
	b := mustPath(t, dir, "1a7bjbqy2xhvqzk0h7q4wn8xg0mjrw9m-b")
	sorted := []storepath.Path{a, b}
	if got := sortedRefs(sorted); &got[0] != &sorted[0] {
		t.Error("sorted references copied")
	}
	in := []storepath.Path{b, a, b}
	if got, want := sortedRefs(in), sorted; !slices.Equal(got, want) {
		t.Errorf("sortedRefs(b, a, b) = %v, want %v", got, want)
	}
	if !slices.Equal(in, []storepath.Path{b, a, b}) {
		t.Errorf("sortedRefs changed its argument to %v", in)
	}
}

// TestManifestProvidesNothing: a base that provides nothing is written
// "provides": [] and read back empty, not nil, so that gc tells it from a
// manifest that predates provides (absent, read as nil).
func TestManifestProvidesNothing(t *testing.T) {
	m := sampleManifest(t)
	old := m.Bases[0]
	old.Provides = nil
	old.Created = old.Created.Add(time.Hour)
	m.Bases[0].Provides = []storepath.Path{}
	m.Bases = append(m.Bases, old)
	data, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(data, []byte(`"provides"`)); n != 1 || !bytes.Contains(data, []byte(`"provides": []`)) {
		t.Fatalf("manifest has %d provides keys, want one, empty:\n%s", n, data)
	}
	back, err := ParseManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	if got := back.Bases[0].Provides; got == nil || len(got) != 0 {
		t.Errorf("provides [] read back as %#v, want empty, not nil", got)
	}
	if got := back.Bases[1].Provides; got != nil {
		t.Errorf("no provides read back as %#v, want nil", got)
	}
}

// TestVolumeSetBase: --since NAME.tar of a volume set reads its first
// volume, whose number has four digits in a set of a thousand volumes or
// more, as pack names it.
func TestVolumeSetBase(t *testing.T) {
	for _, first := range []string{"set.001.tar", "set.0001.tar"} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, first), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if got, want := volumeSetBase(filepath.Join(dir, "set.tar")), filepath.Join(dir, first); got != want {
			t.Errorf("volumeSetBase with %s = %s; want %s", first, got, want)
		}
	}
}
