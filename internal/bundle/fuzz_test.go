package bundle

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/channel"
	"github.com/nix-airgap/nix-airgap/internal/storage"
)

// FuzzParseVolumeSize parses --volume-size values. A size it takes is at
// least a byte and at most half of int64 (so that sums of volumes do not
// overflow), and reads back the same from its digits alone or with "B";
// an error quotes the value.
func FuzzParseVolumeSize(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseVolumeSize(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), fmt.Sprintf("volume size %q: ", s)) {
				t.Fatalf("ParseVolumeSize(%q): error %q does not start with the value", s, err)
			}
			return
		}
		if n < 1 || n > 1<<62-1 {
			t.Fatalf("ParseVolumeSize(%q) = %d, out of range", s, n)
		}
		for _, again := range []string{strconv.FormatInt(n, 10), strconv.FormatInt(n, 10) + "B"} {
			if m, err := ParseVolumeSize(again); err != nil || m != n {
				t.Fatalf("ParseVolumeSize(%q) = %d, but ParseVolumeSize(%q) = %d, %v", s, n, again, m, err)
			}
		}
	})
}

// FuzzParseSigs parses manifest.json.sig. What it takes writes back, a
// line per signature, to the same signatures; errors wrap ErrCorrupt and
// name the file.
func FuzzParseSigs(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		sigs, err := ParseSigs(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) || !strings.HasPrefix(err.Error(), "parse "+SigName) {
				t.Fatalf("ParseSigs: error %q: want ErrCorrupt naming %s", err, SigName)
			}
			return
		}
		var b bytes.Buffer
		for _, s := range sigs {
			if len(s.Sig) != 64 || s.KeyName == "" {
				t.Fatalf("ParseSigs gave %+v", s)
			}
			b.WriteString(s.String() + "\n")
		}
		again, err := ParseSigs(b.Bytes())
		if err != nil {
			t.Fatalf("ParseSigs of its own output %q: %v", b.Bytes(), err)
		}
		if diff := cmp.Diff(sigs, again); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
	})
}

// FuzzReadChannelRecords reads a cache's channel record,
// nix-airgap/channels/nixpkgs.json, as inventory does. A record it takes
// names its file's channel and carries a sha256, and the inventory it
// makes parses back; a record it refuses is ErrCorrupt naming the file.
func FuzzReadChannelRecords(f *testing.F) {
	dir := f.TempDir()
	b, err := storage.CreateDir(dir)
	if err != nil {
		f.Fatal(err)
	}
	defer b.Close()
	name := channelRecordDir + "/nixpkgs.json"
	if err := os.MkdirAll(filepath.Join(dir, channelRecordDir), 0o755); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		chs, err := readChannelRecords(context.Background(), b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) || !strings.HasPrefix(err.Error(), name+": ") {
				t.Fatalf("error %q: want ErrCorrupt naming %s", err, name)
			}
			return
		}
		if len(chs) != 1 || chs[0].Name != "nixpkgs" || len(chs[0].SHA256) != 32 || chs[0].Size < 0 || channel.CheckName(chs[0].Name) != nil {
			t.Fatalf("readChannelRecords = %+v", chs)
		}
		inv := &CacheInventory{Tool: "fuzz", Created: time.Unix(0, 0).UTC(), StoreDir: "/nix/store", Channels: chs}
		out, err := inv.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseCacheInventory(out)
		if err != nil {
			t.Fatalf("inventory of %q does not parse: %v", data, err)
		}
		if diff := cmp.Diff(chs, back.Channels); diff != "" {
			t.Fatalf("channels (-read +parsed):\n%s", diff)
		}
	})
}

// FuzzMergeRegistry merges a bundle's flake registry (in) into the one a
// cache holds (old, if exists), as import does. A merge that succeeds
// leaves a version 2 registry holding, for each "from" of in, in's last
// entry with it, and every entry of old whose "from" in has none; one
// that fails leaves the cache's file as it was.
func FuzzMergeRegistry(f *testing.F) {
	c, err := cache.CreateDir(filepath.Join(f.TempDir(), "cache"), "/nix/store", 40)
	if err != nil {
		f.Fatal(err)
	}
	defer c.Close()
	file := filepath.Join(c.String(), RegistryName)
	f.Fuzz(func(t *testing.T, old []byte, exists bool, in []byte) {
		os.Remove(file)
		if exists {
			if err := os.WriteFile(file, old, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		err := mergeRegistry(context.Background(), c, in)
		got, readErr := os.ReadFile(file)
		if err != nil {
			if exists && !bytes.Equal(got, old) || !exists && readErr == nil {
				t.Fatalf("a failed merge (%v) changed the cache's registry to %q", err, got)
			}
			return
		}
		var bundleReg, before, after registry
		if json.Unmarshal(in, &bundleReg) != nil {
			t.Fatalf("merged a bundle registry that does not parse: %q", in)
		}
		json.Unmarshal(old, &before)
		if err := json.Unmarshal(got, &after); err != nil || after.Version != 2 {
			t.Fatalf("merged registry %q: version %d, %v; want version 2", got, after.Version, err)
		}
		last := map[string]json.RawMessage{}
		for _, e := range bundleReg.Flakes {
			last[registryKey(e)] = e
		}
		want := slices.Collect(maps.Values(last))
		if exists {
			for _, e := range before.Flakes {
				if _, replaced := last[registryKey(e)]; !replaced {
					want = append(want, e)
				}
			}
		}
		// The same JSON value: Marshal escapes <, > and & in strings.
		same := func(a, b json.RawMessage) bool {
			var va, vb any
			return json.Unmarshal(a, &va) == nil && json.Unmarshal(b, &vb) == nil && cmp.Equal(va, vb)
		}
		for _, e := range want {
			if !slices.ContainsFunc(after.Flakes, func(a json.RawMessage) bool { return same(a, e) }) {
				t.Fatalf("merged registry %q lacks %s", got, e)
			}
		}
	})
}
