package pack

import (
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
)

// TestSummaryChannels checks that the summary says which channels the
// bundle carries, even when it carries no path: a channel may be all a
// pack brings.
func TestSummaryChannels(t *testing.T) {
	r := &Result{Manifest: &bundle.Manifest{Channels: []bundle.Channel{{Name: "nixpkgs", Source: "<nixpkgs>"}, {Name: "nixos", Source: "/src/nixos"}}}}
	s := r.Summary()
	var b strings.Builder
	if err := s.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "\n  channels: nixpkgs, nixos\n") {
		t.Errorf("summary of a bundle carrying two channels:\n%s\nwant them named", b.String())
	}
	if len(s.Channels) != 2 {
		t.Errorf("summary's channels = %q, want nixpkgs and nixos", s.Channels)
	}
}

// TestSummaryBundleSize: the bundle figure is every file of it, and its
// ratio says what it is of. On a small closure the narinfos and manifest
// outweigh the NARs, and "bundle 175 B (175%)" read as a bad compressor.
func TestSummaryBundleSize(t *testing.T) {
	var b strings.Builder
	if err := (Summary{NarBytes: 100, BundleBytes: 175}).WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if want := "NAR 100 B, bundle 175 B in all (175% of NAR)"; !strings.Contains(b.String(), want) {
		t.Errorf("summary:\n%s\nwant %q", b.String(), want)
	}
}

// TestSummaryVolumes: a set of one volume is named once, not "from A to A".
func TestSummaryVolumes(t *testing.T) {
	for _, tc := range []struct {
		vols []string
		want string
	}{
		{[]string{"/m/s.001.tar"}, "\n  volumes: 1 volume, /m/s.001.tar\n"},
		{[]string{"/m/s.001.tar", "/m/s.002.tar", "/m/s.003.tar"}, "\n  volumes: 3 volumes, /m/s.001.tar to /m/s.003.tar\n"},
	} {
		var b strings.Builder
		if err := (Summary{Volumes: tc.vols}).WriteText(&b); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), tc.want) {
			t.Errorf("summary:\n%s\nwant %q", b.String(), tc.want)
		}
	}
}

// TestSummaryReused: what an earlier pack's output gave is said of the
// sources, after them, not as one more of them.
func TestSummaryReused(t *testing.T) {
	var b strings.Builder
	if err := (Summary{Sources: map[string]int{SourceStore: 6, SourceBuild: 1}, Reused: 6}).WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if want := "\n  from:   store 6, build 1 (6 reused from an earlier pack's output)\n"; !strings.Contains(b.String(), want) {
		t.Errorf("summary:\n%s\nwant %q", b.String(), want)
	}
}
