package narinfo_test

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// nixCache fills a hermetic Nix (custom store dir) with an added source, a
// flat fixed-output path, a derivation's output with a reference and a
// deriver, a self-referencing output and a .drv, and copies them all to a
// signed file:// cache. It returns the cache dir.
func nixCache(t *testing.T, n *nixtest.Nix, sk signing.SecretKey) string {
	t.Helper()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("dep.txt", "dependency\n")
	fixed := write("fixed.txt", "fixed\n")
	keyFile := write("key.sec", sk.String())
	expr := write("default.nix", fmt.Sprintf(`let dep = ./dep.txt; sh = script: { system = builtins.currentSystem; builder = "/bin/busybox"; args = [ "sh" "-c" script ]; }; in {
  withRefs = derivation (sh "echo ${dep} > $out" // { name = "with-refs"; });
  selfRef = derivation (sh "echo $out > $out" // { name = "self-ref"; });
  fod = derivation (sh "echo fod > $out" // { name = "fod"; outputHashMode = "flat"; outputHashAlgo = "sha256"; outputHash = "%x"; });
}`, sha256.Sum256([]byte("fod\n"))))
	added := n.Run(t, "nix-store", "--add-fixed", "sha256", fixed)
	outs := strings.Fields(n.Run(t, "nix-build", "--no-out-link", expr, "-A", "withRefs", "-A", "selfRef", "-A", "fod"))
	drv := n.Run(t, "nix-store", "-q", "--deriver", outs[0])
	cache := filepath.Join(dir, "cache")
	to := "file://" + cache + "?compression=none&secret-key=" + keyFile
	n.Run(t, "nix", append([]string{"copy", "--to", to, added}, outs...)...)
	n.Run(t, "nix", "copy", "--derivation", "--to", to, drv)
	return cache
}

// TestNix checks every narinfo Nix wrote: parsing and writing back is
// byte-identical, signing with the same key gives Nix's Sig line, one
// built from the store's own facts is byte-identical, and the trust
// checks agree with Nix's.
func TestNix(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	sk, _, err := signing.Generate("test-1")
	if err != nil {
		t.Fatal(err)
	}
	_, wrong, err := signing.Generate("test-1")
	if err != nil {
		t.Fatal(err)
	}
	cache := nixCache(t, n, sk)
	files, _ := filepath.Glob(filepath.Join(cache, "*.narinfo"))
	kinds := map[string]bool{}
	for _, file := range files {
		want := readFile(t, file)
		ni := parse(t, want, n.StoreDir)
		t.Run(ni.StorePath.Name, func(t *testing.T) {
			if got := ni.String(); got != string(want) {
				t.Errorf("re-serialised narinfo differs (-nix +ours):\n%s", cmp.Diff(string(want), got))
			}
			resigned := *ni
			resigned.Sigs = nil
			resigned.Sign(sk)
			if got := resigned.String(); got != string(want) {
				t.Errorf("our signature differs from Nix's (-nix +ours):\n%s", cmp.Diff(string(want), got))
			}
			if !ni.Verify(signing.NewKeyring(sk.Public())) {
				t.Error("Nix's signature does not verify")
			}
			if ni.Verify(signing.NewKeyring(wrong)) {
				t.Error("Nix's signature verifies with the wrong key")
			}
			if got := ni.IsContentAddressed(); got != (ni.CA != "") {
				t.Errorf("IsContentAddressed = %v with CA %q", got, ni.CA)
			}
			if ni.CA != "" {
				kinds[ni.CA[:strings.LastIndexByte(ni.CA, ':')]] = true
				tampered := *ni
				tampered.StorePath.Name += "x"
				if tampered.IsContentAddressed() {
					t.Error("IsContentAddressed holds for a renamed path")
				}
			}
			for _, r := range ni.References {
				if r == ni.StorePath {
					kinds["self-reference"] = true
				}
			}

			ours := fromStore(t, n, ni.StorePath.String())
			ours.Sign(sk)
			got, err := ours.MarshalText()
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("narinfo built from the store differs (-nix +ours):\n%s", diff)
			}
		})
	}
	wantKinds := map[string]bool{"fixed:r:sha256": true, "fixed:sha256": true, "text:sha256": true, "self-reference": true}
	if diff := cmp.Diff(wantKinds, kinds); diff != "" || len(files) != 6 {
		t.Errorf("cache lacks cases: %d narinfos, kinds (-want +got):\n%s", len(files), diff)
	}
}

// fromStore builds a narinfo for p from what the local store says, as a
// cache writer would with compression none.
func fromStore(t *testing.T, n *nixtest.Nix, p string) *narinfo.NarInfo {
	t.Helper()
	ni := &narinfo.NarInfo{Compression: "none"}
	var err error
	if ni.StorePath, err = n.StoreDir.Parse(p); err != nil {
		t.Fatal(err)
	}
	cmd := n.Command(t.Context(), "nix-store", "--dump", p)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	size, err := io.Copy(h, stdout)
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	ni.NarSize, ni.FileSize = uint64(size), uint64(size)
	ni.NarHash = storepath.Hash{Algo: storepath.SHA256, Digest: h.Sum(nil)}
	ni.FileHash = ni.NarHash
	ni.URL = "nar/" + ni.NarHash.Nix32() + ".nar"
	for _, r := range strings.Fields(n.Run(t, "nix-store", "-q", "--references", p)) {
		rp, err := n.StoreDir.Parse(r)
		if err != nil {
			t.Fatal(err)
		}
		ni.References = append(ni.References, rp)
	}
	if d := n.Run(t, "nix-store", "-q", "--deriver", p); d != "unknown-deriver" {
		if ni.Deriver, err = n.StoreDir.Parse(d); err != nil {
			t.Fatal(err)
		}
	}
	// nixcli reads path-info's JSON in every version's shape.
	r := nixcli.Runner{Env: n.Env, KnownStoreDir: n.StoreDir}
	infos, err := r.PathInfo(t.Context(), ni.StorePath)
	if err != nil || len(infos) != 1 {
		t.Fatalf("nix path-info %s: %v", p, err)
	}
	ni.CA = infos[0].CA
	return ni
}
