package cli_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cli"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// smallBundle writes a one-path bundle signed by a fresh key and returns
// its directory and the public key file.
func smallBundle(t *testing.T) (dir, pubFile string) {
	dir, _, pubFile = writeBundle(t, "0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello.txt")
	return dir, pubFile
}

// writeBundle writes a bundle of one path, base, whose content is
// "hello\n" and which refers to refs, signed by a fresh key. It returns
// the bundle's directory, the path and the public key file.
func writeBundle(t *testing.T, base string, refs ...storepath.Path) (dir string, p storepath.Path, pubFile string) {
	t.Helper()
	dir, paths, pubFile := writeBundleOf(t, []string{base}, refs...)
	return dir, paths[0], pubFile
}

// writeBundleOf is writeBundle of several paths, each as writeBundle's.
func writeBundleOf(t *testing.T, bases []string, refs ...storepath.Path) (dir string, paths []storepath.Path, pubFile string) {
	t.Helper()
	sk, pk, _ := signing.Generate("cli-test-1")
	pubFile = filepath.Join(t.TempDir(), "key.pub")
	os.WriteFile(pubFile, []byte(pk.String()), 0o644)
	dir, paths = writeSignedBundle(t, sk, bases, refs...)
	return dir, paths, pubFile
}

// writeSignedBundle is writeBundleOf signed by sk.
func writeSignedBundle(t *testing.T, sk signing.SecretKey, bases []string, refs ...storepath.Path) (dir string, paths []storepath.Path) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "bundle")
	bw, err := bundle.NewDirWriter(dir, "/nix/store", bundle.WriterOptions{Key: &sk})
	if err != nil {
		t.Fatal(err)
	}
	// The NAR of a regular file "hello\n".
	var nar bytes.Buffer
	str := func(s string) {
		var n [8]byte
		n[0] = byte(len(s))
		nar.Write(n[:])
		nar.WriteString(s)
		nar.Write(make([]byte, (8-len(s)%8)%8))
	}
	for _, s := range []string{"nix-archive-1", "(", "type", "regular", "contents", "hello\n", ")"} {
		str(s)
	}
	for _, base := range bases {
		p, err := storepath.Dir("/nix/store").Base(base)
		if err != nil {
			t.Fatal(err)
		}
		meta := bundle.PathMeta{Roles: role.Source, Flat: true, References: refs}
		if err := bw.AddNAR(context.Background(), p, bytes.NewReader(nar.Bytes()), meta); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	if err := bw.Close(context.Background(), bundle.ManifestHeader{Tool: "test", Mode: role.ModeSources}); err != nil {
		t.Fatal(err)
	}
	return dir, paths
}

func TestVerifyAndImportCommands(t *testing.T) {
	dir, pub := smallBundle(t)
	var stdout, stderr bytes.Buffer
	if err := cli.Run(t.Context(), []string{"verify", dir, "--public-key", pub}, &stdout, &stderr); err != nil {
		t.Fatalf("verify: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "OK: 1 store path,") || !strings.Contains(stdout.String(), "signed by cli-test-1") {
		t.Errorf("verify printed %q", stdout.String())
	}

	// A name with an &, as an s3:// URL has: JSON spells it as it is.
	cacheDir := filepath.Join(t.TempDir(), "cache&1")
	stdout.Reset()
	if err := cli.Run(t.Context(), []string{"import", dir, "--cache", cacheDir, "--public-key", pub}, &stdout, &stderr); err != nil {
		t.Fatalf("import: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "1 path added") {
		t.Errorf("import printed %q", stdout.String())
	}

	// In JSON, nothing found is an empty list, as in every command's JSON.
	for _, args := range [][]string{
		{"verify", dir, "--public-key", pub, "--json"},
		{"verify", cacheDir, "--public-key", pub, "--json"},
		{"gc", "--cache", cacheDir, "--keep-bundles", "1", "--json", "--grace", "0s"},
	} {
		stdout.Reset()
		if err := cli.Run(t.Context(), args, &stdout, &stderr); err != nil {
			t.Fatalf("%q: %v\n%s", args, err, stderr.String())
		}
		if strings.Contains(stdout.String(), "null") {
			t.Errorf("%q: a null in the JSON:\n%s", args, stdout.String())
		}
		checkJSONScheme(t, args[0], stdout.String())
	}

	// Signed by a key not given: what to do is said.
	other := filepath.Join(t.TempDir(), "other.pub")
	if code, _, stderr := run(t, "keygen", "--name", "other-1", "--secret-key", other+".sec", "--public-key", other); code != 0 {
		t.Fatal(stderr)
	}
	for _, args := range [][]string{
		{"verify", dir, "--public-key", other},
		{"import", dir, "--cache", filepath.Join(t.TempDir(), "c"), "--public-key", other},
	} {
		code, _, stderr := run(t, args...)
		if code != cli.ExitUntrusted || !strings.Contains(stderr, "give its public key with --public-key") {
			t.Errorf("%q: exit %d, stderr:\n%s\nwant %d and what to do", args, code, stderr, cli.ExitUntrusted)
		}
	}

	// A flipped byte: named, and refused.
	m, _ := filepath.Glob(filepath.Join(dir, "nar", "*"))
	data, _ := os.ReadFile(m[0])
	data[len(data)/2] ^= 1
	os.WriteFile(m[0], data, 0o644)
	stdout.Reset()
	err := cli.Run(t.Context(), []string{"verify", dir, "--public-key", pub, "--json"}, &stdout, &stderr)
	name := "nar/" + filepath.Base(m[0])
	if err == nil || !strings.Contains(stdout.String(), `"file": "`+name+`"`) || !strings.Contains(stdout.String(), `"kind": "corrupt"`) {
		t.Errorf("verify of a bad bundle: %v\n%s", err, stdout.String())
	}
	if code := cli.ExitCode(err); code == 0 {
		t.Errorf("exit code 0 for a bad bundle")
	}
	// No key and no --allow-unsigned: a usage error.
	if err := cli.Run(t.Context(), []string{"verify", dir}, &stdout, &stderr); cli.ExitCode(err) != cli.ExitUsage {
		t.Errorf("verify without keys: %v", err)
	}
}

// A reference outside the bundle is missing (exit 5, naming it) unless a
// cache or base bundle given with --against has it.
func TestVerifyAgainst(t *testing.T) {
	base, ref, _ := writeBundle(t, "0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello.txt")
	dir, _, pub := writeBundle(t, "1b9mczn41dk6sd2q2w3k4q3z5sqd8jyk-uses-hello", ref)

	var stdout, stderr bytes.Buffer
	err := cli.Run(t.Context(), []string{"verify", dir, "--public-key", pub}, &stdout, &stderr)
	if code := cli.ExitCode(err); code != cli.ExitMissing || !strings.Contains(stdout.String(), ref.Base()) {
		t.Errorf("verify without --against: exit %d (%v), want %d naming %s:\n%s", code, err, cli.ExitMissing, ref.Base(), stdout.String())
	}

	stdout.Reset()
	if err := cli.Run(t.Context(), []string{"verify", dir, "--public-key", pub, "--against", base}, &stdout, &stderr); err != nil {
		t.Errorf("verify --against the base bundle: %v\n%s", err, stdout.String())
	}

	// The same through a long-lived cache the base was imported into.
	cacheDir := filepath.Join(t.TempDir(), "cache")
	if err := cli.Run(t.Context(), []string{"import", base, "--cache", cacheDir, "--allow-unsigned"}, &stdout, &stderr); err != nil {
		t.Fatalf("import: %v\n%s", err, stderr.String())
	}
	stdout.Reset()
	if err := cli.Run(t.Context(), []string{"verify", dir, "--public-key", pub, "--against", cacheDir}, &stdout, &stderr); err != nil {
		t.Errorf("verify --against a cache: %v\n%s", err, stdout.String())
	}

	err = cli.Run(t.Context(), []string{"verify", dir, "--public-key", pub, "--against", t.TempDir()}, &stdout, &stderr)
	if code := cli.ExitCode(err); code != cli.ExitMissing {
		t.Errorf("--against a directory that is no cache: exit %d (%v), want %d, as check --against", code, err, cli.ExitMissing)
	}
}

// TestVerifyBadSignature: a signature by the trusted key's name that does
// not match what it signs is named as such, in a bundle and in a cache,
// and not answered with the hint to give another key, which is for a
// signer no key given trusts; given another key, verify of a cache says
// so and calls nothing in it damaged.
func TestVerifyBadSignature(t *testing.T) {
	tamper := func(file, prefix string) {
		t.Helper()
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.Index(data, []byte(prefix+"cli-test-1:"))
		if i < 0 {
			t.Fatalf("%s has no signature by cli-test-1:\n%s", file, data)
		}
		i += len(prefix + "cli-test-1:")
		data[i] ^= 'A' ^ 'B'
		if data[i] != 'A' && data[i] != 'B' {
			data[i] = 'A'
		}
		os.WriteFile(file, data, 0o644)
	}
	const hint = "To trust the signer" // named above, or the signers of a cache
	otherFile := filepath.Join(t.TempDir(), "other.pub")
	_, other, _ := signing.Generate("other-1")
	os.WriteFile(otherFile, []byte(other.String()), 0o644)

	dir, _, pub := writeBundle(t, "0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello")
	cacheDir := filepath.Join(t.TempDir(), "cache")
	if code, stdout, stderr := run(t, "import", dir, "--cache", cacheDir, "--public-key", pub, "--no-progress"); code != cli.ExitOK {
		t.Fatalf("import: exit %d\n%s%s", code, stdout, stderr)
	}
	tamper(filepath.Join(dir, bundle.SigName), "")
	code, stdout, stderr := run(t, "verify", dir, "--public-key", pub, "--no-progress")
	if code != cli.ExitUntrusted || !strings.Contains(stdout, "bad signature: the signature by cli-test-1 does not match manifest.json") ||
		!strings.Contains(stdout, "FAILED, 1 problem: no store path checked, a bad signature\n") || strings.Contains(stderr, hint) {
		t.Errorf("verify of a bundle with a bad signature: exit %d, want %d, the signature named as not matching and no hint to give another key:\n%s%s", code, cli.ExitUntrusted, stdout, stderr)
	}

	narinfos, _ := filepath.Glob(filepath.Join(cacheDir, "*.narinfo"))
	if len(narinfos) != 1 {
		t.Fatalf("cache holds narinfos %q, want one", narinfos)
	}
	tamper(narinfos[0], "Sig: ")
	code, stdout, stderr = run(t, "verify", cacheDir, "--public-key", pub, "--no-progress")
	if code != cli.ExitUntrusted || !strings.Contains(stdout, "bad signature: the signature by cli-test-1 does not match the narinfo") ||
		!strings.Contains(stdout, "damaged: /nix/store/0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello") || strings.Contains(stderr, hint) {
		t.Errorf("verify of a cache with a bad narinfo signature: exit %d, want %d, the path damaged, its signature named as not matching and no hint to give another key:\n%s%s", code, cli.ExitUntrusted, stdout, stderr)
	}
	code, stdout, stderr = run(t, "verify", cacheDir, "--public-key", otherFile, "--no-progress")
	if code != cli.ExitUntrusted || !strings.Contains(stdout, "untrusted: /nix/store/0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello: signed by cli-test-1, not a trusted key\n") || strings.Contains(stdout, "damaged") || !strings.Contains(stderr, hint) {
		t.Errorf("verify of a cache with another key: exit %d, want %d, the signer named as not trusted, nothing damaged and the hint to give another key:\n%s%s", code, cli.ExitUntrusted, stdout, stderr)
	}
}

// TestVerifyCacheSaysEachThingOnce damages a cache's NAR file and narinfo
// in each way disks do, and checks that verify's line for each names the
// file once, its kind once and the store path, quotes no more than a
// little of a narinfo that is garbage, and does not call a path whose
// narinfo is damaged missing too.
func TestVerifyCacheSaysEachThingOnce(t *testing.T) {
	a, pa, pubA := writeBundle(t, "0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello")
	b, _, pubB := writeBundle(t, "1a7bjbqy2xhvqzk0h7q4wn8xg0mjrw9m-user", pa)
	newCache := func() (dir, narinfo, nar string) {
		t.Helper()
		dir = filepath.Join(t.TempDir(), "cache")
		for _, imp := range [][2]string{{a, pubA}, {b, pubB}} {
			if code, stdout, stderr := run(t, "import", imp[0], "--cache", dir, "--public-key", imp[1], "--no-progress"); code != cli.ExitOK {
				t.Fatalf("import: exit %d\n%s%s", code, stdout, stderr)
			}
		}
		narinfo = pa.Hash + ".narinfo"
		data, err := os.ReadFile(filepath.Join(dir, narinfo))
		if err != nil {
			t.Fatal(err)
		}
		_, rest, _ := strings.Cut(string(data), "\nURL: ")
		nar, _, _ = strings.Cut(rest, "\n")
		return dir, narinfo, nar
	}
	for _, tt := range []struct {
		name   string
		damage func(dir, narinfo, nar string)
		code   int
		want   func(narinfo, nar string) string // the line's start
	}{
		{"flipped byte", func(dir, _, nar string) {
			data, _ := os.ReadFile(filepath.Join(dir, nar))
			data[len(data)/2] ^= 1
			os.WriteFile(filepath.Join(dir, nar), data, 0o644)
		}, cli.ExitCorrupt, func(_, nar string) string { return nar + ": corrupt: file hash " }},
		{"truncated", func(dir, _, nar string) {
			os.Truncate(filepath.Join(dir, nar), 10)
		}, cli.ExitCorrupt, func(_, nar string) string { return nar + ": corrupt: 10 bytes, narinfo says FileSize " }},
		{"missing", func(dir, _, nar string) {
			os.Remove(filepath.Join(dir, nar))
		}, cli.ExitMissing, func(_, nar string) string {
			return nar + ": missing: not found (NAR file of " + pa.String() // and of the other path, whose NAR is the same
		}},
		{"garbage narinfo", func(dir, narinfo, _ string) {
			os.WriteFile(filepath.Join(dir, narinfo), append(bytes.Repeat([]byte{1, 2}, 150), ": x"...), 0o644)
		}, cli.ExitCorrupt, func(narinfo, _ string) string { return narinfo + ": corrupt: parse narinfo line 1: no newline after " }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir, narinfo, nar := newCache()
			tt.damage(dir, narinfo, nar)
			code, stdout, stderr := run(t, "verify", dir, "--allow-unsigned", "--no-progress")
			var line string
			for l := range strings.Lines(stdout) {
				if strings.HasPrefix(l, tt.want(narinfo, nar)) {
					line = l
				}
			}
			switch {
			case code != tt.code:
				t.Errorf("exit %d, want %d\n%s%s", code, tt.code, stdout, stderr)
			case line == "":
				t.Errorf("no line starting %q:\n%s", tt.want(narinfo, nar), stdout)
			case strings.Count(line, narinfo)+strings.Count(line, nar) != 1 || strings.Count(line, "corrupt")+strings.Count(line, "missing") > 2:
				t.Errorf("line names the file or says its kind more than once: %s", line)
			case len(line) > 400: // a file's two hashes, its narinfo's two and the path
				t.Errorf("line of %d bytes, want at most 400: %s", len(line), line)
			case !strings.Contains(stdout, "damaged: "+pa.String()):
				t.Errorf("%s not named damaged:\n%s", pa, stdout)
			case strings.Contains(stdout, "has no narinfo"):
				t.Errorf("a path whose narinfo is damaged called missing too:\n%s", stdout)
			case !strings.Contains(stdout, "carried 1\n") || strings.Contains(stdout, "(; "):
				t.Errorf("the bundles that carried the path, which have no targets, not named as such:\n%s", stdout)
			}
		})
	}
}

// TestVerifySignerLine: the summary says a bundle was accepted without a
// trusted signature only when it was (--allow-unsigned), not for any
// warning: an empty cache, even one a half-imported volume set keeps
// files in, has nothing signed.
func TestVerifySignerLine(t *testing.T) {
	dir, pubFile := smallBundle(t)
	empty := t.TempDir()
	if code, _, stderr := run(t, "import", dir, "--cache", empty, "--public-key", pubFile); code != 0 {
		t.Fatal(stderr)
	}
	for _, name := range []string{"nix-airgap/bundles", "nar"} {
		os.RemoveAll(filepath.Join(empty, name))
	}
	names, _ := filepath.Glob(filepath.Join(empty, "*.narinfo"))
	for _, name := range names {
		os.Remove(name)
	}
	for _, tt := range []struct {
		args      []string
		want, not string
	}{
		{[]string{"verify", empty, "--public-key", pubFile}, "nothing signed in it", "--allow-unsigned"},
		{[]string{"verify", dir, "--allow-unsigned"}, "accepted without a trusted signature (--allow-unsigned)", "manifest.json: verify manifest.json"},
		{[]string{"verify", dir, "--public-key", pubFile}, "signed by cli-test-1", "--allow-unsigned"},
	} {
		code, stdout, stderr := run(t, tt.args...)
		if out := stdout + stderr; code != 0 || !strings.Contains(out, tt.want) || strings.Contains(out, tt.not) {
			t.Errorf("%s: exit %d, %q; want 0, %q, not %q", strings.Join(tt.args, " "), code, out, tt.want, tt.not)
		}
	}
}

// TestVerifyCacheRotatedKey: a cache holds what every packing key signed.
// Given only the key after a rotation, verify names the older key's
// records and narinfos as signed by a key not trusted and calls none of
// them damaged, as no import --repair mends them; a narinfo signed by a
// key no record names is still damaged.
func TestVerifyCacheRotatedKey(t *testing.T) {
	tmp := t.TempDir()
	cacheDir := filepath.Join(tmp, "cache")
	var pubs []string
	var first storepath.Path
	for i, base := range []string{"0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello", "1a7bjbqy2xhvqzk0h7q4wn8xg0mjrw9m-user"} {
		sk, pk, err := signing.Generate(fmt.Sprintf("pack.site-%d", i+1))
		if err != nil {
			t.Fatal(err)
		}
		pub := filepath.Join(tmp, fmt.Sprintf("pack-%d.pub", i+1))
		os.WriteFile(pub, []byte(pk.String()), 0o644)
		pubs = append(pubs, pub)
		dir, paths := writeSignedBundle(t, sk, []string{base})
		if i == 0 {
			first = paths[0]
		}
		if code, stdout, stderr := run(t, "import", dir, "--cache", cacheDir, "--public-key", pub, "--no-progress"); code != cli.ExitOK {
			t.Fatalf("import: exit %d\n%s%s", code, stdout, stderr)
		}
	}
	if code, stdout, stderr := run(t, "verify", cacheDir, "--public-key", pubs[0], "--public-key", pubs[1], "--no-progress"); code != cli.ExitOK {
		t.Fatalf("verify with both keys: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr := run(t, "verify", cacheDir, "--public-key", pubs[1], "--no-progress")
	if code != cli.ExitUntrusted || !strings.Contains(stdout, "untrusted: "+first.String()+": signed by pack.site-1, not a trusted key\n") ||
		strings.Contains(stdout, "damaged") || strings.Contains(stdout, "to repair") || !strings.Contains(stderr, "To trust the signers named above, give the public key of every packing key that signed bundles imported into the cache, each with --public-key") {
		t.Errorf("verify of a cache with the newer key alone: exit %d, want %d, the older key's paths untrusted, none damaged, and the hint to give the key:\n%s%s", code, cli.ExitUntrusted, stdout, stderr)
	}
	// A narinfo re-signed by a name no record has: damage, or tampering.
	name := filepath.Join(cacheDir, first.Hash+".narinfo")
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(name, bytes.ReplaceAll(data, []byte("Sig: pack.site-1:"), []byte("Sig: stranger-1:")), 0o644)
	code, stdout, stderr = run(t, "verify", cacheDir, "--public-key", pubs[1], "--no-progress")
	if code != cli.ExitUntrusted || !strings.Contains(stdout, "damaged: "+first.String()+"\n") {
		t.Errorf("verify of a cache with a narinfo signed by a stranger: exit %d, want %d and the path damaged:\n%s%s", code, cli.ExitUntrusted, stdout, stderr)
	}
}
