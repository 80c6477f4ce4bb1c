package pack_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io/fs"
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
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/pack"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/world"
)

// TestChannel is issue 14's channel done-when. The connected side packs
// the test world's nixpkgs-shaped channel as <nixpkgs> (its NIX_PATH
// resolving it) with its hello, and a second channel from a .tar.gz URL.
// A newer bundle's channel replaces the older; an older import after it
// does not. Offline, against serve, stock Nix subscribes with nix-channel,
// nix-build '<nixpkgs>' -A hello substitutes with nothing built, and
// nix-instantiate -I nixpkgs=URL/channels/nixpkgs/nixexprs.tar.xz
// evaluates the newer channel.
func TestChannel(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	tmp := t.TempDir()
	keys := signing.NewKeyring(f.key.Public())
	opts := plan.Options{Mode: role.ModeSources}
	helloDrv := f.n.Run(t, "nix-instantiate", f.w.File, "-A", "hello")

	// The world's channel as a newer one would have it: another version.
	newer := filepath.Join(tmp, "newer")
	copyChannel(t, f.w.Channel, newer, "26.11")
	// And as a tarball on the internet, in another compression.
	f.inet.Add("channels/world.tar.gz", tgzDir(t, f.w.Channel, "world-"+world.ChannelVersion))

	packWith := func(t *testing.T, out, nixPath string, since []string, channels ...pack.Channel) *pack.Result {
		t.Helper()
		runner := &nixcli.Runner{Env: withEnv(f.n.Env, "NIX_PATH", nixPath)}
		p := &pack.Packer{Planner: &plan.Planner{Nix: runner, StoreDir: f.n.StoreDir, Jobs: 4}, Log: testLogger(t)}
		targets, err := plan.ParseTargets(f.n.StoreDir, plan.Args{File: "<nixpkgs>", Attrs: []string{"hello"}})
		if err != nil {
			t.Fatal(err)
		}
		res, err := p.Pack(ctx, targets, pack.Options{Options: opts, Out: out, Key: &f.key, Channels: channels, Since: since})
		if err != nil {
			t.Fatalf("pack %s: %v", out, err)
		}
		return res
	}
	older := filepath.Join(tmp, "older")
	chans := []pack.Channel{{Name: "nixpkgs", Source: "<nixpkgs>"}, {Name: "world", Source: f.inet.URL + "/channels/world.tar.gz"}}
	res := packWith(t, older, "nixpkgs="+f.w.Channel, nil, chans...)
	if diff := cmp.Diff([]bundle.Channel{{Name: "nixpkgs", Source: "<nixpkgs>"}, {Name: "world", Source: f.inet.URL + "/channels/world.tar.gz"}}, res.Manifest.Channels); diff != "" {
		t.Errorf("channels (-want +got):\n%s", diff)
	}
	packed := map[string]bool{}
	for _, p := range res.Paths {
		packed[p.Path.String()] = true
	}
	for _, attr := range []string{"hello", "libgreet", "libbase", "src", "patch", "busybox"} {
		if !packed[f.outs[attr]] {
			t.Errorf("the channel's hello, packed in sources mode, lacks %s (%s)", attr, f.outs[attr])
		}
	}
	for _, name := range []string{"nixpkgs", "world"} {
		data := mustReadFile(t, filepath.Join(older, channel.File(name)))
		if top, err := channel.Check(bytes.NewReader(data)); err != nil || compression.Sniff(data) != compression.XZ {
			t.Errorf("channel %s: %q, %v; want an xz channel tarball", name, top, err)
		}
	}
	// Unchanged since a base, a channel is not carried again.
	if res := packWith(t, filepath.Join(tmp, "same"), "nixpkgs="+f.w.Channel, []string{filepath.Join(older, bundle.ManifestName)}, chans...); !slices.Equal(res.ChannelsInBases, []string{"nixpkgs", "world"}) || len(res.Manifest.Channels) != 0 {
		t.Errorf("packed since a bundle with the same channels: left out %q, carried %+v", res.ChannelsInBases, res.Manifest.Channels)
	}
	// Packed a second later at least: a manifest's time is to the second,
	// and of two bundles packed in the same one, the later import wins.
	time.Sleep(time.Until(res.Manifest.Created.Add(time.Second)))
	later := filepath.Join(tmp, "later")
	laterRes := packWith(t, later, "nixpkgs="+newer, nil, pack.Channel{Name: "nixpkgs", Source: newer})
	// A week on, the newest, imported while the client is subscribed.
	newest := filepath.Join(tmp, "newest")
	copyChannel(t, f.w.Channel, newest, "26.12")
	time.Sleep(time.Until(laterRes.Manifest.Created.Add(time.Second)))
	latest := filepath.Join(tmp, "latest")
	packWith(t, latest, "nixpkgs="+newest, nil, pack.Channel{Name: "nixpkgs", Source: newest})

	// The site imports the older, then the newer, then the older again.
	site := filepath.Join(tmp, "site")
	for _, b := range []string{older, later, older} {
		if _, err := bundle.Import(ctx, b, site, bundle.ImportOptions{Keys: keys}); err != nil {
			t.Fatalf("import %s: %v", b, err)
		}
	}
	if got, want := mustReadFile(t, filepath.Join(site, channel.File("nixpkgs"))), mustReadFile(t, filepath.Join(later, channel.File("nixpkgs"))); !bytes.Equal(got, want) {
		t.Error("the cache's nixpkgs is not the newer bundle's")
	}

	// Offline, a fresh client of serve.
	client, url := f.offline(t, site)
	// As a user without NIX_PATH: <nixpkgs> comes from nix-channel's
	// profile, by Nix's default search path.
	client.Env = withEnv(client.Env, "NIX_PATH", "")

	subscribe(t, client, url, "nixpkgs", "world")
	subst := []string{"--option", "substituters", url, "--option", "trusted-public-keys", f.key.Public().String(), "--option", "narinfo-cache-negative-ttl", "0"}
	cmd := client.Command(ctx, "nix-build", append([]string{"<nixpkgs>", "-A", "hello", "--no-out-link", "--max-jobs", "0"}, subst...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("nix-build '<nixpkgs>' -A hello: %v\n%s", err, stderr.String())
	}
	if got := strings.TrimSpace(stdout.String()); got != f.outs["hello"] || len(built(stderr.String())) > 0 {
		t.Errorf("nix-build '<nixpkgs>' -A hello = %s, built %v; want %s substituted", got, built(stderr.String()), f.outs["hello"])
	}
	version := `(import <%s> { }).lib.version`
	for name, want := range map[string]string{"nixpkgs": "26.11", "world": world.ChannelVersion} {
		if got := client.Run(t, "nix-instantiate", "--eval", "-E", strings.ReplaceAll(version, "%s", name)); got != `"`+want+`"` {
			t.Errorf("<%s> from nix-channel has version %s, want %q", name, got, want)
		}
	}

	// Without nix-channel: the NIX_PATH form, straight from serve.
	tarball := url + "/" + channel.File("nixpkgs")
	if drv := client.Run(t, "nix-instantiate", "<nixpkgs>", "-A", "hello", "-I", "nixpkgs="+tarball); drv != helloDrv {
		t.Errorf("nix-instantiate '<nixpkgs>' -A hello -I nixpkgs=%s = %s, want the world's %s", tarball, drv, helloDrv)
	}
	if got := client.Run(t, "nix-instantiate", "--eval", "-E", strings.ReplaceAll(version, "%s", "nixpkgs"), "-I", "nixpkgs="+tarball); got != `"26.11"` {
		t.Errorf("-I nixpkgs=%s: version %s, want the newer 26.11", tarball, got)
	}

	// The next import's channel reaches a subscribed client within the
	// hour, as client-config's notes say: with tarball-ttl 0.
	if _, err := bundle.Import(ctx, latest, site, bundle.ImportOptions{Keys: keys}); err != nil {
		t.Fatalf("import %s: %v", latest, err)
	}
	client.Run(t, "nix-channel", "--update", "--option", "tarball-ttl", "0")
	if got := client.Run(t, "nix-instantiate", "--eval", "-E", strings.ReplaceAll(version, "%s", "nixpkgs")); got != `"26.12"` {
		t.Errorf("<nixpkgs> after nix-channel --update --option tarball-ttl 0: version %s, want the newest 26.12", got)
	}
}

// subscribe adds serve's channels names at url to client's, by their
// names, and updates them: nix-channel --add, then --update.
func subscribe(t *testing.T, client *nixtest.Nix, url string, names ...string) {
	t.Helper()
	for _, name := range names {
		client.Run(t, "nix-channel", "--add", url+"/channels/"+name, name)
	}
	if out, err := client.Output(t.Context(), "nix-channel", "--update"); err != nil {
		t.Fatalf("nix-channel --update: %v\n%s", err, out)
	}
}

// withEnv returns env with key set to value, or unset when value is "".
func withEnv(env []string, key, value string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	if value != "" {
		out = append(out, key+"="+value)
	}
	return out
}

// copyChannel copies the channel tree src to dst with another .version.
func copyChannel(t *testing.T, src, dst, version string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dst, ".version"), []byte(version), 0o644); err != nil {
		t.Fatal(err)
	}
}

// tgzDir makes a .tar.gz of the tree dir under the top directory top.
func tgzDir(t *testing.T, dir, top string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		name := filepath.ToSlash(filepath.Join(top, rel))
		if d.IsDir() {
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755})
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data))}); err != nil {
			return err
		}
		_, err = tw.Write(data)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestChannelUnchangedSurvivesGC: a delta packed --since a base whose
// channel is unchanged leaves the channel out and names it on that base
// (bases[].channels). The site imports both, collects with
// gc --keep-bundles 1, which drops the base's record with its paths, and
// offline nix-channel --update against serve still gets the channel.
func TestChannelUnchangedSurvivesGC(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	tmp := t.TempDir()
	keys := signing.NewKeyring(f.key.Public())
	packAttr := func(out, attr string, since ...string) *pack.Result {
		t.Helper()
		targets, err := plan.ParseTargets(f.n.StoreDir, plan.Args{File: f.w.File, Attrs: []string{attr}})
		if err != nil {
			t.Fatal(err)
		}
		return f.pack(t, targets, pack.Options{Options: plan.Options{Mode: role.ModeRuntime}, Out: out, Since: since,
			Channels: []pack.Channel{{Name: "nixpkgs", Source: f.w.Channel}}})
	}
	// The base and the delta share no path, so that gc drops the base's
	// record, the record of the bundle that installed the channel.
	base := filepath.Join(tmp, "base")
	packAttr(base, "busybox")
	delta := filepath.Join(tmp, "delta")
	res := packAttr(delta, "patch", base)
	if len(res.Manifest.Channels) != 0 || len(res.Manifest.Bases) != 1 || !slices.Equal(res.Manifest.Bases[0].Channels, []string{"nixpkgs"}) {
		t.Fatalf("delta with the base's channel: carries %+v, bases %+v; want none carried, nixpkgs named on its base", res.Manifest.Channels, res.Manifest.Bases)
	}
	site := filepath.Join(tmp, "site")
	for _, b := range []string{base, delta} {
		if _, err := bundle.Import(ctx, b, site, bundle.ImportOptions{Keys: keys}); err != nil {
			t.Fatalf("import %s: %v", b, err)
		}
	}
	rep, err := gc.Collect(ctx, site, gc.Options{Roots: gc.Roots{KeepBundles: 1}, Grace: -1})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Removed.Records != 1 || !slices.Equal(rep.RemovedPaths, []string{f.outs["busybox"]}) || len(rep.Removed.Channels) != 0 {
		t.Fatalf("gc --keep-bundles 1 removed %d records, paths %q, channels %q; want the base's record, its %s, and no channel", rep.Removed.Records, rep.RemovedPaths, rep.Removed.Channels, f.outs["busybox"])
	}
	if got, want := mustReadFile(t, filepath.Join(site, channel.File("nixpkgs"))), mustReadFile(t, filepath.Join(base, channel.File("nixpkgs"))); !bytes.Equal(got, want) {
		t.Fatal("after gc, the cache's nixpkgs is not the base's")
	}
	if _, err := bundle.Verify(ctx, site, bundle.VerifyOptions{Keys: keys}); err != nil {
		t.Errorf("verify the collected cache: %v", err)
	}

	client, url := f.offline(t, site)
	client.Env = withEnv(client.Env, "NIX_PATH", "")
	subscribe(t, client, url, "nixpkgs")
	if got := client.Run(t, "nix-instantiate", "--eval", "-E", "(import <nixpkgs> { }).lib.version"); got != `"`+world.ChannelVersion+`"` {
		t.Errorf("<nixpkgs> from nix-channel after gc has version %s, want %q", got, world.ChannelVersion)
	}
}

// TestChannelMissingFailsFirst: a channel whose source is not there, a
// <NAME> the local Nix does not find or a missing file, fails the pack
// before it plans, builds or writes anything, not after every path is
// copied.
func TestChannelMissingFailsFirst(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	dir := t.TempDir()
	file := filepath.Join(dir, "default.nix")
	if err := os.WriteFile(file, []byte(nixtest.HelloNix), 0o644); err != nil {
		t.Fatal(err)
	}
	targets, err := plan.ParseTargets(n.StoreDir, plan.Args{File: file, Attrs: []string{"hello"}})
	if err != nil {
		t.Fatal(err)
	}
	runner := &nixcli.Runner{Env: n.Env}
	p := &pack.Packer{Planner: &plan.Planner{Nix: runner, StoreDir: n.StoreDir, Jobs: 4}, Log: testLogger(t)}
	for _, tt := range []struct{ source, want string }{
		{"<nosuchchannel>", "pack: channel nixpkgs: "},
		{filepath.Join(dir, "missing.tar.xz"), "pack: channel nixpkgs: stat " + filepath.Join(dir, "missing.tar.xz") + ": no such file or directory"},
	} {
		out := filepath.Join(t.TempDir(), "bundle")
		_, err := p.Pack(t.Context(), targets, pack.Options{Out: out, Channels: []pack.Channel{{Name: "nixpkgs", Source: tt.source}}})
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) || !errors.As(err, new(*pack.ChannelError)) {
			t.Errorf("pack --channel nixpkgs=%s: %v, want a *pack.ChannelError starting %q", tt.source, err, tt.want)
		}
		if _, err := os.Lstat(out); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("pack --channel nixpkgs=%s left %s (%v), want nothing written", tt.source, out, err)
		}
	}
	// Nothing was evaluated: the store holds no .drv of hello.
	drvs, _ := filepath.Glob(filepath.Join(string(n.StoreDir), "*-hello-2.12.drv"))
	if len(drvs) != 0 {
		t.Errorf("pack with a missing channel evaluated the targets first: %v", drvs)
	}
}
