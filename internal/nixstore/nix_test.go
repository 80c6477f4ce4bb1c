package nixstore_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/nixstore"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// fixture is a hermetic Nix whose nix program logs every call, and a
// Store over it.
type fixture struct {
	n     *nixtest.Nix
	calls string // the log of nix's arguments, a line per call
	sk    signing.SecretKey
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{n: nixtest.New(t, nixtest.Options{}), calls: filepath.Join(t.TempDir(), "calls")}
	var err error
	if f.sk, _, err = signing.Generate("site-1"); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) open(t *testing.T, comp string) *nixstore.Store {
	t.Helper()
	nix, err := exec.LookPath("nix")
	if err != nil {
		t.Fatal(err)
	}
	wrapper := filepath.Join(t.TempDir(), "nix")
	script := fmt.Sprintf("#!/bin/sh\necho \"$*\" >> %s\nexec %s \"$@\"\n", f.calls, nix)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	st, err := nixstore.Open(t.Context(), nixstore.Options{
		Nix: &nixcli.Runner{Env: f.n.Env, Nix: wrapper}, Compression: comp, Key: &f.sk,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	<-st.Ready()
	return st
}

// queries counts the path-info calls made so far.
func (f *fixture) queries(t *testing.T) int {
	data, err := os.ReadFile(f.calls)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(data), "path-info")
}

// textPaths adds a chain of text paths, each referring to the one before.
func (f *fixture) textPaths(t *testing.T, prefix string, n int) []storepath.Path {
	expr := fmt.Sprintf(`builtins.genList (i: builtins.toFile "%s-${toString i}" "%s ${toString i}") 1`, prefix, prefix)
	if n > 1 {
		expr = fmt.Sprintf(`let mk = i: builtins.toFile "%s-${toString i}" (if i == 0 then "first" else "after ${mk (i - 1)}"); in builtins.genList mk %d`, prefix, n)
	}
	out := f.n.Run(t, "nix-instantiate", "--eval", "--strict", "--json", "--read-write-mode", "-E", expr)
	var strs []string
	if err := json.Unmarshal([]byte(out), &strs); err != nil {
		t.Fatal(err)
	}
	var ps []storepath.Path
	for _, s := range strs {
		p, err := f.n.StoreDir.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	return ps
}

func parse(t *testing.T, dir storepath.Dir, body []byte) *narinfo.NarInfo {
	t.Helper()
	ni, err := narinfo.Parse(bytes.NewReader(body), dir)
	if err != nil {
		t.Fatalf("%v\n%s", err, body)
	}
	return ni
}

// TestNarInfos checks narinfos against what Nix says of the paths, that
// paths there at Open and the closure of one asked for later come from
// memory, that concurrent lookups share queries, and that a path added
// later is found and one deleted is gone at once.
func TestNarInfos(t *testing.T) {
	f := newFixture(t)
	pre := f.textPaths(t, "pre", 3)
	st := f.open(t, "")
	ctx := t.Context()

	// Paths there when the store was opened: the background scan asked
	// Nix about them, so their narinfos come from memory at once.
	warm := f.queries(t)
	for _, p := range pre {
		if _, err := st.NarInfo(ctx, p.Hash); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	if got := f.queries(t); got != warm {
		t.Errorf("narinfos of paths there when the store was opened took %d nix queries, want none", got-warm)
	}
	chain := f.textPaths(t, "chain", 5)
	top := chain[len(chain)-1]

	body, err := st.NarInfo(ctx, top.Hash)
	if err != nil {
		t.Fatal(err)
	}
	ni := parse(t, f.n.StoreDir, body)
	r := &nixcli.Runner{Env: f.n.Env}
	infos, err := r.PathInfo(ctx, top)
	if err != nil {
		t.Fatal(err)
	}
	want := infos[0]
	if ni.StorePath != top || !ni.NarHash.Equal(want.NarHash) || ni.NarSize != want.NarSize || ni.CA != want.CA ||
		!cmp.Equal(ni.References, want.References) || ni.Compression != compression.Zstd || ni.URL != nixstore.NARURL(top, want.NarHash, ".zst") {
		t.Errorf("narinfo of %s:\n%s\nwant what nix path-info says: %+v", top, body, want)
	}
	if !ni.Verify(signing.NewKeyring(f.sk.Public())) {
		t.Errorf("narinfo not signed by the site key:\n%s", body)
	}
	afterFirst := f.queries(t)
	for _, p := range chain {
		if _, err := st.NarInfo(ctx, p.Hash); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	if got := f.queries(t); got != afterFirst {
		t.Errorf("the closure's narinfos took %d more nix queries, want none: the first asks for the closure", got-afterFirst)
	}

	// Many paths asked for at once share a few queries.
	many := f.textPaths(t, "many", 1)
	many = append(many, f.textPaths(t, "more", 1)...)
	for i := range 30 {
		many = append(many, f.textPaths(t, fmt.Sprintf("p%d", i), 1)...)
	}
	before := f.queries(t)
	var wg sync.WaitGroup
	for _, p := range many {
		wg.Go(func() {
			if _, err := st.NarInfo(ctx, p.Hash); err != nil {
				t.Errorf("%s: %v", p, err)
			}
		})
	}
	wg.Wait()
	if got := f.queries(t) - before; got > 4 {
		t.Errorf("%d concurrent lookups ran %d nix queries, want them batched into a few", len(many), got)
	}
	t.Logf("%d concurrent lookups ran %d nix queries", len(many), f.queries(t)-before)

	// A hash part the store lacks costs no query.
	before = f.queries(t)
	if _, err := st.NarInfo(ctx, "00000000000000000000000000000000"); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("a missing path: %v, want ErrNotFound", err)
	}
	if f.queries(t) != before {
		t.Errorf("a path not in the store ran a nix query")
	}

	// Deleted: gone at once, narinfo and NAR.
	victim := many[0]
	f.n.Run(t, "nix-store", "--delete", victim.String())
	if _, err := st.NarInfo(ctx, victim.Hash); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("narinfo of a deleted path: %v, want ErrNotFound", err)
	}
	// Added later: found, though an earlier listing lacked it.
	late := f.textPaths(t, "late", 1)[0]
	if _, err := st.NarInfo(ctx, late.Hash); err != nil {
		t.Errorf("narinfo of a path added after the store was listed: %v", err)
	}
}

// TestNARs checks that a served NAR is what nix-store --dump writes, in
// both compressions, and that a URL naming another NAR hash is a miss.
func TestNARs(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	for _, comp := range []string{compression.Zstd, compression.None} {
		t.Run(comp, func(t *testing.T) {
			st := f.open(t, comp)
			p := f.textPaths(t, "nar-"+comp, 3)[2]
			dump, err := f.n.Command(ctx, "nix-store", "--dump", p.String()).Output()
			if err != nil {
				t.Fatal(err)
			}
			body, err := st.NarInfo(ctx, p.Hash)
			if err != nil {
				t.Fatal(err)
			}
			ni := parse(t, f.n.StoreDir, body)
			name, _ := cache.NarFileName(ni.URL)
			n, err := st.OpenNAR(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if err := n.Dump(&buf); err != nil {
				t.Fatal(err)
			}
			if comp == compression.None && n.Size() != int64(buf.Len()) {
				t.Errorf("Size says %d bytes, Dump wrote %d", n.Size(), buf.Len())
			}
			dr, err := compression.NewReader(&buf, comp)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(dr)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, dump) {
				t.Errorf("served NAR (%d bytes) differs from nix-store --dump (%d bytes)", len(got), len(dump))
			}
			other := sha256.Sum256([]byte("other"))
			h, _ := storepath.NewHash(storepath.SHA256, other[:])
			wrong, _ := cache.NarFileName(nixstore.NARURL(p, h, ".zst"))
			if _, err := st.OpenNAR(ctx, wrong); !errors.Is(err, cache.ErrNotFound) {
				t.Errorf("a NAR URL with another NAR hash: %v, want ErrNotFound", err)
			}
			// Changed on disk behind Nix's back: the dump says so.
			if err := os.WriteFile(p.String(), []byte("rotten"), 0o444); err != nil {
				t.Fatal(err)
			}
			if n, err := st.OpenNAR(ctx, name); err != nil {
				t.Fatal(err)
			} else if err := n.Dump(io.Discard); !errors.Is(err, cache.ErrCorrupt) {
				t.Errorf("dump of a path changed on disk: %v, want ErrCorrupt", err)
			}
			f.n.Run(t, "nix-store", "--delete", p.String())
			if _, err := st.OpenNAR(ctx, name); !errors.Is(err, cache.ErrNotFound) {
				t.Errorf("the NAR of a deleted path: %v, want ErrNotFound", err)
			}
		})
	}
}

// TestFlatFile finds flat fixed-output paths by the hash of their file,
// also one added after the first scan, and never a recursive one.
func TestFlatFile(t *testing.T) {
	f := newFixture(t)
	st := f.open(t, "")
	ctx := t.Context()
	add := func(content string, recursive bool) (storepath.Path, storepath.Hash) {
		file := filepath.Join(t.TempDir(), "source.tar.gz")
		if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		args := []string{"--add-fixed", "sha256", file}
		if recursive {
			args = []string{"--add-fixed", "--recursive", "sha256", file}
		}
		p, err := f.n.StoreDir.Parse(f.n.Run(t, "nix-store", args...))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256([]byte(content))
		h, _ := storepath.NewHash(storepath.SHA256, sum[:])
		return p, h
	}
	first, firstHash := add("first source", false)
	_, recHash := add("recursive source", true)
	if got, err := st.FlatFile(ctx, firstHash); err != nil || got != first {
		t.Errorf("FlatFile(first) = %s, %v; want %s", got, err, first)
	}
	if _, err := st.FlatFile(ctx, recHash); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("FlatFile of a recursive path's file: %v, want ErrNotFound", err)
	}
	second, secondHash := add("second source", false)
	if got, err := st.FlatFile(ctx, secondHash); err != nil || got != second {
		t.Errorf("FlatFile(second, added after a scan) = %s, %v; want %s", got, err, second)
	}
	f.n.Run(t, "nix-store", "--delete", first.String())
	if _, err := st.FlatFile(ctx, firstHash); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("FlatFile of a deleted path: %v, want ErrNotFound", err)
	}
}
