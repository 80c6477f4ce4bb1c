package cli_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cli"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/signing"
)

// run runs the command line and returns its exit code and stderr.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := cli.Run(t.Context(), args, &stdout, &stderr)
	return cli.ExitCode(err), stdout.String(), stderr.String()
}

// newKeyedWorld is where the command-line tests that pack start: the
// test world, with its Nix on the environment, and a temp dir holding the
// key pair keyName made by keygen.
func newKeyedWorld(t *testing.T, keyName string) (w *nixtest.World, tmp, keyFile, pubFile string) {
	t.Helper()
	n := nixtest.New(t, nixtest.Options{})
	w = nixtest.NewWorld(t, n, nixtest.StartInternet(t), nixtest.WorldOptions{})
	n.Setenv(t)
	tmp = t.TempDir()
	keyFile, pubFile = filepath.Join(tmp, "k.sec"), filepath.Join(tmp, "k.pub")
	if code, _, stderr := run(t, "keygen", "--name", keyName, "--secret-key", keyFile, "--public-key", pubFile); code != 0 {
		t.Fatalf("keygen: %s", stderr)
	}
	return w, tmp, keyFile, pubFile
}

func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "existing")
	if err := os.WriteFile(existing, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A cache whose one bundle record is damaged.
	damaged := filepath.Join(dir, "damaged-cache")
	if err := os.MkdirAll(filepath.Join(damaged, "nix-airgap", "bundles"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(damaged, "nix-cache-info"), []byte("StoreDir: /nix/store\n"), 0o644)
	os.WriteFile(filepath.Join(damaged, "nix-airgap", "bundles", "sha256-x.json"), []byte("garbage"), 0o644)
	// A directory of other things, an empty one, and one a pack left
	// unfinished (its nix-cache-info, no manifest.json yet). verify and
	// import list what they found on stdout; TestWrongInputsTellTheRightStory
	// checks what they say.
	notes, empty, unfinished := filepath.Join(dir, "notes"), filepath.Join(dir, "empty"), filepath.Join(dir, "unfinished")
	os.Mkdir(notes, 0o755)
	os.WriteFile(filepath.Join(notes, "a.txt"), []byte("x"), 0o644)
	os.Mkdir(empty, 0o755)
	os.MkdirAll(filepath.Join(unfinished, "nar"), 0o755)
	os.WriteFile(filepath.Join(unfinished, "nix-cache-info"), []byte("StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n"), 0o644)
	inventory := filepath.Join(dir, "inventory.json")
	os.WriteFile(inventory, []byte(`{"format": "`+bundle.InventoryFormat+`", "version": 1}`), 0o644)
	stdoutLink := filepath.Join(dir, "stdout")
	os.Symlink("/proc/self/fd/1", stdoutLink)
	emptyFile := filepath.Join(dir, "store-paths")
	os.WriteFile(emptyFile, nil, 0o644)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	narDir := filepath.Join(dir, "a-cache", "nar")
	os.MkdirAll(narDir, 0o755)
	os.WriteFile(filepath.Join(narDir, "1ggp1l25z36n81sz8f4dzs5pl9ryhwka75c81871f7vigbxpnm58.nar.zst"), []byte("x"), 0o644)
	tests := []struct {
		name    string
		args    []string
		code    int
		stderrs string // substring the error must contain
	}{
		{"--paths-from an empty file", []string{"pack", "--paths-from", emptyFile, "--out", filepath.Join(dir, "b")}, cli.ExitUsage, "nix-airgap: pack: targets: invalid target: none given: --paths-from " + emptyFile + " lists no store path\n"},
		{"--paths-from a directory", []string{"plan", "--paths-from", empty}, cli.ExitUsage, "nix-airgap: plan: read paths " + empty + ": invalid target: a directory, where a file listing store paths belongs\n"},
		{"--paths-from a missing file", []string{"check", "--paths-from", filepath.Join(dir, "nowhere"), "--against", dir}, cli.ExitMissing, "nix-airgap: check: read paths " + filepath.Join(dir, "nowhere") + ": no such file or directory\n"},
		{"unknown command", []string{"frobnicate"}, cli.ExitUsage, `unknown command "frobnicate"`},
		{"unknown flag", []string{"keygen", "--frobnicate"}, cli.ExitUsage, "unknown flag: --frobnicate"},
		{"missing flag", []string{"keygen", "--name", "a"}, cli.ExitUsage, "--secret-key is required"},
		{"extra argument", []string{"keygen", "x", "--name", "a", "--secret-key", "s", "--public-key", "p"}, cli.ExitUsage, "nix-airgap: keygen: takes no arguments, but was given \"x\"\nTry 'nix-airgap keygen --help' for more information.\n"},
		{"argument for a flag", []string{"inventory", "/srv/nix-cache"}, cli.ExitUsage, `inventory: takes no arguments, but was given "/srv/nix-cache"`},
		{"cache as import's argument", []string{"import", existing, damaged}, cli.ExitUsage, "nix-airgap: import: --cache DIR (or s3://BUCKET?...) is required (nix-airgap import takes the cache as --cache " + damaged + ")\n"},
		{"new cache as import's argument", []string{"import", existing, filepath.Join(dir, "new-cache")}, cli.ExitUsage, "(nix-airgap import takes the cache as --cache " + filepath.Join(dir, "new-cache") + ")\n"},
		{"volumes without import's --cache", []string{"import", existing, existing}, cli.ExitUsage, "nix-airgap: import: --cache DIR (or s3://BUCKET?...) is required\n"},
		{"cache as gc's argument", []string{"gc", damaged, "--keep-bundles", "1"}, cli.ExitUsage, "nix-airgap: gc: takes no arguments, but was given \"" + damaged + "\" (nix-airgap gc takes the cache as --cache " + damaged + ")\n"},
		{"bucket as inventory's argument", []string{"inventory", "s3://cache?endpoint=h"}, cli.ExitUsage, "(nix-airgap inventory takes the cache as --cache 's3://cache?endpoint=h')\n"},
		{"server address without http://", []string{"check", "/nix/store/0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello", "--against", "cache.site:8080"}, cli.ExitMissing, "nix-airgap: check source cache.site:8080: no such file or directory (a binary cache's URL starts with http:// or https://)\n"},
		{"a cache inventory as gc --roots", []string{"gc", "--cache", damaged, "--roots", inventory, "--dry-run"}, cli.ExitUsage, "nix-airgap: gc: --roots " + inventory + ": a cache inventory, not a file of store paths one a line: give the store paths to keep\n"},
		{"a directory as gc --roots", []string{"gc", "--cache", damaged, "--roots", empty, "--dry-run"}, cli.ExitUsage, "nix-airgap: gc: --roots " + empty + ": a directory, where a file of store paths one a line belongs\n"},
		{"pack's --channel form in client-config", []string{"client-config", "--url", "http://cache.site:8080", "--channel", "nixpkgs=<nixpkgs>"}, cli.ExitUsage, "(client-config takes the NAME alone, --channel nixpkgs; NAME=SOURCE is pack's)\n"},
		{"demo --dir not empty", []string{"demo", "--dir", dir}, cli.ExitUsage, "nix-airgap: demo: --dir " + dir + ": not empty (an earlier demo's?): give a new or empty directory\n"},
		{"a binary cache's URL as a cache", []string{"inventory", "--cache", "http://cache.site:8080"}, cli.ExitUsage, "nix-airgap: inventory: open http://cache.site:8080: unsupported scheme\n"},
		{"a binary cache's URL as a bundle", []string{"verify", "http://cache.site:8080", "--allow-unsigned"}, cli.ExitUsage, "open http://cache.site:8080: unsupported scheme"},
		{"one argument of two", []string{"diff", "a"}, cli.ExitUsage, "nix-airgap: diff: wants OLD NEW, but was given 1 argument\n"},
		{"three arguments of two", []string{"diff", "a", "b", "c"}, cli.ExitUsage, "diff: wants OLD NEW, but was given 3 arguments"},
		{"no bundle", []string{"verify"}, cli.ExitUsage, "verify: wants BUNDLE|CACHE|s3://BUCKET?...|-|VOLUME..., but was given 0 arguments"},
		{"unknown flag named by command", []string{"serve", "--frobnicate"}, cli.ExitUsage, "nix-airgap: serve: unknown flag: --frobnicate\nTry 'nix-airgap serve --help' for more information.\n"},
		{"usage error named by command", []string{"pack", "x"}, cli.ExitUsage, "nix-airgap: pack: --out: none given; give a directory, FILE.tar, or - for stdout"},
		{"listen without a port", []string{"serve", dir, "--listen", "8080"}, cli.ExitUsage, "nix-airgap: serve: --listen 8080: want HOST:PORT, such as :8080"},
		{"unknown command hint", []string{"frobnicate"}, cli.ExitUsage, "Try 'nix-airgap --help' for more information.\n"},
		{"help of an unknown topic", []string{"help", "verfy"}, cli.ExitUsage, "nix-airgap: help: no command or topic \"verfy\" (did you mean verify?)\n"},
		{"bad log level", []string{"--log-level", "loud", "keygen"}, cli.ExitUsage, "--log-level"},
		{"bad log level after plan", []string{"plan", "--file", "f", "--arg", "a", "1", "--log-level", "loud"}, cli.ExitUsage, "--log-level"},
		{"--arg missing a word", []string{"check", "--file", "f", "--arg", "a"}, cli.ExitUsage, "needs two words"},
		{"unknown pack flag", []string{"pack", "--arg", "a", "1", "--frobnicate"}, cli.ExitUsage, "unknown flag: --frobnicate"},
		{"compression level out of range", []string{"pack", ".#x", "--out", filepath.Join(dir, "b"), "--compression-level", "99"}, cli.ExitUsage, "nix-airgap: pack: --compression-level 99: want 1-22 for zstd, or 0 for its default\n"},
		{"compression level of none", []string{"pack", ".#x", "--out", filepath.Join(dir, "b"), "--compression", "none", "--compression-level", "3"}, cli.ExitUsage, "nix-airgap: pack: --compression-level 3: --compression none has no levels\n"},
		{"since is out", []string{"pack", ".#x", "--out", unfinished, "--since", unfinished}, cli.ExitUsage, "nix-airgap: pack: --since " + unfinished + ": the base bundle is the output\n"},
		{"volume size too small", []string{"pack", ".#x", "--out", filepath.Join(dir, "set.tar"), "--volume-size", "1000"}, cli.ExitUsage, "--volume-size 1000: volume size too small: every volume carries nix-cache-info, the manifest and its signature, so it needs 16384 bytes (16KiB) at least"},
		{"invalid key name", []string{"keygen", "--name", "a:b", "--secret-key", filepath.Join(dir, "s"), "--public-key", filepath.Join(dir, "p")}, cli.ExitUsage, "nix-airgap: keygen: --name \"a:b\": invalid key: name has a colon, space or control character\nTry 'nix-airgap keygen --help' for more information.\n"},
		{"keygen --force over a symlink", []string{"keygen", "--name", "a", "--secret-key", filepath.Join(dir, "s3"), "--public-key", stdoutLink, "--force"}, cli.ExitUsage, "nix-airgap: keygen: --public-key " + stdoutLink + ": not a regular file (a symlink, a directory, a device or a pipe): give the file to write the key to\n"},
		{"refuses to overwrite", []string{"keygen", "--name", "a", "--secret-key", existing, "--public-key", filepath.Join(dir, "p2")}, cli.ExitFailure, existing + ": file exists"},
		{"show of a directory that is no bundle", []string{"show", dir}, cli.ExitCorrupt, "not a bundle"},
		{"show of a file that is no bundle", []string{"show", existing}, cli.ExitCorrupt, "not a bundle"},
		{"diff of a file that is no bundle", []string{"diff", existing, existing}, cli.ExitCorrupt, "not a bundle"},
		{"verify of a directory of other things", []string{"verify", notes, "--allow-unsigned"}, cli.ExitCorrupt, "1 problem, listed above"},
		{"import of a directory of other things", []string{"import", notes, "--cache", filepath.Join(dir, "cache"), "--allow-unsigned"}, cli.ExitCorrupt, "1 problem, listed above"},
		{"show of a directory of other things", []string{"show", notes}, cli.ExitCorrupt, "not a bundle"},
		{"diff of a directory of other things", []string{"diff", notes, notes}, cli.ExitCorrupt, "not a bundle"},
		{"verify of a file that is no bundle", []string{"verify", existing, "--allow-unsigned"}, cli.ExitCorrupt, "1 problem, listed above"},
		{"verify of an empty directory", []string{"verify", empty, "--allow-unsigned"}, cli.ExitMissing, "1 problem, listed above"},
		{"verify of an unfinished pack", []string{"verify", unfinished, "--allow-unsigned"}, cli.ExitMissing, "1 problem, listed above"},
		{"show of an unfinished pack", []string{"show", unfinished}, cli.ExitMissing, "pack did not finish"},
		{"diff of an unfinished pack", []string{"diff", unfinished, unfinished}, cli.ExitMissing, "pack did not finish"},
		{"negative --jobs", []string{"verify", existing, "--allow-unsigned", "--jobs", "-3"}, cli.ExitUsage, `invalid argument "-3" for "-j, --jobs" flag: want 0, the default, or more`},
		{"-j as plan's", []string{"gc", "--cache", dir, "--keep-bundles", "1", "-j", "x"}, cli.ExitUsage, `invalid argument "x" for "-j, --jobs" flag: want a number`},
		{"-j of import", []string{"import", existing, "--cache", dir, "-j", "-1"}, cli.ExitUsage, "want 0, the default, or more"},
		{"inventory of a damaged cache", []string{"inventory", "--cache", damaged}, cli.ExitCorrupt, "nix-airgap/bundles/sha256-x.json: "},
		{"show of a damaged cache", []string{"show", damaged}, cli.ExitCorrupt, "nix-airgap/bundles/sha256-x.json: "},
		{"keygen into a missing directory", []string{"keygen", "--name", "a", "--secret-key", filepath.Join(dir, "no", "s"), "--public-key", filepath.Join(dir, "no", "p")}, cli.ExitMissing, filepath.Join(dir, "no")},
		{"verify --against a missing directory", []string{"verify", existing, "--allow-unsigned", "--against", filepath.Join(dir, "nowhere")}, cli.ExitMissing, "nix-airgap: verify: --against " + filepath.Join(dir, "nowhere") + ": no such file or directory\n"},
		{"verify --against a directory that is no cache", []string{"verify", existing, "--allow-unsigned", "--against", dir}, cli.ExitCorrupt, "nix-airgap: verify: --against " + dir + ": not a cache: a directory without manifest.json, nix-cache-info, narinfos or NAR files\n"},
		{"import --cache a cache's nar/", []string{"import", existing, "--allow-unsigned", "--cache", narDir}, cli.ExitCorrupt, "--cache " + narDir + ": not a cache: this looks like the nar/ directory of a cache or bundle (it holds NAR files): give its parent, " + filepath.Dir(narDir) + "\n"},
		{"serve on a port in use", []string{"serve", damaged, "--listen", busy.Addr().String()}, cli.ExitFailure, "nix-airgap: serve: listen tcp " + busy.Addr().String() + ": bind: address already in use\nAnother server listens on " + busy.Addr().String() + " (one more serve?): stop it, or choose another address with --listen\n"},
		{"gc of a missing cache", []string{"gc", "--cache", filepath.Join(dir, "nowhere"), "--keep-bundles", "1"}, cli.ExitMissing, "nowhere"},
		{"misspelt setting of an s3 URL", []string{"verify", "s3://cache?endpont=s3.site", "--allow-unsigned"}, cli.ExitUsage, `nix-airgap: verify: s3://cache?endpont=s3.site: unknown setting "endpont"`},
		{"bad s3 URL in a flag", []string{"import", existing, "--cache", "s3://cache?scheme=ftp"}, cli.ExitUsage, `scheme "ftp": want http or https`},
		{"credentials in an s3 URL", []string{"import", existing, "--cache", "s3://AKID:s3cr3t@cache?endpoint=h"}, cli.ExitUsage, "s3://REDACTED@cache?endpoint=h: credentials do not go in the URL"},
		{"credentials in a repeated flag", []string{"check", "/nix/store/x", "--against", "s3://AKID:s3cr3t@cache"}, cli.ExitUsage, "credentials do not go in the URL"},
		{"help", []string{"--help"}, cli.ExitOK, ""},
	}
	// These get as far as asking Nix for its store dir.
	needNix := map[string]bool{
		"--paths-from an empty file": true, "--paths-from a directory": true, "--paths-from a missing file": true,
		"server address without http://": true,
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if needNix[tt.name] {
				nixtest.Require(t)
			}
			code, _, stderr := run(t, tt.args...)
			if code != tt.code {
				t.Errorf("exit code = %d, want %d; stderr:\n%s", code, tt.code, stderr)
			}
			if !strings.Contains(stderr, tt.stderrs) {
				t.Errorf("stderr = %q, want it to contain %q", stderr, tt.stderrs)
			}
			if strings.Contains(stderr, "s3cr3t") {
				t.Errorf("stderr = %q: it repeats a secret", stderr)
			}
			// The command's help lists the code it returned.
			if tt.code > cli.ExitUsage && tt.code != cli.ExitInterrupted {
				_, help, _ := run(t, "help", tt.args[0])
				if !strings.Contains(help, fmt.Sprintf("\n  %3d  ", tt.code)) {
					t.Errorf("help %s does not list exit code %d", tt.args[0], tt.code)
				}
			}
			// Only a bad command line sends the user to the help.
			if hint := strings.Contains(stderr, "--help' for more information"); hint != (tt.code == cli.ExitUsage) {
				t.Errorf("stderr = %q: points to --help: %v, want %v", stderr, hint, tt.code == cli.ExitUsage)
			}
		})
	}
	if b, _ := os.ReadFile(existing); string(b) != "x" {
		t.Errorf("keygen overwrote %s without --force", existing)
	}
}

// TestKeygenAllOrNothing: a key file keygen cannot write leaves the
// other unwritten too, and no temp file, whichever of the two it is.
func TestKeygenAllOrNothing(t *testing.T) {
	dir := t.TempDir()
	aFile := filepath.Join(dir, "file")
	os.WriteFile(aFile, []byte("x"), 0o644)
	readOnly := filepath.Join(dir, "ro")
	os.Mkdir(readOnly, 0o555)
	tests := []struct {
		name     string
		sec, pub string
		code     int
	}{
		{"public key in a missing directory", filepath.Join(dir, "a.sec"), filepath.Join(dir, "missing", "a.pub"), cli.ExitMissing},
		{"public key under a file", filepath.Join(dir, "a.sec"), filepath.Join(aFile, "a.pub"), cli.ExitFailure},
		{"secret key in a missing directory", filepath.Join(dir, "missing", "a.sec"), filepath.Join(dir, "a.pub"), cli.ExitMissing},
		{"public key in a read-only directory", filepath.Join(dir, "a.sec"), filepath.Join(readOnly, "a.pub"), cli.ExitFailure},
		// Without --force, the secret key, put in place last, finds a
		// file there: the public key put in place first goes too.
		{"secret key exists", aFile, filepath.Join(dir, "a.pub"), cli.ExitFailure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if strings.Contains(tt.pub, readOnly) && os.Geteuid() == 0 {
				t.Skip("root writes into a read-only directory")
			}
			code, _, stderr := run(t, "keygen", "--name", "a", "--secret-key", tt.sec, "--public-key", tt.pub)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tt.code, stderr)
			}
			if b, _ := os.ReadFile(aFile); string(b) != "x" {
				t.Errorf("a failed keygen changed %s", aFile)
			}
			for _, d := range []string{dir, readOnly} {
				ents, _ := os.ReadDir(d)
				for _, e := range ents {
					if n := e.Name(); n != "file" && n != "ro" {
						t.Errorf("a failed keygen left %s", filepath.Join(d, n))
					}
				}
			}
		})
	}
}

// TestTwoWordFlagsHelp checks that cobra, not the commands, parses plan,
// pack and check: their help and completion list --arg with its two
// words.
func TestTwoWordFlagsHelp(t *testing.T) {
	for _, cmd := range []string{"plan", "pack", "check"} {
		code, stdout, stderr := run(t, cmd, "--help")
		if code != cli.ExitOK || !strings.Contains(stdout, "--arg NAME EXPR") || !strings.Contains(stdout, "--log-level") {
			t.Errorf("%s --help: exit %d, stderr %q, stdout:\n%s\nwant --arg NAME EXPR and the global flags", cmd, code, stderr, stdout)
		}
		_, stdout, _ = run(t, "__complete", cmd, "--file", "f", "--arg", "a", "1", "--args")
		if !strings.Contains(stdout, "--argstr") {
			t.Errorf("completing %s --args after a two-word --arg: %q, want --argstr", cmd, stdout)
		}
	}
}

// flagHelp is what help says of flag, in each of its lines that lists it.
func flagHelp(help, flag string) []string {
	var got []string
	for _, line := range strings.Split(help, "\n") {
		if m := flagUsage.FindStringSubmatch(line); m != nil && strings.Contains(line, " "+flag+" ") {
			got = append(got, m[1])
		}
	}
	return got
}

// TestJobsHelp: each command's --jobs says what that command does at
// once, set where the flag is added.
func TestJobsHelp(t *testing.T) {
	for _, tc := range []struct{ cmd, want string }{
		{"plan", "run N upstream lookups and .drv reads at once (default 16)"},
		{"pack", "run N upstream lookups, .drv reads, dumps and downloads at once (default: 16, at most 4 dumps, 8 downloads)"},
		{"check", "run N narinfo lookups and .drv reads at once (default 16)"},
		{"import", "check N files at once (default: one per CPU)"},
	} {
		_, stdout, _ := run(t, tc.cmd, "--help")
		if diff := cmp.Diff([]string{tc.want}, flagHelp(stdout, "--jobs")); diff != "" {
			t.Errorf("%s --help: --jobs (-want +got):\n%s", tc.cmd, diff)
		}
	}
}

// TestLogLevelHelp: each command's help gives the --log-level default it
// logs at: serve's info, the others' warn; and serve's own --log-level is
// checked as the global one is, wherever it is given.
func TestLogLevelHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--help"}, `log LEVEL: debug, info, warn or error; serve's is info (default "warn")`},
		{[]string{"pack", "--help"}, `log LEVEL: debug, info, warn or error; serve's is info (default "warn")`},
		{[]string{"serve", "--help"}, `log LEVEL: debug, info, warn or error (default "info")`},
	} {
		_, stdout, _ := run(t, tc.args...)
		if diff := cmp.Diff([]string{tc.want}, flagHelp(stdout, "--log-level")); diff != "" {
			t.Errorf("%q: --log-level (-want +got):\n%s", tc.args, diff)
		}
	}
	for _, args := range [][]string{
		{"serve", "--log-level", "loud", t.TempDir()},
		{"--log-level", "loud", "serve", t.TempDir()},
	} {
		code, _, stderr := run(t, args...)
		if code != cli.ExitUsage || !strings.Contains(stderr, "--log-level") {
			t.Errorf("%q: exit %d, stderr %q; want %d naming --log-level", args, code, stderr, cli.ExitUsage)
		}
	}
}

func TestKeygen(t *testing.T) {
	dir := t.TempDir()
	sec, pub := filepath.Join(dir, "cache.sec"), filepath.Join(dir, "cache.pub")
	if code, _, stderr := run(t, "keygen", "--name", "cache.example.org-1", "--secret-key", sec, "--public-key", pub); code != 0 {
		t.Fatalf("keygen exit %d: %s", code, stderr)
	}
	sk, err := signing.LoadSecretKey(sec)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := signing.LoadPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if sk.Name != "cache.example.org-1" || sk.Public().String() != pk.String() {
		t.Errorf("secret key %s does not match public key %s", sk.Public(), pk)
	}
	if fi, _ := os.Stat(sec); fi.Mode().Perm() != 0o600 {
		t.Errorf("secret key mode = %v, want 0600", fi.Mode().Perm())
	}
	raw, _ := os.ReadFile(pub)
	if strings.HasSuffix(string(raw), "\n") {
		t.Errorf("public key file ends in a newline; nix-store --generate-binary-cache-key writes none")
	}
	msg := []byte("1;/nix/store/x;sha256:y;1;")
	if !pk.Verify(msg, sk.Sign(msg)) {
		t.Error("signature by the new secret key does not verify with its public key")
	}
}

// TestKeygenWithNix proves keygen's files work with stock Nix: Nix signs
// with the secret key and verifies with the public key, and keys Nix
// generates load as ours.
func TestKeygenWithNix(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	dir := t.TempDir()
	sec, pub := filepath.Join(dir, "site.sec"), filepath.Join(dir, "site.pub")
	if code, _, stderr := run(t, "keygen", "--name", "site-1", "--secret-key", sec, "--public-key", pub); code != 0 {
		t.Fatalf("keygen exit %d: %s", code, stderr)
	}
	// Input-addressed: Nix trusts a content-addressed path without any
	// signature, which would prove nothing here.
	path := n.Run(t, "nix-build", "--no-out-link", "-E",
		`derivation { name = "hello"; system = builtins.currentSystem; builder = "/bin/busybox"; args = [ "sh" "-c" "echo hello > $out" ]; }`)
	cache := "file://" + filepath.Join(dir, "cache")
	n.Run(t, "nix", "copy", "--to", cache+"?secret-key="+sec, path)
	pubKey, err := os.ReadFile(pub)
	if err != nil {
		t.Fatal(err)
	}
	n.Run(t, "nix", "store", "verify", "--store", cache, "--trusted-public-keys", string(pubKey), "--sigs-needed", "1", path)
	_, other, err := signing.Generate("site-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Output(t.Context(), "nix", "store", "verify", "--store", cache, "--trusted-public-keys", other.String(), "--sigs-needed", "1", path); err == nil {
		t.Error("nix store verify trusted a signature by another key with the same name")
	}

	nixSec, nixPub := filepath.Join(dir, "nix.sec"), filepath.Join(dir, "nix.pub")
	n.Run(t, "nix-store", "--generate-binary-cache-key", "nix-1", nixSec, nixPub)
	sk, err := signing.LoadSecretKey(nixSec)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := signing.LoadPublicKey(nixPub)
	if err != nil {
		t.Fatal(err)
	}
	if sk.Public().String() != pk.String() {
		t.Errorf("Nix's secret key loads with public half %s, Nix's public key is %s", sk.Public(), pk)
	}
}

// TestHelp reads every command's help as a user would: each names the
// exit codes it returns, no flag shows two defaults or a placeholder cobra
// took from backticks, and no help points into the source.
func TestHelp(t *testing.T) {
	code, stdout, _ := run(t, "--help")
	if code != cli.ExitOK {
		t.Fatalf("--help: exit %d", code)
	}
	if _, help, _ := run(t, "help"); help != stdout {
		t.Errorf("help and --help differ:\n%s", cmp.Diff(stdout, help))
	}
	var commands []string
	inCommands := false
	for _, line := range strings.Split(stdout, "\n") {
		switch {
		case strings.HasPrefix(line, "Available Commands:"), strings.HasPrefix(line, "Additional help topics:"):
			inCommands = true
		case line == "":
			inCommands = false
		case inCommands:
			f := strings.Fields(line)
			if f[0] == "nix-airgap" { // an additional help topic
				f = f[1:]
			}
			if f[0] != "help" && f[0] != "completion" {
				commands = append(commands, f[0])
			}
		}
	}
	for _, want := range []string{"keygen", "plan", "pack", "verify", "import", "gc", "serve", "client-config", "check", "show", "diff", "inventory", "demo", "exit-codes", "keys"} {
		if !slices.Contains(commands, want) {
			t.Errorf("--help lists %q, lacking %s", commands, want)
		}
	}
	for _, c := range commands {
		t.Run(c, func(t *testing.T) {
			code, stdout, stderr := run(t, "help", c)
			if code != cli.ExitOK || stderr != "" {
				t.Fatalf("help %s: exit %d, stderr %q", c, code, stderr)
			}
			if _, flagHelp, _ := run(t, c, "--help"); stdout != flagHelp {
				t.Errorf("help %s and %s --help differ:\n%s", c, c, cmp.Diff(flagHelp, stdout))
			}
			if !strings.Contains(stdout, "Exit codes") && !strings.Contains(stdout, "exits with one of these codes") && c != "keys" {
				t.Errorf("help %s does not name its exit codes:\n%s", c, stdout)
			}
			// Its codes are listed as help exit-codes lists them, right-aligned,
			// so that every meaning starts in one column.
			if _, codes, ok := strings.Cut(stdout, "(see nix-airgap help exit-codes):\n"); ok {
				codes, _, _ = strings.Cut(codes, "\n\n")
				for _, line := range strings.Split(codes, "\n") {
					if !regexp.MustCompile(`^  [ \d]{2}\d  \S`).MatchString(line) {
						t.Errorf("help %s: exit code not in the column help exit-codes has: %q", c, line)
					}
					if len(line) > 80 {
						t.Errorf("help %s: an exit code's line is over 80 columns: %q", c, line)
					}
				}
			}
			// The usage line names flags the command has.
			if _, after, ok := strings.Cut(stdout, "Usage:\n"); ok {
				usage, flags, _ := strings.Cut(after, "\n")
				for _, f := range regexp.MustCompile(`--[a-z][a-z-]*`).FindAllString(usage, -1) {
					if !regexp.MustCompile(`(?m)^\s+(-\w, )?` + f + `\b`).MatchString(flags) {
						t.Errorf("help %s: the usage line names %s, which it does not have:\n%s", c, f, usage)
					}
				}
			}
			for _, line := range strings.Split(stdout, "\n") {
				if strings.Count(line, "(default") > 1 {
					t.Errorf("help %s: two defaults: %s", c, line)
				}
				if strings.Contains(line, "internal/") || strings.Contains(line, "MarshalJSON") {
					t.Errorf("help %s points into the source: %s", c, line)
				}
				if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[0], "--") && strings.Contains(f[1], "nix-airgap") {
					t.Errorf("help %s: cobra took backticks for a placeholder: %s", c, line)
				}
				// A flag's description starts as the others do: in lower
				// case, unless with a name.
				if m := flagUsage.FindStringSubmatch(line); m != nil && unicode.IsUpper([]rune(m[1])[0]) &&
					!slices.Contains([]string{"Nix", "Nix's", "NAR"}, strings.Fields(m[1])[0]) {
					t.Errorf("help %s: a flag's description starts in upper case: %s", c, line)
				}
			}
		})
	}
	_, stdout, _ = run(t, "help", "exit-codes")
	for _, c := range cli.ExitCodes() {
		if !strings.Contains(stdout, fmt.Sprintf("%d  %s", c.Code, strings.ReplaceAll(c.Meaning, "`", ""))) {
			t.Errorf("help exit-codes lacks %d %s:\n%s", c.Code, c.Meaning, stdout)
		}
	}
}

// TestHelpDetailsSections: help COMMAND --details prints, from the
// binary, COMMAND's section of docs/commands.md as the file on disk has
// it, for every command --help lists but the topics, which have no more
// to say than their help; without a command, all of the file; a name
// without a section is a usage error listing those there are.
func TestHelpDetailsSections(t *testing.T) {
	data, err := os.ReadFile("../../docs/commands.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	heading := regexp.MustCompile(`(?m)^## (.+)\n`)
	want := map[string]string{}
	var names []string
	matches := heading.FindAllStringSubmatchIndex(doc, -1)
	for i, m := range matches {
		end := len(doc)
		if i+1 < len(matches) {
			end = matches[i+1][0]
		}
		name := strings.ToLower(doc[m[2]:m[3]])
		names = append(names, name)
		want[name] = strings.TrimRight(doc[m[0]:end], "\n") + "\n"
	}
	_, rootHelp, _ := run(t, "--help")
	_, list, _ := strings.Cut(rootHelp, "Available Commands:\n")
	list, _, _ = strings.Cut(list, "\n\n")
	var commands []string
	for _, line := range strings.Split(list, "\n") {
		if c := strings.Fields(line)[0]; !slices.Contains([]string{"help", "completion", "exit-codes", "keys"}, c) {
			commands = append(commands, c)
		}
	}
	if len(commands) < 13 {
		t.Fatalf("--help lists only %q", commands)
	}
	unknown := "docs/commands.md has no section %q; it has " + strings.Join(names, ", ")
	type test struct {
		args   []string
		code   int
		stdout string
		stderr string // a part of it
	}
	tests := []test{
		{[]string{"help", "--details"}, cli.ExitOK, doc, ""},
		{[]string{"help", "--details", "targets"}, cli.ExitOK, want["targets"], ""},
		{[]string{"help", "nosuch", "--details"}, cli.ExitUsage, "", fmt.Sprintf(unknown, "nosuch")},
		{[]string{"help", "keys", "--details"}, cli.ExitUsage, "", fmt.Sprintf(unknown, "keys")},
		{[]string{"help", "pack", "verify", "--details"}, cli.ExitUsage, "", fmt.Sprintf(unknown, "pack verify")},
	}
	for _, c := range commands {
		if want[c] == "" {
			t.Errorf("docs/commands.md has no section ## %s", c)
		}
		tests = append(tests, test{[]string{"help", c, "--details"}, cli.ExitOK, want[c], ""})
	}
	for _, tt := range tests {
		code, stdout, stderr := run(t, tt.args...)
		if code != tt.code || !strings.Contains(stderr, tt.stderr) || tt.stderr == "" && stderr != "" {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q", tt.args, code, stderr, tt.code, tt.stderr)
		}
		if diff := cmp.Diff(tt.stdout, stdout); diff != "" {
			t.Errorf("%q: stdout (-want +got):\n%s", tt.args, diff)
		}
	}
}

// TestREADMEExitCodes: the README's exit-code table is the one in
// internal/cli, word for word.
// flagUsage matches a flag's line of a command's help, the description
// after the flag and its value's name.
var flagUsage = regexp.MustCompile(`^\s+(?:-\w, )?--[\w-]+(?: [\w.=]+)*\s{2,}(\S.*)$`)

func TestREADMEExitCodes(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(data), "## Exit codes\n")
	if !ok {
		t.Fatal("README.md has no ## Exit codes section")
	}
	table, _, _ = strings.Cut(table, "\n\n#")
	var got []cli.ExitCodeDoc
	for _, line := range strings.Split(table, "\n") {
		f := strings.Split(line, "|")
		if len(f) != 4 {
			continue
		}
		code, err := strconv.Atoi(strings.TrimSpace(f[1]))
		if err != nil {
			continue
		}
		got = append(got, cli.ExitCodeDoc{Code: code, Meaning: strings.TrimSpace(f[2])})
	}
	if diff := cmp.Diff(cli.ExitCodes(), got, cmpopts.IgnoreFields(cli.ExitCodeDoc{}, "Short")); diff != "" {
		t.Errorf("README's exit codes differ from internal/cli's (-cli +README):\n%s", diff)
	}
}
