package cli_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cli"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// TestImportRepairSaysWhatItChecked: import --repair checks only the
// paths its bundle carries, and says so: damage to another path of the
// cache is neither mended nor denied, and verify CACHE is named for it.
func TestImportRepairSaysWhatItChecked(t *testing.T) {
	sk, pk, _ := signing.Generate("cli-test-1")
	pub := filepath.Join(t.TempDir(), "key.pub")
	os.WriteFile(pub, []byte(pk.String()), 0o644)
	dirA, paths := writeSignedBundle(t, sk, []string{"0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello.txt"})
	dirB, _ := writeSignedBundle(t, sk, []string{"1a7bjbqy2xhvqzk0h7q4wn8xg0mjrw9m-other.txt"})
	a := paths[0]
	cacheDir := filepath.Join(t.TempDir(), "cache")
	for _, b := range []string{dirA, dirB} {
		if code, stdout, stderr := run(t, "import", b, "--cache", cacheDir, "--public-key", pub, "--no-progress"); code != cli.ExitOK {
			t.Fatalf("import %s: exit %d\n%s%s", b, code, stdout, stderr)
		}
	}
	if err := os.WriteFile(filepath.Join(cacheDir, a.Hash+".narinfo"), []byte("garbage\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// B does not carry the damaged path: it checks its own and says so.
	code, stdout, stderr := run(t, "import", dirB, "--cache", cacheDir, "--public-key", pub, "--repair", "--no-progress")
	for _, want := range []string{
		"repaired 0 damaged paths in " + cacheDir + " (0 B of NAR files replaced); checked 1 path, the bundle's paths the cache had\n",
		"only paths this bundle carries were checked: nix-airgap verify " + cacheDir + " --public-key KEY checks the rest of the cache\n",
	} {
		if code != cli.ExitOK || !strings.Contains(stdout, want) {
			t.Errorf("import --repair of a bundle without the damaged path: exit %d, want 0 and %q:\n%s%s", code, want, stdout, stderr)
		}
	}
	// The verify it names runs as printed, given the key, and finds the damage.
	_, advice, _ := strings.Cut(stdout, "were checked: nix-airgap ")
	advice, _, _ = strings.Cut(advice, " checks the rest")
	args := strings.Fields(strings.ReplaceAll(advice, "KEY", pub))
	code, stdout, stderr = run(t, args...)
	if code == cli.ExitOK || code == cli.ExitUsage || !strings.Contains(stdout, a.String()) {
		t.Errorf("%q after a repair by a bundle without the damaged path: exit %d, want a failure naming %s damaged:\n%s%s", args, code, a, stdout, stderr)
	}

	// A carries it, and mends it.
	code, stdout, stderr = run(t, "import", dirA, "--cache", cacheDir, "--public-key", pub, "--repair", "--no-progress")
	if want := "repaired: " + a.String() + "\nrepaired 1 damaged path in " + cacheDir; code != cli.ExitOK || !strings.Contains(stdout, want) {
		t.Errorf("import --repair of the bundle with the damaged path: exit %d, want 0 and %q:\n%s%s", code, want, stdout, stderr)
	}
	if code, stdout, stderr := run(t, "verify", cacheDir, "--public-key", pub); code != cli.ExitOK {
		t.Errorf("verify after the repair: exit %d\n%s%s", code, stdout, stderr)
	}
}

// TestImportRepairCounts: the paths import --repair says it checked are
// the bundle's paths whose narinfo the cache had, as many as it finds
// already there; a path new to the cache whose NAR file the cache has
// (another path's, of the same bytes) is added, not counted as checked.
// verify of the cache counts each store path once, however many share a
// NAR file.
func TestImportRepairCounts(t *testing.T) {
	sk, pk, _ := signing.Generate("cli-test-1")
	pub := filepath.Join(t.TempDir(), "key.pub")
	os.WriteFile(pub, []byte(pk.String()), 0o644)
	// Every path's NAR is the same bytes, so the bundles share one NAR file.
	dirA, _ := writeSignedBundle(t, sk, []string{"0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello.txt", "1a7bjbqy2xhvqzk0h7q4wn8xg0mjrw9m-other.txt"})
	dirB, _ := writeSignedBundle(t, sk, []string{"1a7bjbqy2xhvqzk0h7q4wn8xg0mjrw9m-other.txt", "2bzq4pxhf4nb4q8xl4qvq0wq6qr6khm5-third.txt"})
	cacheDir := filepath.Join(t.TempDir(), "cache")
	if code, stdout, stderr := run(t, "import", dirA, "--cache", cacheDir, "--public-key", pub, "--no-progress"); code != cli.ExitOK {
		t.Fatalf("import %s: exit %d\n%s%s", dirA, code, stdout, stderr)
	}
	code, stdout, stderr := run(t, "import", dirB, "--cache", cacheDir, "--public-key", pub, "--repair", "--no-progress")
	for _, want := range []string{
		"repaired 0 damaged paths in " + cacheDir + " (0 B of NAR files replaced); checked 1 path, the bundle's paths the cache had\n",
		": 1 path added (0 B), 1 already there\n",
	} {
		if code != cli.ExitOK || !strings.Contains(stdout, want) {
			t.Errorf("import --repair of a bundle with one path new: exit %d, want 0 and %q:\n%s%s", code, want, stdout, stderr)
		}
	}
	code, stdout, stderr = run(t, "verify", cacheDir, "--public-key", pub)
	if want := ": OK: 3 store paths and 2 other files, "; code != cli.ExitOK || !strings.Contains(stdout, want) {
		t.Errorf("verify of the cache: exit %d, want 0 and %q:\n%s%s", code, want, stdout, stderr)
	}

	// The shared NAR file damaged: a repair by A, which carries one of
	// the three paths whose file it is, mends the file and names the
	// path it checked, not the others.
	cache2 := filepath.Join(t.TempDir(), "cache")
	if code, stdout, stderr := run(t, "import", dirB, "--cache", cache2, "--public-key", pub, "--no-progress"); code != cli.ExitOK {
		t.Fatalf("import %s: exit %d\n%s%s", dirB, code, stdout, stderr)
	}
	nars, _ := filepath.Glob(filepath.Join(cache2, "nar", "*"))
	if len(nars) != 1 {
		t.Fatalf("NAR files %q, want one shared", nars)
	}
	if err := os.WriteFile(nars[0], []byte("damaged"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = run(t, "import", dirA, "--cache", cache2, "--public-key", pub, "--repair", "--no-progress")
	if want := "repaired: /nix/store/1a7bjbqy2xhvqzk0h7q4wn8xg0mjrw9m-other.txt\nrepaired 1 damaged path in " + cache2; code != cli.ExitOK || !strings.Contains(stdout, want) || !strings.Contains(stdout, "; checked 1 path, ") {
		t.Errorf("import --repair of a damaged shared file: exit %d, want 0, %q and 1 path checked:\n%s%s", code, want, stdout, stderr)
	}
	if code, stdout, stderr := run(t, "verify", cache2, "--public-key", pub); code != cli.ExitOK {
		t.Errorf("verify after the repair: exit %d\n%s%s", code, stdout, stderr)
	}
}

// TestImportJSON: import --json reports what it did as JSON on stdout, in
// the documented scheme, and a refusal as its problems, stdout holding
// nothing else.
func TestImportJSON(t *testing.T) {
	dir, pub := smallBundle(t)
	cacheDir := filepath.Join(t.TempDir(), "cache")
	code, stdout, stderr := run(t, "import", dir, "--cache", cacheDir, "--public-key", pub, "--json", "--no-progress")
	var rep struct {
		OK    bool
		Added struct{ Paths int }
	}
	if err := json.Unmarshal([]byte(stdout), &rep); code != cli.ExitOK || err != nil || !rep.OK || rep.Added.Paths != 1 {
		t.Fatalf("import --json: exit %d, %v, want 0 and 1 path added:\n%s%s", code, err, stdout, stderr)
	}
	checkJSONScheme(t, "import", stdout)
	code, stdout, stderr = run(t, "import", dir, "--cache", cacheDir, "--public-key", pub, "--json", "--no-progress", "--repair")
	if code != cli.ExitOK || !strings.Contains(stdout, `"repaired": []`) {
		t.Errorf("import --json --repair: exit %d, want 0 and an empty repaired list:\n%s%s", code, stdout, stderr)
	}
	checkJSONScheme(t, "import", stdout)

	_, otherPub := smallBundle(t)
	code, stdout, stderr = run(t, "import", dir, "--cache", cacheDir, "--public-key", otherPub, "--json", "--no-progress")
	if code != cli.ExitUntrusted || !strings.Contains(stdout, `"ok": false`) || !strings.Contains(stdout, `"kind": "untrusted"`) || !strings.Contains(stderr, "in the JSON report") {
		t.Errorf("import --json of a bundle signed by another key: exit %d, want %d and the problem as JSON:\n%s%s", code, cli.ExitUntrusted, stdout, stderr)
	}
	checkJSONScheme(t, "import", stdout)
}

// registryBundle is a signed bundle of one path that carries a flake
// registry locking it.
func registryBundle(t *testing.T, sk signing.SecretKey) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "bundle")
	w, err := bundle.NewDirWriter(dir, "/nix/store", bundle.WriterOptions{Key: &sk})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := storepath.DefaultDir.Base("0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-source")
	var buf bytes.Buffer
	nw := nar.NewWriter(&buf)
	nw.WriteHeader(&nar.Header{Path: "/", Type: nar.TypeRegular, Size: 6})
	nw.Write([]byte("hello\n"))
	nw.Close()
	if err := w.AddNAR(t.Context(), p, &buf, bundle.PathMeta{Roles: role.Source}); err != nil {
		t.Fatal(err)
	}
	reg := `{"version":2,"flakes":[{"from":{"type":"indirect","id":"src"},"to":{"type":"path","path":"` + p.String() + `"}}]}` + "\n"
	if err := w.AddFile(bundle.RegistryName, []byte(reg)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(t.Context(), bundle.ManifestHeader{Tool: "test", Mode: role.ModeSources}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestBadCacheRegistry: a cache's flake-registry.json that is not a
// version 2 registry is bad input in the cache. import of a bundle with a
// registry refuses it (exit 4), naming the file and the problem, and
// leaves the cache as it was; gc leaves the file as it is and serve
// leaves it out, each saying so in the same words.
func TestBadCacheRegistry(t *testing.T) {
	sk, pk, _ := signing.Generate("cli-registry-1")
	pub := filepath.Join(t.TempDir(), "key.pub")
	writeTestFile(t, pub, pk.String())
	b := registryBundle(t, sk)
	for _, tt := range []struct{ name, content, problem string }{
		{"version 1", `{"version":1,"flakes":[]}`, "not a version 2 flake registry: version 1"},
		{"garbled", `{"version":2,"flakes":[`, "not a version 2 flake registry: unexpected end of JSON input"},
		{"not JSON", "flakes = []\n", "not a version 2 flake registry: invalid character 'l' in literal false (expecting 'a')"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cacheDir := filepath.Join(t.TempDir(), "cache")
			if code, _, stderr := run(t, "import", b, "--cache", cacheDir, "--public-key", pub, "--no-progress"); code != 0 {
				t.Fatalf("import: exit %d\n%s", code, stderr)
			}
			// The path and the record go, so that the import below would
			// add them again.
			for _, f := range []string{"0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk.narinfo", "nix-airgap/bundles"} {
				os.RemoveAll(filepath.Join(cacheDir, f))
			}
			file := filepath.Join(cacheDir, bundle.RegistryName)
			writeTestFile(t, file, tt.content)
			said := file + ": " + tt.problem
			before := nixtest.TreeHash(t, cacheDir)

			code, stdout, stderr := run(t, "import", b, "--cache", cacheDir, "--public-key", pub, "--no-progress")
			if want := "nix-airgap: import: " + said + "\n"; code != cli.ExitCorrupt || stderr != want {
				t.Errorf("import: exit %d, stderr %q; want %d, %q\n%s", code, stderr, cli.ExitCorrupt, want, stdout)
			}
			if nixtest.TreeHash(t, cacheDir) != before {
				t.Errorf("the refused import changed the cache")
			}

			roots := filepath.Join(t.TempDir(), "roots")
			writeTestFile(t, roots, "/nix/store/0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-source\n")
			code, stdout, stderr = run(t, "gc", "--cache", cacheDir, "--roots", roots, "--dry-run", "--json", "--no-progress")
			var rep struct{ Warnings []string }
			json.Unmarshal([]byte(stdout), &rep)
			if code != 0 || !slices.Contains(rep.Warnings, said+": left as it is") {
				t.Errorf("gc: exit %d, warnings %q; want 0 and %q\n%s", code, rep.Warnings, said+": left as it is", stderr)
			}

			addr, logs, _ := startServe(t, cacheDir)
			resp, err := http.Get("http://" + addr + "/" + bundle.RegistryName)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != `{"version":2,"flakes":[]}`+"\n" || !strings.Contains(logs.String(), said) {
				t.Errorf("serve: registry %s, log\n%s\nwant an empty registry and the log saying %q", body, logs.String(), said)
			}
			if nixtest.TreeHash(t, cacheDir) != before {
				t.Errorf("gc --dry-run or serve changed the cache")
			}
		})
	}
}

// TestStoreDirMismatch: import into a cache of another store dir, and
// check --against one, are refused as wrong arguments (exit 2), naming
// both store dirs; import says the cache is unchanged, and it is.
func TestStoreDirMismatch(t *testing.T) {
	dir, _, pub := writeBundle(t, "0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello.txt")
	other := filepath.Join(t.TempDir(), "cache")
	info := "StoreDir: /custom/store\nWantMassQuery: 1\nPriority: 40\n"
	writeTestFile(t, filepath.Join(other, "nix-cache-info"), info)
	code, stdout, stderr := run(t, "import", dir, "--cache", other, "--public-key", pub, "--no-progress")
	want := "nix-airgap: import " + dir + ": refused, the cache is unchanged: wrong store dir: cache " + other + " is for store /custom/store, the bundle for store /nix/store\n"
	if code != cli.ExitUsage || !strings.HasSuffix(stderr, want) {
		t.Errorf("import into a cache of another store dir: exit %d, stderr %q; want %d and %q\n%s", code, stderr, cli.ExitUsage, want, stdout)
	}
	if entries, err := os.ReadDir(other); err != nil || len(entries) != 1 {
		t.Errorf("the refused import changed the cache: %v, %v", entries, err)
	}
	if data, err := os.ReadFile(filepath.Join(other, "nix-cache-info")); err != nil || string(data) != info {
		t.Errorf("the refused import changed nix-cache-info: %q, %v", data, err)
	}

	n := nixtest.New(t, nixtest.Options{})
	n.Setenv(t)
	code, _, stderr = run(t, "check", string(n.StoreDir)+"/0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello", "--against", other)
	want = "nix-airgap: check source " + other + ": wrong store dir: cache is for store /custom/store, not " + string(n.StoreDir) + "\n"
	if code != cli.ExitUsage || stderr != want {
		t.Errorf("check --against a cache of another store dir: exit %d, stderr %q; want %d and %q", code, stderr, cli.ExitUsage, want)
	}
}

// TestImportNewCacheSaysSo: an import into a directory that does not
// exist makes it, and says so on stderr at the default log level, and in
// --json, as for a bucket: a misspelt --cache would otherwise go
// unnoticed. Into one that exists, it says nothing of the kind.
func TestImportNewCacheSaysSo(t *testing.T) {
	dir, _, pub := writeBundle(t, "0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello.txt")
	typo := filepath.Join(t.TempDir(), "srv", "nix-cach")
	code, stdout, stderr := run(t, "import", dir, "--cache", typo, "--public-key", pub, "--no-progress")
	want := "warning: import " + dir + ": created cache " + typo + ", which did not exist\n"
	if code != cli.ExitOK || stderr != want {
		t.Errorf("import into a new directory: exit %d, stderr %q; want 0 and %q\n%s", code, stderr, want, stdout)
	}
	for _, tt := range []struct {
		cache       string
		wantCreated bool
	}{
		{filepath.Join(t.TempDir(), "new"), true},
		{typo, false},
	} {
		code, stdout, stderr := run(t, "import", dir, "--cache", tt.cache, "--public-key", pub, "--no-progress", "--json")
		var got struct {
			Created bool `json:"created"`
		}
		if err := json.Unmarshal([]byte(stdout), &got); code != cli.ExitOK || err != nil || got.Created != tt.wantCreated || strings.Contains(stderr, "created cache") != tt.wantCreated {
			t.Errorf("import --json into %s: exit %d, created %v (%v); want 0 and created %v, in the JSON and on stderr\n%s%s", tt.cache, code, got.Created, err, tt.wantCreated, stdout, stderr)
		}
	}
}
