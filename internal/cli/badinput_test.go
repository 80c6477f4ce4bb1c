package cli_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/check"
	"github.com/nix-airgap/nix-airgap/internal/cli"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// badInputs makes one of each kind of bad input a command that reads a
// bundle or a cache may be given, and returns them by name with a good
// bundle and the key the commands trust.
func badInputs(t *testing.T) (in map[string]string, good, pub string) {
	t.Helper()
	dir := t.TempDir()
	in = map[string]string{}
	put := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sk, pk, _ := signing.Generate("bad-input-1")
	pub = put("key.pub", []byte(pk.String()))
	good, _ = writeSignedBundle(t, sk, []string{"0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello.txt"})

	in["nonexistent path"] = filepath.Join(dir, "nowhere")
	in["empty dir"] = filepath.Join(dir, "empty")
	os.Mkdir(in["empty dir"], 0o755)
	put("notes/a.txt", []byte("hello\n"))
	in["dir of unrelated files"] = filepath.Join(dir, "notes")
	// What a pack killed before its manifest leaves: all but the manifest.
	in["unfinished pack dir"] = copyDir(t, good, filepath.Join(dir, "unfinished"), bundle.ManifestName, bundle.SigName)
	// Narinfos and NAR files, but no nix-cache-info: no binary cache.
	in["binary cache without nix-cache-info"] = copyDir(t, good, filepath.Join(dir, "no-cache-info"), bundle.ManifestName, bundle.SigName, bundle.CacheInfo)
	in["plain text file"] = put("passwd", bytes.Repeat([]byte("root:x:0:0:root:/root:/bin/bash\n"), 40))
	in["empty file"] = put("empty.tar", nil)
	whole := tarBundle(t, sk, 4)
	in["truncated tar"] = put("cut.tar", whole[:len(whole)/2])
	// The manifest and its signature come last, each after its 512-byte
	// header, the signature in one block, then the end-of-archive
	// marker's 1024 bytes.
	in["tar cut in its manifest"] = put("cut-manifest.tar", whole[:bytes.Index(whole, []byte(bundle.ManifestName+"\x00"))+512+10])
	in["tar cut before its signature"] = put("cut-sig.tar", whole[:len(whole)-1024-512-512])
	in["tar without its end marker"] = put("unended.tar", whole[:len(whole)-1024])
	var other bytes.Buffer
	tw := tar.NewWriter(&other)
	tw.WriteHeader(&tar.Header{Name: "notes/a.txt", Mode: 0o644, Size: 6, Typeflag: tar.TypeReg})
	tw.Write([]byte("hello\n"))
	tw.Close()
	in["tar of unrelated files"] = put("notes.tar", other.Bytes())
	in["flipped byte in a NAR"] = copyDir(t, good, filepath.Join(dir, "flipped-nar"))
	nars, _ := filepath.Glob(filepath.Join(in["flipped byte in a NAR"], "nar", "*"))
	flipByte(t, nars[0], -1)
	in["flipped byte in manifest.json"] = copyDir(t, good, filepath.Join(dir, "flipped-manifest"))
	flipByte(t, filepath.Join(in["flipped byte in manifest.json"], bundle.ManifestName), bytes.Index(mustReadFile(t, filepath.Join(good, bundle.ManifestName)), []byte(`"test"`))+1)
	otherKey, _, _ := signing.Generate("stranger-1")
	in["signed by an untrusted key"], _ = writeSignedBundle(t, otherKey, []string{"0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello.txt"})
	in["unsigned bundle"] = copyDir(t, good, filepath.Join(dir, "unsigned"), bundle.SigName)

	cacheDir := filepath.Join(dir, "cache")
	if code, _, stderr := run(t, "import", good, "--cache", cacheDir, "--public-key", pub, "--no-progress"); code != 0 {
		t.Fatalf("import: %s", stderr)
	}
	in["cache dir where a bundle belongs"] = cacheDir
	// The guide keeps the inventory on the medium beside the bundles.
	in["cache inventory"] = filepath.Join(dir, "inventory.json")
	if code, _, stderr := run(t, "inventory", "--cache", cacheDir, "--out", in["cache inventory"]); code != 0 {
		t.Fatalf("inventory: %s", stderr)
	}
	in["bundle dir where a cache belongs"] = copyDir(t, good, filepath.Join(dir, "bundle-copy"))
	in["bundle tar where a cache belongs"] = put("bundle.tar", whole)
	vols, volPub := writeVolumes(t, 6)
	if len(vols) < 3 {
		t.Fatalf("%d volumes", len(vols))
	}
	// All but the second: verify and import take them all, the others one.
	in["volume set missing a volume"] = strings.Join(slices.Delete(slices.Clone(vols), 1, 2), " ")
	in["volume key"] = volPub
	return in, good, pub
}

// tarBundle is a bundle tar of n one-file paths, signed by sk.
func tarBundle(t *testing.T, sk signing.SecretKey, n int) []byte {
	t.Helper()
	var out bytes.Buffer
	w, err := bundle.NewTarWriter(&out, "/nix/store", bundle.WriterOptions{Key: &sk, Compression: "none"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		p, _ := storepath.Dir("/nix/store").Base(fmt.Sprintf("%032d-t%d", i, i))
		content := bytes.Repeat([]byte{byte('a' + i)}, 4096)
		var buf bytes.Buffer
		nw := nar.NewWriter(&buf)
		nw.WriteHeader(&nar.Header{Path: "/", Type: nar.TypeRegular, Size: int64(len(content))})
		nw.Write(content)
		nw.Close()
		if err := w.AddNAR(context.Background(), p, &buf, bundle.PathMeta{Roles: role.Runtime}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(context.Background(), bundle.ManifestHeader{Tool: "test", Mode: role.ModeRuntime}); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// copyDir copies the bundle directory src to dst, leaving out the files
// named by leave.
func copyDir(t *testing.T, src, dst string, leave ...string) string {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if slices.Contains(leave, rel) {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// flipByte flips the bits of the byte at off of name (-1: its middle).
func flipByte(t *testing.T, name string, off int) {
	t.Helper()
	data := mustReadFile(t, name)
	if off < 0 {
		off = len(data) / 2
	}
	data[off] ^= 0xff
	if err := os.WriteFile(name, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// goIsms are what a formatting or nil mistake, or an error passed on
// unexplained, leaves in a message.
var goIsms = regexp.MustCompile(`%!|<nil>|\{\}|&\{|0x[0-9a-f]{6,}|archive/tar:|context canceled`)

// repeated finds a word said twice across a colon, as wrapping an error
// that says it already does: "missing: missing".
func repeated(msg string) string {
	parts := strings.Split(msg, ": ")
	for i := 1; i < len(parts); i++ {
		before, after := strings.Fields(parts[i-1]), strings.Fields(parts[i])
		if len(before) > 0 && len(after) > 0 && before[len(before)-1] == after[0] {
			return parts[i-1] + ": " + parts[i]
		}
	}
	return ""
}

// TestBadInputExitCodes gives every command that reads a bundle or a
// cache each kind of bad input: each exits with the code the exit-code
// table gives that kind, whichever command it is, and says so in one
// line that starts with the command and names the input, and, on stdout
// or stderr, what is wrong with it.
func TestBadInputExitCodes(t *testing.T) {
	in, good, pub := badInputs(t)
	tmp := t.TempDir()
	target := "/nix/store/0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello.txt"
	roots := filepath.Join(tmp, "roots")
	if err := os.WriteFile(roots, []byte(target+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	columns := []struct {
		name string
		args []string // IN stands for the input, KEY for its key file
		nix  bool     // the command asks Nix for its store dir before it reads IN
	}{
		{"verify", []string{"verify", "IN", "--public-key", "KEY", "--no-progress"}, false},
		{"import", []string{"import", "IN", "--cache", "NEWCACHE", "--public-key", "KEY", "--no-progress"}, false},
		{"show", []string{"show", "IN", "--public-key", "KEY"}, false},
		{"diff OLD", []string{"diff", "IN", good}, false},
		{"diff NEW", []string{"diff", good, "IN"}, false},
		{"pack --since", []string{"pack", target, "--out", filepath.Join(tmp, "out"), "--since", "IN", "--substituters", "", "--no-progress"}, false},
		{"plan --since", []string{"plan", target, "--since", "IN", "--substituters", ""}, false},
		{"check", []string{"check", target, "--against", "IN"}, true},
		{"inventory", []string{"inventory", "--cache", "IN", "--out", filepath.Join(tmp, "inv.json")}, false},
		{"gc", []string{"gc", "--cache", "IN", "--keep-bundles", "1", "--dry-run", "--no-progress"}, false},
		{"gc --roots", []string{"gc", "--cache", "IN", "--roots", roots, "--dry-run", "--no-progress"}, false},
		{"import --cache", []string{"import", good, "--cache", "IN", "--public-key", pub, "--no-progress"}, false},
		{"serve", []string{"serve", "IN", "--listen", "127.0.0.1:0"}, false},
	}
	const (
		na = -1 // not bad input for the command, or one it needs Nix to go on with
		ok = cli.ExitOK
		U  = cli.ExitUntrusted
		C  = cli.ExitCorrupt
		M  = cli.ExitMissing
	)
	rows := []struct {
		name  string
		codes []int  // by column
		says  string // what stdout or stderr must say of it
	}{
		// verify, import, show, diff OLD, diff NEW, pack --since, plan --since, check, inventory, gc, gc --roots, import --cache, serve
		{"nonexistent path", []int{M, M, M, M, M, M, M, M, M, M, M, na, M}, "no such file or directory"},
		{"empty dir", []int{M, M, M, M, M, M, M, M, M, M, M, na, M}, "an empty directory"},
		{"dir of unrelated files", []int{C, C, C, C, C, C, C, C, C, C, C, C, C}, "not a (bundle|cache): a directory without manifest.json"},
		{"unfinished pack dir", []int{M, M, M, M, M, M, M, na, na, M, ok, na, na}, "a bundle whose pack did not finish|no bundle was imported"},
		{"binary cache without nix-cache-info", []int{na, na, na, na, na, na, na, M, M, M, M, na, M}, "^nix-airgap: [a-z]+( source| --against)? [^ ]+: no nix-cache-info, which every binary cache has\n$"},
		{"plain text file", []int{C, C, C, C, C, C, C, C, C, C, C, C, C}, "not a tar stream|not a cache: a file"},
		{"empty file", []int{C, C, C, C, C, C, C, C, C, C, C, C, C}, "empty|not a cache: a file"},
		{"truncated tar", []int{C, C, C, C, C, C, C, C, C, C, C, C, C}, "cut short|not a cache: a bundle tar; give the cache import made"},
		{"tar cut in its manifest", []int{C, C, C, C, C, C, C, C, na, na, na, na, na}, "cut short"},
		{"tar cut before its signature", []int{C, C, C, C, C, C, C, C, na, na, na, na, na}, "cut short"},
		{"tar without its end marker", []int{ok, ok, ok, ok, ok, na, na, na, na, na, na, na, na}, ""},
		{"tar of unrelated files", []int{C, C, C, C, C, C, C, C, C, C, C, C, C}, "not a bundle: a tar without manifest.json|not a cache: a file"},
		{"flipped byte in a NAR", []int{C, C, ok, ok, ok, na, na, na, na, na, na, na, na}, "fileHash|sha256|size"},
		{"flipped byte in manifest.json", []int{U, U, U, ok, ok, na, na, na, na, na, na, na, na}, "signature|not signed by a trusted key"},
		{"signed by an untrusted key", []int{U, U, U, ok, ok, na, na, na, na, na, na, na, na}, "not signed by a trusted key|stranger-1"},
		{"unsigned bundle", []int{U, U, U, ok, ok, na, na, na, na, na, na, na, na}, "unsigned|not signed by a trusted key"},
		{"cache dir where a bundle belongs", []int{ok, C, ok, ok, ok, na, na, na, ok, ok, ok, ok, na}, "not a bundle: a long-lived cache"},
		{"bundle dir where a cache belongs", []int{na, na, na, na, na, na, na, na, C, C, C, C, na}, "not a cache: a bundle"},
		{"bundle tar where a cache belongs", []int{na, na, na, na, na, na, na, na, C, C, C, C, C}, "not a cache: a bundle tar; give the cache import made \\(its --cache\\)"},
		{"cache inventory", []int{C, C, ok, ok, ok, na, na, C, C, C, C, C, C}, "not a (bundle|cache): a cache inventory \\(nix-airgap inventory --out\\): it goes to the connected side, for pack --since"},
		{"volume set missing a volume", []int{ok, ok, ok, ok, ok, na, na, na, na, na, na, na, na}, ""},
	}
	for _, row := range rows {
		input := in[row.name]
		for i, col := range columns {
			want := row.codes[i]
			if want == na {
				continue
			}
			t.Run(col.name+" of a "+row.name, func(t *testing.T) {
				if col.nix {
					nixtest.Require(t)
				}
				var args []string
				for _, a := range col.args {
					switch {
					case a == "IN" && (col.name == "verify" || col.name == "import"):
						args = append(args, strings.Fields(input)...)
					case a == "IN":
						args = append(args, strings.Fields(input)[0])
					case a == "KEY" && row.name == "volume set missing a volume":
						args = append(args, in["volume key"])
					case a == "KEY":
						args = append(args, pub)
					case a == "NEWCACHE":
						args = append(args, filepath.Join(t.TempDir(), "cache"))
					default:
						args = append(args, a)
					}
				}
				code, stdout, stderr := run(t, args...)
				if code != want {
					t.Errorf("%s of a %s: exit %d, want %d\n%s%s", col.name, row.name, code, want, stdout, stderr)
					return
				}
				if code == 0 {
					return
				}
				checkErrorLine(t, col.name+" of a "+row.name, args[0], strings.Fields(input)[0], stderr)
				if _, help, _ := run(t, "help", args[0]); !strings.Contains(help, fmt.Sprintf("\n  %3d  ", code)) {
					t.Errorf("help %s does not list exit code %d", args[0], code)
				}
				if !regexp.MustCompile(row.says).MatchString(stdout + stderr) {
					t.Errorf("%s of a %s says neither on stdout nor stderr %q:\n%s%s", col.name, row.name, row.says, stdout, stderr)
				}
				if m := goIsms.FindString(stdout + stderr); m != "" {
					t.Errorf("%s of a %s: %q in\n%s%s", col.name, row.name, m, stdout, stderr)
				}
				for _, line := range strings.Split(stdout+stderr, "\n") {
					if r := repeated(line); r != "" {
						t.Errorf("%s of a %s: %q says a word twice", col.name, row.name, r)
					}
				}
			})
		}
	}
	// Bad input stays as it was: gc refuses a directory without
	// nix-cache-info before it writes its lock file there.
	noInfo := in["binary cache without nix-cache-info"]
	if ents, err := os.ReadDir(noInfo); err != nil || slices.ContainsFunc(ents, func(e os.DirEntry) bool { return strings.HasPrefix(e.Name(), ".") }) {
		t.Errorf("%s after the commands: %v, %v; want it as it was, no lock file in it", noInfo, ents, err)
	}
	// check reads a tar without its end marker as whole, as verify does
	// (above, it would need Nix to go on).
	if _, err := check.OpenSource(context.Background(), in["tar without its end marker"], "/nix/store", nil); err != nil {
		t.Errorf("check's source of a tar without its end marker: %v", err)
	}
}

// checkErrorLine checks that stderr holds one error line, "nix-airgap:
// CMD ...", that names input once and says CMD once (a hint for the user
// may follow it).
func checkErrorLine(t *testing.T, what, cmd, input, stderr string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	first := lines[0]
	switch {
	case !strings.HasPrefix(first, "nix-airgap: "+cmd+" ") && !strings.HasPrefix(first, "nix-airgap: "+cmd+":"):
		t.Errorf("%s: stderr %q, want it to start with the command", what, stderr)
	case strings.Count(stderr, "nix-airgap:") != 1 || len(lines) > 2:
		t.Errorf("%s: stderr %q, want one error line", what, stderr)
	case strings.Count(first, input) != 1:
		t.Errorf("%s: stderr %q, want it to name %s once", what, stderr, input)
	case regexp.MustCompile(`: (verify|import|show|diff|inventory|pack|plan|gc|check)[ :]`).MatchString(strings.TrimPrefix(first, "nix-airgap: ")):
		t.Errorf("%s: stderr %q: a command's prefix in the middle", what, stderr)
	}
}
