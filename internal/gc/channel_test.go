package gc_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/channel"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/gc"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// channelBundle writes a signed runtime bundle of two paths named after
// salt, with bases, carrying the channels named.
func channelBundle(t *testing.T, sk signing.SecretKey, salt string, created time.Time, bases []bundle.Base, channels ...string) string {
	t.Helper()
	return modeBundle(t, sk, salt, created, role.ModeRuntime, bases, channels...)
}

// modeBundle is channelBundle in mode.
func modeBundle(t *testing.T, sk signing.SecretKey, salt string, created time.Time, mode role.Mode, bases []bundle.Base, channels ...string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), salt)
	w, err := bundle.NewDirWriter(out, storepath.DefaultDir, bundle.WriterOptions{Key: &sk, Compression: "none"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		p, err := storepath.DefaultDir.Base(fmt.Sprintf("%031d%d-%s", i, len(salt), salt))
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		nw := nar.NewWriter(&buf)
		content := []byte(salt + "\n")
		nw.WriteHeader(&nar.Header{Path: "/", Type: nar.TypeRegular, Size: int64(len(content))})
		nw.Write(content)
		if err := nw.Close(); err != nil {
			t.Fatal(err)
		}
		if err := w.AddNAR(context.Background(), p, &buf, bundle.PathMeta{Roles: role.Runtime}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range channels {
		src := filepath.Join(t.TempDir(), name)
		os.MkdirAll(src, 0o755)
		os.WriteFile(filepath.Join(src, "default.nix"), []byte("{ ... }: { salt = \""+salt+"\"; }\n"), 0o644)
		var tarball bytes.Buffer
		if err := channel.FromDir(context.Background(), &tarball, src, name, compression.WriterOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := w.AddChannel(name, src, &tarball); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(context.Background(), bundle.ManifestHeader{Tool: "test", Created: created, Mode: mode, Bases: bases}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestChannels: a channel lives as long as the record of the bundle that
// installed it. gc removes it with that record (its record first, then
// its tarball), keeps a channel a kept bundle installed, and removes a
// tarball no record names.
func TestChannels(t *testing.T) {
	ctx := t.Context()
	sk, pk, _ := signing.Generate("gc-channels-1")
	keys := signing.NewKeyring(pk)
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	old := channelBundle(t, sk, "old", t0, nil, "nixpkgs", "world")
	newer := channelBundle(t, sk, "newer", t0.Add(time.Hour), nil, "world")
	last := channelBundle(t, sk, "last", t0.Add(2*time.Hour), nil)
	cacheDir := filepath.Join(t.TempDir(), "cache")
	for _, b := range []string{old, newer, last} {
		if _, err := bundle.Import(ctx, b, cacheDir, bundle.ImportOptions{Keys: keys}); err != nil {
			t.Fatal(err)
		}
	}
	// A tarball without its record, as an import killed between the
	// two leaves it.
	orphan := filepath.Join(cacheDir, filepath.FromSlash(channel.File("orphan")))
	os.MkdirAll(filepath.Dir(orphan), 0o755)
	os.WriteFile(orphan, []byte("not even a tarball"), 0o644)

	installed := func() []string {
		var names []string
		for _, name := range []string{"nixpkgs", "world", "orphan"} {
			_, errFile := os.Stat(filepath.Join(cacheDir, filepath.FromSlash(channel.File(name))))
			_, errRec := os.Stat(filepath.Join(cacheDir, "nix-airgap", "channels", name+".json"))
			if errFile == nil || errRec == nil {
				names = append(names, name)
			}
		}
		return names
	}
	collect := func(keep int) []string {
		t.Helper()
		rep, err := gc.Collect(ctx, cacheDir, gc.Options{Roots: gc.Roots{KeepBundles: keep}, Grace: -1})
		if err != nil {
			t.Fatalf("gc --keep-bundles %d: %v", keep, err)
		}
		return rep.Removed.Channels
	}

	// Every bundle kept: only the orphan goes.
	if got := collect(3); !slices.Equal(got, []string{"orphan"}) {
		t.Errorf("keeping every bundle, gc removed channels %q; want the orphan only", got)
	}
	// The oldest bundle's record goes, and its nixpkgs with it; world
	// came from the newer bundle, kept.
	if got := collect(2); !slices.Equal(got, []string{"nixpkgs"}) {
		t.Errorf("keeping 2 bundles, gc removed channels %q; want nixpkgs", got)
	}
	if got := installed(); !slices.Equal(got, []string{"world"}) {
		t.Errorf("channels left %q, want world", got)
	}
	if got := collect(1); !slices.Equal(got, []string{"world"}) {
		t.Errorf("keeping 1 bundle, gc removed channels %q; want world", got)
	}
	if got := installed(); len(got) != 0 {
		t.Errorf("channels left %q, want none", got)
	}
	inv, err := bundle.InventoryCache(ctx, cacheDir, "test")
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Channels) != 0 {
		t.Errorf("the inventory still lists channels %+v", inv.Channels)
	}
	if _, err := bundle.Verify(ctx, cacheDir, bundle.VerifyOptions{Keys: keys}); err != nil {
		t.Errorf("verify the collected cache: %v", err)
	}
}

// TestChannelsOfBases: a delta that left a channel out as unchanged
// since its base names it on that base, and gc keeps the channel while
// the delta is kept, though the record of the base that installed it
// goes; once no kept bundle needs it, it goes too.
func TestChannelsOfBases(t *testing.T) {
	ctx := t.Context()
	sk, pk, _ := signing.Generate("gc-channels-1")
	keys := signing.NewKeyring(pk)
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	base := channelBundle(t, sk, "base", t0, nil, "nixpkgs")
	data, err := os.ReadFile(filepath.Join(base, bundle.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	delta := channelBundle(t, sk, "delta", t0.Add(time.Hour), []bundle.Base{{ID: bundle.ID(data), Created: t0, Paths: 2, Channels: []string{"nixpkgs"}}})
	last := channelBundle(t, sk, "last", t0.Add(2*time.Hour), nil)
	cacheDir := filepath.Join(t.TempDir(), "cache")
	collect := func(keep int) *gc.Report {
		t.Helper()
		rep, err := gc.Collect(ctx, cacheDir, gc.Options{Roots: gc.Roots{KeepBundles: keep}, Grace: -1})
		if err != nil {
			t.Fatalf("gc --keep-bundles %d: %v", keep, err)
		}
		return rep
	}
	tarball := filepath.Join(cacheDir, filepath.FromSlash(channel.File("nixpkgs")))
	for _, b := range []string{base, delta} {
		if _, err := bundle.Import(ctx, b, cacheDir, bundle.ImportOptions{Keys: keys}); err != nil {
			t.Fatal(err)
		}
	}
	// Twice: the second run finds the installer's record already gone.
	for i := range 2 {
		rep := collect(1)
		if len(rep.Removed.Channels) != 0 || i == 0 && rep.Removed.Records != 1 {
			t.Errorf("keeping the delta, gc removed channels %q and %d records; want none and the base's", rep.Removed.Channels, rep.Removed.Records)
		}
		if _, err := os.Stat(tarball); err != nil {
			t.Errorf("keeping the delta: %v", err)
		}
	}
	if _, err := bundle.Import(ctx, last, cacheDir, bundle.ImportOptions{Keys: keys}); err != nil {
		t.Fatal(err)
	}
	if rep := collect(1); !slices.Equal(rep.Removed.Channels, []string{"nixpkgs"}) {
		t.Errorf("keeping a bundle without channels, gc removed channels %q; want nixpkgs", rep.Removed.Channels)
	}
	if _, err := os.Stat(tarball); !os.IsNotExist(err) {
		t.Errorf("the channel no kept bundle needs is still there: %v", err)
	}
}

// A delta imported into a cache that never had its base (import goes by
// content) says that the channel it left to the base is not there.
func TestChannelOfAbsentBase(t *testing.T) {
	ctx := t.Context()
	sk, pk, _ := signing.Generate("gc-channels-1")
	keys := signing.NewKeyring(pk)
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	baseID := storepath.Hash{Algo: storepath.SHA256, Digest: make([]byte, 32)}
	delta := channelBundle(t, sk, "delta", t0, []bundle.Base{{ID: baseID, Created: t0, Channels: []string{"nixpkgs"}}}, "other")
	rep, err := bundle.Import(ctx, delta, filepath.Join(t.TempDir(), "cache"), bundle.ImportOptions{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	want := []bundle.ChannelResult{
		{Name: "other", Installed: true},
		{Name: "nixpkgs", Absent: true, Base: baseID},
	}
	if diff := cmp.Diff(want, rep.Channels); diff != "" {
		t.Errorf("import's channels (-want +got):\n%s", diff)
	}
}

// TestChannelUnreadable: a channel tarball gc cannot stat (a symlink
// loop: ELOOP, even for root) stops gc, naming it, before anything is
// removed: taken as absent, its record would go, reported removed, and
// the tarball stay.
func TestChannelUnreadable(t *testing.T) {
	ctx := t.Context()
	sk, pk, _ := signing.Generate("gc-channels-1")
	keys := signing.NewKeyring(pk)
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	cacheDir := filepath.Join(t.TempDir(), "cache")
	for _, b := range []string{channelBundle(t, sk, "old", t0, nil, "nixpkgs"), channelBundle(t, sk, "last", t0.Add(time.Hour), nil)} {
		if _, err := bundle.Import(ctx, b, cacheDir, bundle.ImportOptions{Keys: keys}); err != nil {
			t.Fatal(err)
		}
	}
	tarball := filepath.Join(cacheDir, filepath.FromSlash(channel.File("nixpkgs")))
	if err := os.Remove(tarball); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Base(tarball), tarball); err != nil {
		t.Fatal(err)
	}
	record := filepath.Join(cacheDir, "nix-airgap", "channels", "nixpkgs.json")
	rep, err := gc.Collect(ctx, cacheDir, gc.Options{Roots: gc.Roots{KeepBundles: 1}, Grace: -1})
	if err == nil || !strings.Contains(err.Error(), tarball) || !strings.Contains(err.Error(), "too many levels of symbolic links") {
		var removed []string
		if rep != nil {
			removed = rep.Removed.Channels
		}
		t.Errorf("gc with the tarball %s unreadable: %v (removed channels %v), want an error naming it", tarball, err, removed)
	}
	if _, err := os.Stat(record); err != nil {
		t.Errorf("the channel's record: %v, want it left", err)
	}
}

// TestChannelRemovalWarns: a channel gc removes (or, with --dry-run,
// would remove) is named in a warning that says clients' nix-channel
// --update fails until a bundle carrying it is imported, not only counted
// in the summary; keeping it, gc warns of nothing.
func TestChannelRemovalWarns(t *testing.T) {
	ctx := t.Context()
	sk, pk, _ := signing.Generate("gc-channels-1")
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	old := channelBundle(t, sk, "old", t0, nil, "nixpkgs")
	last := channelBundle(t, sk, "last", t0.Add(time.Hour), nil)
	cacheDir := filepath.Join(t.TempDir(), "cache")
	for _, b := range []string{old, last} {
		if _, err := bundle.Import(ctx, b, cacheDir, bundle.ImportOptions{Keys: signing.NewKeyring(pk)}); err != nil {
			t.Fatal(err)
		}
	}
	const until = "clients' nix-channel --update %s fail until a bundle carrying it is imported"
	for _, tt := range []struct {
		keep   int
		dryRun bool
		want   []string
	}{
		{2, false, []string{}},
		{1, true, []string{"would remove channel nixpkgs, which no kept bundle carries: " + fmt.Sprintf(until, "would")}},
		{1, false, []string{"removed channel nixpkgs, which no kept bundle carries: " + fmt.Sprintf(until, "will")}},
	} {
		rep, err := gc.Collect(ctx, cacheDir, gc.Options{Roots: gc.Roots{KeepBundles: tt.keep}, Grace: -1, DryRun: tt.dryRun})
		if err != nil {
			t.Fatalf("gc --keep-bundles %d: %v", tt.keep, err)
		}
		if diff := cmp.Diff(tt.want, rep.Warnings); diff != "" {
			t.Errorf("gc --keep-bundles %d, dry run %v: warnings (-want +got):\n%s", tt.keep, tt.dryRun, diff)
		}
	}
}
