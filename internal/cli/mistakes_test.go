package cli_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/cli"
)

// TestCacheMistakes gives every command that takes a cache a path that
// does not exist, a file where the directory belongs, and an empty
// directory: each fails with one line naming the path once, after the
// command's name, with the exit code the table gives such a mistake (as
// TestBadInputExitCodes, for every kind of input).
func TestCacheMistakes(t *testing.T) {
	dir := t.TempDir()
	missing, file, empty := filepath.Join(dir, "nowhere"), filepath.Join(dir, "file"), filepath.Join(dir, "empty")
	os.WriteFile(file, []byte("not a cache\n"), 0o644)
	os.Mkdir(empty, 0o755)
	bundleDir, pub := smallBundle(t)
	for _, tt := range []struct {
		path string
		args []string // PATH stands for the path
		code int
	}{
		{missing, []string{"verify", "PATH", "--public-key", pub}, cli.ExitMissing},
		{missing, []string{"gc", "--cache", "PATH", "--keep-bundles", "1"}, cli.ExitMissing},
		{missing, []string{"inventory", "--cache", "PATH", "--out", filepath.Join(dir, "inv.json")}, cli.ExitMissing},
		{missing, []string{"show", "PATH"}, cli.ExitMissing},
		{missing, []string{"diff", "PATH", bundleDir}, cli.ExitMissing},
		{missing, []string{"serve", "PATH", "--listen", "127.0.0.1:0"}, cli.ExitMissing},
		{file, []string{"gc", "--cache", "PATH", "--keep-bundles", "1"}, cli.ExitCorrupt},
		{file, []string{"inventory", "--cache", "PATH", "--out", filepath.Join(dir, "inv.json")}, cli.ExitCorrupt},
		{file, []string{"serve", "PATH", "--listen", "127.0.0.1:0"}, cli.ExitCorrupt},
		{file, []string{"import", bundleDir, "--cache", "PATH", "--public-key", pub}, cli.ExitCorrupt},
		{file, []string{"show", "PATH"}, cli.ExitCorrupt},
		{empty, []string{"gc", "--cache", "PATH", "--keep-bundles", "1"}, cli.ExitMissing},
		{empty, []string{"inventory", "--cache", "PATH", "--out", filepath.Join(dir, "inv.json")}, cli.ExitMissing},
		{empty, []string{"serve", "PATH", "--listen", "127.0.0.1:0"}, cli.ExitMissing},
		{empty, []string{"show", "PATH"}, cli.ExitMissing},
	} {
		args := make([]string, len(tt.args))
		for i, a := range tt.args {
			args[i] = strings.ReplaceAll(a, "PATH", tt.path)
		}
		name := strings.Join(tt.args, " ")
		if slices.Contains([]string{"verify", "gc", "import"}, tt.args[0]) {
			args = append(args, "--no-progress")
		}
		code, stdout, stderr := run(t, args...)
		if code != tt.code {
			t.Errorf("%s, PATH %s: exit %d, want %d\n%s%s", name, filepath.Base(tt.path), code, tt.code, stdout, stderr)
		}
		if !strings.HasPrefix(stderr, "nix-airgap: "+tt.args[0]) || strings.Count(stderr, "\n") != 1 || strings.Count(stderr, tt.path) != 1 {
			t.Errorf("%s, PATH %s: stderr %q, want one line, after the command's name, naming the path once", name, filepath.Base(tt.path), stderr)
		}
	}
}

// TestShowFormatAndJSON: show --json with --format cyclonedx asks for two
// outputs; it is refused rather than printing the one not meant.
func TestShowFormatAndJSON(t *testing.T) {
	dir, _ := smallBundle(t)
	code, stdout, stderr := run(t, "show", dir, "--format", "cyclonedx", "--json")
	if code != cli.ExitUsage || stdout != "" || !strings.Contains(stderr, "--json and --format cyclonedx: give one of them") {
		t.Errorf("show --format cyclonedx --json: exit %d, stdout %q, stderr %q; want %d and the two named", code, stdout, stderr, cli.ExitUsage)
	}
	for _, args := range [][]string{{"--json"}, {"--format", "json"}, {"--format", "json", "--json"}} {
		if code, _, stderr := run(t, append([]string{"show", dir}, args...)...); code != cli.ExitOK {
			t.Errorf("show %q: exit %d\n%s", args, code, stderr)
		}
	}
}

// TestRefusedImportLeavesNoDirectories: an import refused into a cache
// that did not exist leaves neither the cache nor the parents it made
// for it.
func TestRefusedImportLeavesNoDirectories(t *testing.T) {
	dir, _ := smallBundle(t)
	_, otherPub := smallBundle(t) // another key
	parent := t.TempDir()
	cacheDir := filepath.Join(parent, "new", "dirs", "cache")
	code, stdout, stderr := run(t, "import", dir, "--cache", cacheDir, "--public-key", otherPub, "--no-progress")
	if code != cli.ExitUntrusted {
		t.Fatalf("import signed by another key: exit %d, want %d\n%s%s", code, cli.ExitUntrusted, stdout, stderr)
	}
	if left, _ := os.ReadDir(parent); len(left) != 0 {
		t.Errorf("a refused import left %s in %s", left[0].Name(), parent)
	}
}

// TestUnknownFlagHints: an unknown flag is still a usage error, and the
// error names the flag meant when it is a typo, the start of one, or
// what Nix or another server calls it.
func TestUnknownFlagHints(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"import", "b", "--cahce", "c"}, "nix-airgap: import: unknown flag: --cahce (did you mean --cache?)\n"},
		{[]string{"pack", "--secrect-key", "k"}, "unknown flag: --secrect-key (did you mean --secret-key?)\n"},
		{[]string{"gc", "--keep", "1"}, "unknown flag: --keep (did you mean --keep-bundles?)\n"},
		{[]string{"import", "b", "--store", "c"}, "unknown flag: --store (nix-airgap import calls it --cache)\n"},
		{[]string{"client-config", "--substituters", "http://x"}, "unknown flag: --substituters (nix-airgap client-config calls it --url)\n"},
		{[]string{"serve", "--port", "8080"}, "unknown flag: --port (nix-airgap serve calls it --listen)\n"},
		{[]string{"verify", "b", "--frobnicate"}, "nix-airgap: verify: unknown flag: --frobnicate\n"},
		{[]string{"pack", ".#a", "--option", "substituters", "http://x"}, "nix-airgap: pack: unknown flag: --option (nix-airgap passes no Nix settings on: give them in NIX_CONFIG='NAME = VALUE', which the nix it runs reads, or as --substituters, --trusted-public-keys and their --extra- forms)\n"},
		{[]string{"plan", ".#a", "--option", "x", "y"}, "nix-airgap: plan: unknown flag: --option (nix-airgap passes no Nix settings on"},
		{[]string{"pack", ".#a", "--dry-run"}, "nix-airgap: pack: unknown flag: --dry-run (nix-airgap plan says what pack would copy, and from where)\n"},
	} {
		code, stdout, stderr := run(t, tt.args...)
		if code != cli.ExitUsage || stdout != "" || !strings.Contains(stderr, tt.want) || strings.Contains(stderr, "--help?") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want %d and %q", tt.args, code, stdout, stderr, cli.ExitUsage, tt.want)
		}
	}
}

// TestHelpCompletes: help completes command and topic names, as cobra's
// own help command did.
func TestHelpCompletes(t *testing.T) {
	for prefix, want := range map[string]string{"ver": "verify\n", "exit": "exit-codes\n"} {
		if code, stdout, _ := run(t, "__complete", "help", prefix); code != cli.ExitOK || !strings.HasPrefix(stdout, want) {
			t.Errorf("completion of help %s: exit %d, %q; want %q first", prefix, code, stdout, want)
		}
	}
}

// TestImportCacheAsBundle: a long-lived cache given to import as the
// bundle is named as such, whichever keys are given: with keys that trust
// none of it, its signatures are not what is wrong.
func TestImportCacheAsBundle(t *testing.T) {
	good, pub := smallBundle(t)
	cacheDir := filepath.Join(t.TempDir(), "cache")
	if code, _, stderr := run(t, "import", good, "--cache", cacheDir, "--public-key", pub, "--no-progress"); code != cli.ExitOK {
		t.Fatalf("import: %s", stderr)
	}
	_, otherPub := smallBundle(t)
	for _, key := range []string{pub, otherPub} {
		into := filepath.Join(t.TempDir(), "new")
		code, stdout, stderr := run(t, "import", cacheDir, "--cache", into, "--public-key", key, "--no-progress")
		if code != cli.ExitCorrupt || stdout != "" || !strings.Contains(stderr, "not a bundle: a long-lived cache") || strings.Contains(stderr, "untrusted") {
			t.Errorf("import CACHE --public-key %s: exit %d, want %d\n%s%s", filepath.Base(filepath.Dir(key)), code, cli.ExitCorrupt, stdout, stderr)
		}
		if _, err := os.Stat(into); err == nil {
			t.Errorf("import CACHE made %s", into)
		}
	}
}

// TestVerifyManifestAlone: a bundle's manifest.json given to verify or
// import is named as such, not as a file that is no tar, and the cache
// is not made.
func TestVerifyManifestAlone(t *testing.T) {
	dir, pub := smallBundle(t)
	manifest := filepath.Join(dir, "manifest.json")
	into := filepath.Join(t.TempDir(), "cache")
	for _, args := range [][]string{
		{"verify", manifest, "--public-key", pub, "--no-progress"},
		{"import", manifest, "--cache", into, "--public-key", pub, "--no-progress"},
	} {
		code, stdout, stderr := run(t, args...)
		if code != cli.ExitCorrupt || !strings.Contains(stdout, "manifest.json: corrupt: not a bundle: a bundle's manifest.json alone, which show and diff read: give the bundle directory or tar it belongs to\n") {
			t.Errorf("%s of a manifest.json: exit %d, want %d and the file named as a manifest\n%s%s", args[0], code, cli.ExitCorrupt, stdout, stderr)
		}
	}
	if _, err := os.Stat(into); err == nil {
		t.Errorf("import of a manifest.json made %s", into)
	}
}
