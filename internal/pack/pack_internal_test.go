package pack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/derivation"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

func TestIsFlat(t *testing.T) {
	tests := []struct {
		ca   string
		want bool
	}{
		{"fixed:sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s", true},
		{"fixed:md5:1b8m03r63zqhnjf7l5wnldhh", true},
		{"fixed:r:sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s", false},
		{"text:sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := isFlat(tt.ca); got != tt.want {
			t.Errorf("isFlat(%q) = %v, want %v", tt.ca, got, tt.want)
		}
	}
}

func TestRegistryJSON(t *testing.T) {
	entries := []plan.RegistryEntry{{
		From: nixcli.FlakeRef{Attrs: map[string]any{"type": "indirect", "id": "nixpkgs"}},
		To:   nixcli.FlakeRef{Attrs: map[string]any{"type": "path", "path": "/s/abc-source", "narHash": "sha256-AAAA"}},
	}}
	got, err := registryJSON(entries)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"version":2,"flakes":[{"from":{"id":"nixpkgs","type":"indirect"},"to":{"narHash":"sha256-AAAA","path":"/s/abc-source","type":"path"}}]}
`
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("registry (-want +got):\n%s", diff)
	}
}

func TestRealiseArgs(t *testing.T) {
	dir := storepath.Dir("/s")
	p := func(s string) storepath.Path {
		sp, err := dir.Parse("/s/" + s)
		if err != nil {
			t.Fatal(err)
		}
		return sp
	}
	drv := p("00000000000000000000000000000000-a.drv")
	items := []*plan.Item{
		{Path: p("11111111111111111111111111111111-a"), DrvPath: drv},
		{Path: p("22222222222222222222222222222222-a-dev"), DrvPath: drv},
		{Path: p("33333333333333333333333333333333-b")},
	}
	got := realiseArgs(items)
	want := []storepath.Path{drv, items[2].Path}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("realiseArgs (-want +got):\n%s", diff)
	}
}

func TestBadOptions(t *testing.T) {
	dir := t.TempDir()
	tar := filepath.Join(t.TempDir(), "b.tar")
	if err := os.WriteFile(tar, []byte("a bundle\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	set := filepath.Join(filepath.Dir(tar), "set.tar")
	if err := os.WriteFile(filepath.Join(filepath.Dir(tar), "set.002.tar"), []byte("a volume\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &Packer{Planner: &plan.Planner{StoreDir: "/s"}}
	tests := []struct {
		name string
		opts Options
		want error
	}{
		{"no output", Options{}, ErrNoOutput},
		{"since is out", Options{Out: dir, Since: []string{dir}}, ErrSinceIsOut},
		{"since is out's manifest", Options{Out: dir, Since: []string{filepath.Join(dir, "manifest.json")}}, ErrSinceIsOut},
		{"since is out, a tar", Options{Out: tar, Since: []string{tar}}, ErrSinceIsOut},
		{"since is a volume of out's set", Options{Out: set, VolumeSize: 1 << 30, Since: []string{filepath.Join(filepath.Dir(set), "set.002.tar")}}, ErrSinceIsOut},
		{"missing base", Options{Out: filepath.Join(dir, "x"), Since: []string{filepath.Join(dir, "nope")}}, os.ErrNotExist},
		{"out is a tar that is no bundle", Options{Out: tar}, ErrOutTaken},
		{"out is a file where a directory belongs", Options{Out: filepath.Join(filepath.Dir(set), "set.002.tar", "b")}, ErrOutUnusable},
		{"out names a compressed tar", Options{Out: filepath.Join(dir, "b.tar.zst")}, ErrOutUnusable},
		{"out's parent is missing", Options{Out: filepath.Join(dir, "no", "b")}, ErrOutUnusable},
		{"out's directory is missing, a tar", Options{Out: filepath.Join(dir, "no", "b.tar")}, ErrOutUnusable},
	}
	for _, tt := range tests {
		_, err := p.Pack(t.Context(), nil, tt.opts)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: Pack = %v, want %v", tt.name, err, tt.want)
		}
	}
	if _, err := p.Pack(t.Context(), nil, Options{Out: dir, Compression: "lz4"}); err == nil {
		t.Error("Pack with compression lz4 succeeded")
	}
}

// TestOneCoreItems: a NAR is compressed on every core only when the
// smaller ones after it would leave the other jobs idle before it ends.
func TestOneCoreItems(t *testing.T) {
	tests := []struct {
		name  string
		jobs  int
		sizes []uint64 // sorted, largest first
		want  []bool
	}{
		{"one big path", 2, []uint64{1 << 30, 100, 50, 50}, []bool{false, true, true, false}},
		{"bench closure", 2, []uint64{48 << 20, 40 << 20, 6 << 20, 6 << 20, 1}, []bool{true, false, true, false, false}},
		{"the last path", 2, []uint64{10, 10}, []bool{true, false}},
		{"three jobs", 3, []uint64{10, 10, 10, 10}, []bool{true, true, false, false}},
		{"one job", 1, []uint64{10, 10, 10}, []bool{false, false, false}},
	}
	for _, tt := range tests {
		c := &copier{p: &Packer{Jobs: tt.jobs}}
		items := make([]*plan.Item, len(tt.sizes))
		li := make([]int, len(tt.sizes))
		for i, s := range tt.sizes {
			items[i], li[i] = &plan.Item{NarSize: s}, i
		}
		one := c.oneCoreItems(items, li)
		got := make([]bool, len(items))
		for i, it := range items {
			got[i] = one[it]
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s: one core (-want +got):\n%s", tt.name, diff)
		}
	}
}

// TestKeyInFlakes: a secret key in the source of a flake in a local
// directory is found, in a file of its own or quoted in another, and
// refused without printing it; the sources of fetched flakes, and local
// ones without the key, pass.
func TestKeyInFlakes(t *testing.T) {
	sk, _, err := signing.Generate("pack.site-1")
	if err != nil {
		t.Fatal(err)
	}
	_, secret, _ := strings.Cut(sk.String(), ":")
	dir := storepath.Dir(t.TempDir())
	source := func(name string, files map[string]string) storepath.Path {
		p, err := dir.Parse(string(dir) + "/0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-" + name)
		if err != nil {
			t.Fatal(err)
		}
		for f, content := range files {
			file := filepath.Join(p.String(), f)
			os.MkdirAll(filepath.Dir(file), 0o755)
			if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
	item := func(p storepath.Path, url string) *plan.Item {
		return &plan.Item{Path: p, Roles: role.FlakeInput, Fetch: &derivation.Fetch{URLs: []string{url}}}
	}
	clean := source("clean", map[string]string{"flake.nix": "{ outputs = _: { }; }\n"})
	withKey := source("with-key", map[string]string{"flake.nix": "{ }\n", "keys/pack.sec": sk.String()})
	quoted := source("quoted", map[string]string{"notes.txt": "the key is " + secret + ", keep it safe\n"})
	for _, tt := range []struct {
		name  string
		items []*plan.Item
		file  string // the file named, "" for none
	}{
		{"a local flake without the key", []*plan.Item{item(clean, "path:/home/site")}, ""},
		{"the key in a local flake", []*plan.Item{item(clean, "path:/home/site"), item(withKey, "git+file:///home/site?rev=0123")}, "keys/pack.sec"},
		{"the key quoted in a local flake", []*plan.Item{item(quoted, "path:/home/site")}, "notes.txt"},
		{"the key in a fetched flake", []*plan.Item{item(withKey, "github:site/site/0123")}, ""},
		{"a source not on this file system", []*plan.Item{item(source("elsewhere", nil), "path:/home/site"), item(withKey, "path:/home/site")}, "keys/pack.sec"},
	} {
		err := keyInFlakes(t.Context(), tt.items, &sk)
		switch {
		case tt.file == "" && err != nil:
			t.Errorf("%s: %v, want no error", tt.name, err)
		case tt.file != "" && (!errors.Is(err, ErrKeyInFlake) || !strings.Contains(fmt.Sprint(err), tt.file+" in the flake source ")):
			t.Errorf("%s: %v, want ErrKeyInFlake naming %s", tt.name, err, tt.file)
		case err != nil && strings.Contains(err.Error(), secret):
			t.Errorf("%s: the error prints the key", tt.name)
		}
	}
	// Ctrl-C stops the search of a large source.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := keyInFlakes(ctx, []*plan.Item{item(clean, "path:/home/site")}, &sk); !errors.Is(err, context.Canceled) {
		t.Errorf("a search cancelled: %v, want context.Canceled", err)
	}
}

// TestReadBackNoVolumes: a volume writer that reports no volumes is an
// error of readBack, not a fall through to the tar form's byte counter,
// which a volume output has not (that panicked once).
func TestReadBackNoVolumes(t *testing.T) {
	w, err := bundle.NewVolumeWriter(filepath.Join(t.TempDir(), "b.tar"), bundle.MinVolumeSize, storepath.DefaultDir, bundle.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	res := Result{Manifest: &bundle.Manifest{}}
	if err := res.readBack(&output{w: w}); err == nil {
		t.Errorf("readBack of a volume output with no volumes: no error, result %+v", res)
	}
}
