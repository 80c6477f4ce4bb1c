package bundle

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

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
