package nixcli_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/nix-airgap/nix-airgap/internal/nixcli"
)

func FuzzParsePathInfo(f *testing.F) {
	dir := readDir(f, "nix-2.8/store-dir.txt")
	f.Fuzz(func(t *testing.T, in []byte) {
		infos, invalid, err := nixcli.ParsePathInfo(dir, bytes.NewReader(in))
		if err != nil {
			return
		}
		for _, i := range infos {
			if i.Path.Dir != dir || i.NarHash.IsZero() || len(i.NarHash.Digest) != i.NarHash.Algo.Size() {
				t.Fatalf("parsed %+v", i)
			}
			for _, r := range i.References {
				if r.Dir != dir {
					t.Fatalf("reference %v not in %s", r, dir)
				}
			}
		}
		for _, p := range invalid {
			if p.Dir != dir {
				t.Fatalf("invalid path %v not in %s", p, dir)
			}
		}
	})
}

func FuzzParseDerivations(f *testing.F) {
	dir := readDir(f, "nix-2.8/store-dir.txt")
	f.Fuzz(func(t *testing.T, in []byte) {
		drvs, err := nixcli.ParseDerivations(dir, bytes.NewReader(in))
		if err != nil {
			return
		}
		for _, d := range drvs {
			if d.Path.Dir != dir || !d.Path.IsDerivation() {
				t.Fatalf("parsed derivation path %v", d.Path)
			}
			for name, o := range d.Outputs {
				if !o.Hash.IsZero() && (o.Hash.Algo != o.HashAlgo || o.Method == "") {
					t.Fatalf("output %s: %+v", name, o)
				}
			}
		}
	})
}

func FuzzParseFlake(f *testing.F) {
	dir := readDir(f, "nix-2.8/flake-store-dir.txt")
	f.Fuzz(func(t *testing.T, in []byte) {
		if m, err := nixcli.ParseFlakeMetadata(dir, bytes.NewReader(in)); err == nil {
			if _, ok := m.Locks.Nodes[m.Locks.Root]; !ok || m.Path.Dir != dir {
				t.Fatalf("parsed %+v", m)
			}
		}
		if a, err := nixcli.ParseFlakeArchive(dir, bytes.NewReader(in)); err == nil {
			for _, p := range a.Paths() {
				if p.Dir != dir {
					t.Fatalf("archive path %v not in %s", p, dir)
				}
			}
		}
	})
}

func FuzzParseVersion(f *testing.F) {
	f.Fuzz(func(t *testing.T, in string) {
		v, err := nixcli.ParseVersion(in)
		if err != nil {
			return
		}
		again, err := nixcli.ParseVersion(v.String())
		if err != nil {
			t.Fatalf("ParseVersion(%q) = %+v, whose String %q does not parse: %v", in, v, v.String(), err)
		}
		if diff := cmp.Diff(v, again); diff != "" {
			t.Fatalf("round trip of %q (-first +second):\n%s", in, diff)
		}
	})
}

// FuzzParseConfig parses nix show-config --json. A config it takes holds
// the three settings it reads, which written back as show-config writes
// them parse to the same; errors say they parse the config and wrap
// ErrUnexpectedOutput.
func FuzzParseConfig(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := nixcli.ParseConfig(bytes.NewReader(in))
		if err != nil {
			if !errors.Is(err, nixcli.ErrUnexpectedOutput) || !strings.HasPrefix(err.Error(), "parse nix config JSON: ") {
				t.Fatalf("ParseConfig: error %q: want ErrUnexpectedOutput", err)
			}
			return
		}
		out := map[string]map[string]any{}
		for name, v := range map[string]any{"substituters": c.Substituters, "trusted-public-keys": c.TrustedPublicKeys, "require-sigs": c.RequireSigs} {
			if _, ok := c.Settings[name]; !ok {
				t.Fatalf("ParseConfig took a config without %s", name)
			}
			out[name] = map[string]any{"value": v}
		}
		data, err := json.Marshal(out)
		if err != nil {
			t.Fatal(err)
		}
		again, err := nixcli.ParseConfig(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("ParseConfig of %s: %v", data, err)
		}
		opt := cmpopts.IgnoreFields(nixcli.Config{}, "Settings")
		if diff := cmp.Diff(c, again, opt, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("round trip through %s (-first +second):\n%s", data, diff)
		}
	})
}
