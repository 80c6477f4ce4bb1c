package pack_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/check"
	"github.com/nix-airgap/nix-airgap/internal/pack"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
)

// TestVolumes is issue 14's volume done-when: the world's system and
// sources packed with a tiny volume size, so that the bootstrap tools'
// NAR spans several volumes. Every volume verifies alone; a flipped byte
// is named by volume; imported volume by volume, last first, each in a
// run of its own, the cache serves stock Nix the system, substituted,
// and a deep change, rebuilt from the bundled sources.
func TestVolumes(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	keys := signing.NewKeyring(f.key.Public())
	const size = 32 << 10
	out := filepath.Join(t.TempDir(), "world.tar")
	res := f.pack(t, f.targets(t), pack.Options{Options: plan.Options{Mode: role.ModeSources}, Out: out, VolumeSize: size})
	vols := res.Volumes
	if len(vols) < 3 {
		t.Fatalf("%d volumes, want several", len(vols))
	}
	t.Logf("%d volumes of at most %d bytes", len(vols), size)
	spans := map[string]int{}
	for _, v := range res.Manifest.Volumes {
		for _, p := range v.Pieces {
			spans[p.File]++
		}
	}
	if !slices.ContainsFunc(slices.Collect(mapValues(spans)), func(n int) bool { return n >= 3 }) {
		t.Errorf("pieces per split file %v: want one NAR across three volumes or more", spans)
	}

	// pack --check of a set: its narinfos are whole in one volume or
	// another.
	checked, err := check.CheckBundle(ctx, res.Plan, vols, nil, f.packer.Planner.Nix, nil)
	if err != nil || checked.Err() != nil {
		t.Errorf("check the volumes: %v, %v", err, checked.Err())
	}
	for i, v := range vols {
		fi, err := os.Stat(v)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > size {
			t.Errorf("%s: %d bytes, more than the volume size", filepath.Base(v), fi.Size())
		}
		rep, err := bundle.Verify(ctx, v, bundle.VerifyOptions{Keys: keys, Deep: true})
		if err != nil {
			t.Fatalf("verify %s alone: %v", filepath.Base(v), err)
		}
		if !slices.Equal(rep.Volumes.Given, []int{i + 1}) {
			t.Errorf("verify %s: given %v", filepath.Base(v), rep.Volumes.Given)
		}
	}

	// A flipped byte, in the data of the volume's first file.
	for _, i := range []int{0, len(vols) / 2} {
		data, err := os.ReadFile(vols[i])
		if err != nil {
			t.Fatal(err)
		}
		data[1600] ^= 0x40
		bad := filepath.Join(t.TempDir(), filepath.Base(vols[i]))
		if err := os.WriteFile(bad, data, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err = bundle.Verify(ctx, bad, bundle.VerifyOptions{Keys: keys})
		var ve *bundle.VerifyError
		if !asVerifyError(err, &ve) || !slices.ContainsFunc(ve.Problems, func(p bundle.Problem) bool {
			return strings.HasPrefix(p.File, filepath.Base(bad)+":")
		}) {
			t.Errorf("volume %d with a flipped byte: %v; want a problem naming %s", i+1, err, filepath.Base(bad))
		}
	}

	// Volume by volume, last first, each import a run of its own.
	site := filepath.Join(t.TempDir(), "site")
	for i := len(vols) - 1; i >= 0; i-- {
		rep, err := bundle.Import(ctx, vols[i], site, bundle.ImportOptions{Keys: keys})
		if err != nil {
			t.Fatalf("import volume %d: %v", i+1, err)
		}
		if i > 0 && !slices.Equal(rep.Volumes.Missing, seq(1, i)) {
			t.Errorf("after volume %d: missing %v, want 1..%d", i+1, rep.Volumes.Missing, i)
		}
		if i == 0 && (len(rep.Volumes.Missing) != 0 || !rep.Recorded) {
			t.Errorf("after the last volume: missing %v, recorded %v", rep.Volumes.Missing, rep.Recorded)
		}
	}
	if _, err := bundle.Verify(ctx, site, bundle.VerifyOptions{Keys: keys}); err != nil {
		t.Errorf("verify the cache: %v", err)
	}

	client, url := f.offline(t, site)
	w := f.w.On(client)

	got, stderr, err := offlineBuild(ctx, client, w, url, f.key.Public(), "--max-jobs", "0")
	if err != nil {
		t.Fatalf("the system from serve: %v\n%s", err, stderr)
	}
	if got != f.top || len(built(stderr)) > 0 {
		t.Errorf("the system: got %s, built %v; want %s substituted", got, built(stderr), f.top)
	}
	got, stderr, err = offlineBuild(ctx, client, w, url, f.key.Public(), w.Args("", "d2")...)
	if err != nil {
		t.Fatalf("a deep change from the bundled sources: %v\n%s", err, stderr)
	}
	if diff := cmp.Diff([]string{"cc-1.0", "demo-system", "hello-1.0", "libbase-1.0", "libgreet-1.0"}, built(stderr)); diff != "" {
		t.Errorf("deep change: built (-want +got):\n%s", diff)
	}
	if hello, err := client.Command(ctx, filepath.Join(got, "bin/hello")).Output(); err != nil || string(hello) != w.Greeting("", "d2") {
		t.Errorf("bin/hello = %q, %v", hello, err)
	}
}

func asVerifyError(err error, ve **bundle.VerifyError) bool {
	e, ok := err.(*bundle.VerifyError)
	if ok {
		*ve = e
	}
	return ok
}

func seq(from, to int) []int {
	var out []int
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func mapValues[K comparable, V any](m map[K]V) func(func(V) bool) {
	return func(yield func(V) bool) {
		for _, v := range m {
			if !yield(v) {
				return
			}
		}
	}
}
