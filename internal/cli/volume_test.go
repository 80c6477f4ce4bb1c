package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cli"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// writeVolumes writes a signed volume set of n paths, of growing sizes so
// that the last span volumes, each referring to the one before, and
// returns the volumes and the public key file.
func writeVolumes(t *testing.T, n int) ([]string, string) {
	t.Helper()
	sk, pk, _ := signing.Generate("cli-volumes-1")
	pubFile := filepath.Join(t.TempDir(), "key.pub")
	writeTestFile(t, pubFile, pk.String())
	w, err := bundle.NewVolumeWriter(filepath.Join(t.TempDir(), "set.tar"), 32<<10, "/nix/store", bundle.WriterOptions{Key: &sk, Compression: "none"})
	if err != nil {
		t.Fatal(err)
	}
	var prev []storepath.Path
	for i := range n {
		p, _ := storepath.Dir("/nix/store").Base(fmt.Sprintf("%032d-p%d", i, i))
		content := bytes.Repeat(fmt.Appendf(nil, "%d", i), 100+i*5000)
		var buf bytes.Buffer
		nw := nar.NewWriter(&buf)
		nw.WriteHeader(&nar.Header{Path: "/", Type: nar.TypeRegular, Size: int64(len(content))})
		nw.Write(content)
		nw.Close()
		if err := w.AddNAR(context.Background(), p, &buf, bundle.PathMeta{Roles: role.Runtime, References: prev}); err != nil {
			t.Fatal(err)
		}
		prev = []storepath.Path{p}
	}
	if err := w.Close(context.Background(), bundle.ManifestHeader{Tool: "test", Mode: role.ModeRuntime}); err != nil {
		t.Fatal(err)
	}
	return w.Volumes(), pubFile
}

func TestVolumeCommands(t *testing.T) {
	vols, pub := writeVolumes(t, 8)
	if len(vols) < 3 {
		t.Fatalf("%d volumes", len(vols))
	}
	code, stdout, stderr := run(t, "verify", vols[1], "--public-key", pub)
	// Nothing waits in verify: it says what it could not check whole.
	if code != 0 || !strings.Contains(stdout, fmt.Sprintf("volume 2 of %d given", len(vols))) || strings.Contains(stdout, "wait") ||
		!strings.Contains(stdout, "whole only with the other volumes") {
		t.Errorf("verify one volume: exit %d\n%s%s", code, stdout, stderr)
	}
	// It says how much of the paths it checked, not that it checked all.
	if !regexp.MustCompile(`: OK: [0-9] of 8 store paths whole(, [0-9] in part)? \(the other volumes hold the rest\), `).MatchString(stdout) {
		t.Errorf("verify one volume claims more than it checked:\n%s", stdout)
	}
	text := stdout
	code, stdout, stderr = run(t, "verify", vols[1], "--public-key", pub, "--json")
	checkJSONScheme(t, "verify", stdout)
	var rep struct {
		Paths    int
		Held     int
		Coverage *bundle.Coverage
		Volumes  *bundle.VolumeReport
	}
	if err := json.Unmarshal([]byte(stdout), &rep); code != 0 || err != nil || rep.Paths != 8 || rep.Coverage == nil ||
		rep.Coverage.WholePaths+rep.Coverage.PartPaths+rep.Coverage.AbsentPaths != 8 || rep.Coverage.WholePaths == 8 {
		t.Errorf("verify one volume --json: exit %d, %v\n%s%s", code, err, stdout, stderr)
	}
	// The paths not whole are those the volume lacks, in part or all:
	// not also the whole paths that refer to them, which held counts,
	// as an import would keep them waiting.
	if c := rep.Coverage; c != nil {
		notWhole := c.PartPaths + c.AbsentPaths
		if want := fmt.Sprintf("; %d paths are whole only with the other volumes\n", notWhole); !strings.Contains(text, want) || rep.Held <= notWhole {
			t.Errorf("verify one volume: want %q, and held %d above it (whole paths refer to the others):\n%s", want, rep.Held, text)
		}
	}
	// The volumes not given are named, in JSON and text.
	if rep.Volumes == nil || len(rep.Volumes.Missing) != len(vols)-1 || slices.Contains(rep.Volumes.Missing, 2) {
		t.Errorf("verify volume 2 of %d --json: volumes %+v, want every other volume missing", len(vols), rep.Volumes)
	}
	if _, stdout, _ := run(t, "verify", vols[1], "--public-key", pub); !strings.Contains(stdout, "; still missing: volumes 1, 3") {
		t.Errorf("verify volume 2 of %d does not name the volumes not given:\n%s", len(vols), stdout)
	}
	if _, stdout, _ := run(t, append([]string{"verify", "--public-key", pub}, vols[1:]...)...); !strings.Contains(stdout, "; still missing: volume 1;") {
		t.Errorf("verify volumes 2 to %d does not name volume 1 as missing:\n%s", len(vols), stdout)
	}
	code, stdout, stderr = run(t, append(append([]string{"verify"}, vols...), "--public-key", pub)...)
	if code != 0 || !strings.Contains(stdout, "OK: 8 store paths, ") {
		t.Errorf("verify the set: exit %d\n%s%s", code, stdout, stderr)
	}
	cacheDir := filepath.Join(t.TempDir(), "cache")
	code, stdout, stderr = run(t, "import", vols[len(vols)-1], "--cache", cacheDir, "--public-key", pub)
	// Which volumes were given is said once, with what is missing.
	if code != 0 || !strings.Contains(stdout, fmt.Sprintf("still missing: volumes 1-%d", len(vols)-1)) || strings.Count(stdout, fmt.Sprintf("of %d given", len(vols))) != 1 {
		t.Errorf("import the last volume: exit %d\n%s%s", code, stdout, stderr)
	}
	// As verify does, it says how many paths are whole, in the cache:
	// those it added, and those that wait for the other volumes. The
	// last volume's paths refer to the others': all of them wait; the
	// first volume's are whole.
	partial := regexp.MustCompile(`: OK: (\d+) of 8 store paths complete in the cache, (\d+) waits? for the other volumes, .*\n.*: (\d+) paths? added `)
	c1 := filepath.Join(t.TempDir(), "c1")
	for i, out := range map[int]string{len(vols): stdout, 1: runOut(t, "import", vols[0], "--cache", c1, "--public-key", pub)} {
		m := partial.FindStringSubmatch(out)
		if m == nil || m[1] != m[3] || (m[1] == "0") != (i == len(vols)) || m[2] == "0" || atoi(t, m[1])+atoi(t, m[2]) != 8 {
			t.Errorf("import volume %d alone: want how many paths it completed (as many as it added) and how many wait, 8 in all:\n%s", i, out)
		}
	}
	// A cache of half a set has no bundle record yet: its narinfos'
	// signatures, checked with the key given, say who signed it.
	code, stdout, stderr = run(t, "verify", c1, "--public-key", pub)
	if code != 0 || !regexp.MustCompile(`, signed by [^ ,]+\n`).MatchString(stdout) {
		t.Errorf("verify a cache of volume 1 alone: exit %d, want it signed by the key given\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = run(t, append(append([]string{"import"}, vols[:len(vols)-1]...), "--cache", cacheDir, "--public-key", pub)...)
	if code != 0 || !strings.Contains(stdout, ": OK: 8 store paths, ") || !strings.Contains(stdout, fmt.Sprintf("volume set complete: the cache holds everything in its %d volumes\n", len(vols))) {
		t.Errorf("import the others: exit %d\n%s%s", code, stdout, stderr)
	}
	// One volume of a set the cache has whole brings nothing new, and says
	// so without claiming the other volumes were given.
	code, stdout, stderr = run(t, "import", vols[0], "--cache", cacheDir, "--public-key", pub)
	if code != 0 || !strings.Contains(stdout, "0 paths added") || !strings.Contains(stdout, "the cache holds everything") {
		t.Errorf("import one volume again: exit %d\n%s%s", code, stdout, stderr)
	}
	code, _, stderr = run(t, "import", vols[0], vols[0], "--cache", filepath.Join(t.TempDir(), "c2"), "--public-key", pub)
	if code != cli.ExitCorrupt || !strings.Contains(stderr, "refused, the cache is unchanged") {
		t.Errorf("import a volume twice: exit %d\n%s", code, stderr)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"pack", ".#x", "--out", "set.tar", "--volume-size", "4X"}, "unknown unit"},
		{[]string{"pack", ".#x", "--out", "dir", "--volume-size", "4G"}, "give --out NAME.tar"},
	} {
		if code, _, stderr := run(t, tt.args...); code != cli.ExitUsage || !strings.Contains(stderr, tt.want) {
			t.Errorf("%q: exit %d, %s; want a usage error with %q", tt.args, code, stderr, tt.want)
		}
	}
}

// TestPackVolumeSizeTooSmall: a --volume-size that cannot hold the
// manifest every volume carries is a usage error that names the least
// size that does, and leaves no volume behind; that size works.
func TestPackVolumeSizeTooSmall(t *testing.T) {
	w, tmp, keyFile, _ := newKeyedWorld(t, "cli-volumes-2")
	dir := filepath.Join(tmp, "out")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "set.tar")
	pack := func(size string) (int, string) {
		code, _, stderr := run(t, "pack", "--file", w.File, "--attr", "toplevel", "--mode", "sources", "--secret-key", keyFile, "--out", out, "--volume-size", size, "--no-progress")
		return code, stderr
	}
	code, stderr := pack("16KiB")
	m := regexp.MustCompile(`volume size too small: .*; the least volume size that holds this bundle is \d+ bytes: --volume-size (\d+KiB)\n`).FindStringSubmatch(stderr)
	if code != cli.ExitUsage || m == nil || !strings.Contains(stderr, "Try 'nix-airgap pack --help'") {
		t.Fatalf("pack --volume-size 16KiB: exit %d, want %d and the least size that works\n%s", code, cli.ExitUsage, stderr)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) != 0 {
		t.Errorf("a refused volume size left %q", left)
	}
	if code, stderr := pack(m[1]); code != 0 {
		t.Errorf("pack --volume-size %s, the least it named: exit %d\n%s", m[1], code, stderr)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// runOut runs the command line, which must succeed, and returns its
// stdout.
func runOut(t *testing.T, args ...string) string {
	t.Helper()
	code, stdout, stderr := run(t, args...)
	if code != 0 {
		t.Fatalf("%q: exit %d\n%s", args, code, stderr)
	}
	return stdout
}

// TestVolumeSetByOutName: NAME.tar, the --out a volume set was packed to,
// names no file; verify, import, show and diff of it say which volumes
// pack wrote instead, and still exit 5. Another missing file gets no such
// hint.
func TestVolumeSetByOutName(t *testing.T) {
	vols, pub := writeVolumes(t, 8)
	out := filepath.Join(filepath.Dir(vols[0]), "set.tar")
	other := filepath.Join(filepath.Dir(vols[0]), "other.tar")
	cache := filepath.Join(t.TempDir(), "cache")
	for _, args := range [][]string{
		{"verify", out, "--public-key", pub},
		{"import", out, "--cache", cache, "--public-key", pub},
		{"show", out},
		{"diff", vols[0], out},
	} {
		code, _, stderr := run(t, args...)
		want := fmt.Sprintf("; pack --volume-size wrote %s as volumes, %s to %s (%s.*.tar)\n",
			out, vols[0], vols[len(vols)-1], strings.TrimSuffix(out, ".tar"))
		if code != cli.ExitMissing || !strings.Contains(stderr, want) {
			t.Errorf("%s: exit %d, stderr %q; want exit %d and %q", args[0], code, stderr, cli.ExitMissing, want)
		}
		args = slices.Clone(args)
		args[slices.Index(args, out)] = other
		if code, _, stderr := run(t, args...); code != cli.ExitMissing || strings.Contains(stderr, "volume") {
			t.Errorf("%s of a missing file that is no volume set's: exit %d, stderr %q", args[0], code, stderr)
		}
	}
	if _, err := os.Stat(cache); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("import of a missing bundle made the cache: %v", err)
	}
}
