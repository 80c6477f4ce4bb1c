package cli_test

import (
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/cli"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storage/s3test"
)

func TestMain(m *testing.M) { os.Exit(s3test.Main(m)) }

// TestGCNamesS3CacheAsGiven: gc names a bucket by its URL as the user
// gave it, endpoint and all, in its text and its JSON, as verify does:
// s3://BUCKET alone would be a bucket of AWS S3.
func TestGCNamesS3CacheAsGiven(t *testing.T) {
	url := s3test.Start(t).Bucket(t)
	dir, _, pub := writeBundle(t, "0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello.txt")
	if code, stdout, stderr := run(t, "import", dir, "--cache", url, "--public-key", pub, "--no-progress"); code != cli.ExitOK {
		t.Fatalf("import: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr := run(t, "gc", "--cache", url, "--keep-bundles", "1", "--grace", "0s", "--no-progress")
	if code != cli.ExitOK || !strings.Contains(stdout, "\n"+url+": removed 0 store paths") {
		t.Errorf("gc of %s: exit %d, want 0 and the cache named as given:\n%s%s", url, code, stdout, stderr)
	}
	code, stdout, stderr = run(t, "gc", "--cache", url, "--keep-bundles", "1", "--grace", "0s", "--json")
	var rep struct {
		Cache string `json:"cache"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); code != cli.ExitOK || err != nil || rep.Cache != url {
		t.Errorf("gc --json of %s: exit %d, %v, cache %q; want it named as given:\n%s%s", url, code, err, rep.Cache, stdout, stderr)
	}
}

// TestS3ErrorsNameTheCacheOnce: a bucket that is not there, a store that
// refuses the keys or does not answer fails each command with one error
// that names the cache once, as "op subject: problem", and the exit code
// that says which: a missing bucket is missing (5), a store that does not
// answer unavailable (75: try again later), a bucket without
// nix-cache-info missing (5) in the words a directory gets, the rest
// failures (1), none
// of them a bad command line. serve does not start with a bucket whose
// store is down alone, and one down does not hide another's mistake.
func TestS3ErrorsNameTheCacheOnce(t *testing.T) {
	srv, keyed := s3test.Start(t), s3test.StartWithKeys(t)
	missing := srv.URL("nosuch")
	bucket := keyed.Bucket(t)
	b := strings.SplitN(bucket, "?", 2)[0]
	addr := s3test.RefusedAddr(t)
	down := "s3://cache?endpoint=" + addr + "&scheme=http"
	refused := ": dial tcp " + addr + ": connect: connection refused\n" +
		"The object store did not answer: check that it runs and that the URL's endpoint is right, then run the same command again\n"
	dir, p, pub := writeBundle(t, "0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello.txt")
	out := filepath.Join(t.TempDir(), "inventory.json")
	// A profile whose secret the store does not take.
	creds := filepath.Join(t.TempDir(), "credentials")
	if err := os.WriteFile(creds, []byte("[site]\naws_access_key_id = "+keyed.AccessKey+"\naws_secret_access_key = wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", creds)
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_PROFILE", "")
	// A bucket whose store refuses to remove narinfos: gc of one of its
	// two paths is under way when it fails to remove the other's.
	keyed.UseKeys(t)
	two, paths, pub2 := writeBundleOf(t, []string{"0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello.txt", "1c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-other.txt"})
	kept := keyed.Bucket(t)
	if code, stdout, stderr := run(t, "import", two, "--cache", kept, "--public-key", pub2, "--no-progress"); code != cli.ExitOK {
		t.Fatalf("import: exit %d\n%s%s", code, stdout, stderr)
	}
	k := strings.SplitN(kept, "?", 2)[0]
	keyed.Deny(t, kept, "s3:DeleteObject", "*.narinfo")
	roots := filepath.Join(t.TempDir(), "roots")
	if err := os.WriteFile(roots, []byte(paths[0].String()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A bucket with narinfos and NAR files, but no nix-cache-info: no
	// binary cache, said as for a directory (TestBadInputExitCodes).
	noInfo := srv.Bucket(t)
	if code, stdout, stderr := run(t, "import", dir, "--cache", noInfo, "--public-key", pub, "--no-progress"); code != cli.ExitOK {
		t.Fatalf("import: exit %d\n%s%s", code, stdout, stderr)
	}
	nb, err := storage.Open(t.Context(), noInfo)
	if err != nil {
		t.Fatal(err)
	}
	if err := nb.Remove(t.Context(), cache.CacheInfoFile); err != nil {
		t.Fatal(err)
	}
	nb.Close()
	const noCacheInfo = ": no nix-cache-info, which every binary cache has\n"
	const (
		badSig  = "The request signature we calculated does not match the signature you provided. Check your key and signing method.\n"
		fromEnv = "the store refused the credentials of AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (from the environment): "
	)
	for _, tt := range []struct {
		args                []string
		id, secret, profile string // AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_PROFILE
		code                int
		want                string
	}{
		{[]string{"inventory", "--cache", missing, "--out", out}, "", "", "", cli.ExitMissing, "nix-airgap: inventory: open s3://nosuch/nix-cache-info: no such bucket\n"},
		{[]string{"show", missing}, "", "", "", cli.ExitMissing, "nix-airgap: show: list s3://nosuch/nix-airgap/bundles: no such bucket\n"},
		{[]string{"diff", missing, missing}, "", "", "", cli.ExitMissing, "nix-airgap: diff: list s3://nosuch/nix-airgap/bundles: no such bucket\n"},
		{[]string{"gc", "--cache", missing, "--keep-bundles", "1"}, "", "", "", cli.ExitMissing, "nix-airgap: gc: open s3://nosuch/nix-cache-info: no such bucket\n"},
		{[]string{"gc", "--cache", missing, "--keep-bundles", "1", "--dry-run"}, "", "", "", cli.ExitMissing, "nix-airgap: gc: open s3://nosuch/nix-cache-info: no such bucket\n"},
		{[]string{"verify", missing, "--public-key", pub, "--no-progress"}, "", "", "", cli.ExitMissing, "nix-airgap: verify: open s3://nosuch/nix-cache-info: no such bucket\n"},
		{[]string{"verify", dir, "--against", missing, "--public-key", pub, "--no-progress"}, "", "", "", cli.ExitMissing, "nix-airgap: verify: --against: open s3://nosuch/nix-cache-info: no such bucket\n"},
		{[]string{"check", p.String(), "--against", missing}, "", "", "", cli.ExitMissing, "nix-airgap: check: open s3://nosuch/nix-cache-info: no such bucket\n"},
		{[]string{"serve", missing, "--listen", "127.0.0.1:0"}, "", "", "", cli.ExitMissing, "nix-airgap: serve: open s3://nosuch/nix-cache-info: no such bucket\n"},

		{[]string{"inventory", "--cache", noInfo, "--out", out}, "", "", "", cli.ExitMissing, "nix-airgap: inventory " + noInfo + noCacheInfo},
		{[]string{"gc", "--cache", noInfo, "--keep-bundles", "1", "--dry-run", "--no-progress"}, "", "", "", cli.ExitMissing, "nix-airgap: gc " + noInfo + noCacheInfo},
		{[]string{"gc", "--cache", noInfo, "--roots", roots, "--dry-run", "--no-progress"}, "", "", "", cli.ExitMissing, "nix-airgap: gc " + noInfo + noCacheInfo},
		{[]string{"verify", noInfo, "--public-key", pub, "--no-progress"}, "", "", "", cli.ExitMissing, "nix-airgap: verify " + noInfo + noCacheInfo},
		{[]string{"verify", dir, "--against", noInfo, "--public-key", pub, "--no-progress"}, "", "", "", cli.ExitMissing, "nix-airgap: verify: --against " + noInfo + noCacheInfo},
		{[]string{"check", p.String(), "--against", noInfo}, "", "", "", cli.ExitMissing, "nix-airgap: check source " + noInfo + noCacheInfo},
		{[]string{"serve", noInfo, "--listen", "127.0.0.1:0"}, "", "", "", cli.ExitMissing, "nix-airgap: serve " + noInfo + noCacheInfo},
		{[]string{"show", noInfo}, "", "", "", cli.ExitMissing, "nix-airgap: show " + noInfo + noCacheInfo},
		{[]string{"diff", noInfo, dir}, "", "", "", cli.ExitMissing, "nix-airgap: diff " + noInfo + noCacheInfo},
		{[]string{"diff", dir, noInfo}, "", "", "", cli.ExitMissing, "nix-airgap: diff " + noInfo + noCacheInfo},

		{[]string{"verify", bucket, "--public-key", pub, "--no-progress"}, keyed.AccessKey, "wrong", "", cli.ExitFailure, "nix-airgap: verify: open " + b + "/nix-cache-info: " + fromEnv + badSig},
		{[]string{"verify", dir, "--against", bucket, "--public-key", pub, "--no-progress"}, keyed.AccessKey, "wrong", "", cli.ExitFailure, "nix-airgap: verify: --against: open " + b + "/nix-cache-info: " + fromEnv + badSig},
		{[]string{"import", dir, "--cache", bucket, "--public-key", pub, "--no-progress"}, keyed.AccessKey, "wrong", "", cli.ExitFailure, "nix-airgap: import " + dir + ": check bucket " + b + ": " + fromEnv + badSig},
		{[]string{"import", dir, "--cache", bucket, "--public-key", pub, "--no-progress"}, "", "", "site", cli.ExitFailure, "nix-airgap: import " + dir + ": check bucket " + b + ": the store refused the credentials of AWS_PROFILE=site (from " + creds + "): " + badSig},
		{[]string{"serve", bucket, "--listen", "127.0.0.1:0"}, keyed.AccessKey, "wrong", "", cli.ExitFailure, "nix-airgap: serve: open " + b + "/nix-cache-info: " + fromEnv + badSig},
		{[]string{"verify", bucket, "--public-key", pub, "--no-progress"}, keyed.AccessKey, "", "", cli.ExitFailure, "nix-airgap: verify: open " + b + "/nix-cache-info: Access Denied. (sent without credentials: AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not)\n"},
		{[]string{"gc", "--cache", kept, "--roots", roots, "--grace", "0s", "--no-progress"}, keyed.AccessKey, keyed.SecretKey, "", cli.ExitFailure, "nix-airgap: gc: remove " + k + "/" + paths[1].Hash + ".narinfo: Access Denied.\n"},
		{[]string{"import", dir, "--cache", bucket, "--public-key", pub, "--no-progress"}, keyed.ReadAccessKey, keyed.ReadSecretKey, "", cli.ExitFailure, "nix-airgap: import " + dir + ": lock " + b + ": Access Denied.\n"},

		{[]string{"verify", dir, "--against", down, "--public-key", pub, "--no-progress"}, "", "", "", cli.ExitUnavailable, "nix-airgap: verify: --against: open s3://cache/nix-cache-info" + refused},
		{[]string{"verify", down, "--public-key", pub, "--no-progress"}, "", "", "", cli.ExitUnavailable, "nix-airgap: verify: open s3://cache/nix-cache-info" + refused},
		{[]string{"import", dir, "--cache", down, "--public-key", pub, "--no-progress"}, "", "", "", cli.ExitUnavailable, "nix-airgap: import " + dir + ": check bucket s3://cache" + refused},
		{[]string{"gc", "--cache", down, "--keep-bundles", "1", "--no-progress"}, "", "", "", cli.ExitUnavailable, "nix-airgap: gc: open s3://cache/nix-cache-info" + refused},
		{[]string{"check", p.String(), "--against", down}, "", "", "", cli.ExitUnavailable, "nix-airgap: check: open s3://cache/nix-cache-info" + refused},
		{[]string{"inventory", "--cache", down, "--out", out}, "", "", "", cli.ExitUnavailable, "nix-airgap: inventory: open s3://cache/nix-cache-info" + refused},
		{[]string{"show", down}, "", "", "", cli.ExitUnavailable, "nix-airgap: show: list s3://cache/nix-airgap/bundles" + refused},
		{[]string{"serve", down, "--listen", "127.0.0.1:0"}, "", "", "", cli.ExitUnavailable, "nix-airgap: serve: open s3://cache/nix-cache-info" + refused},
		// A bucket down does not hide a mistake in another.
		{[]string{"serve", down, missing, "--listen", "127.0.0.1:0"}, "", "", "", cli.ExitMissing, "nix-airgap: serve: open s3://nosuch/nix-cache-info: no such bucket\n"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			if tt.args[0] == "check" {
				nixtest.Require(t) // check asks Nix for its store dir first
			}
			t.Setenv("AWS_ACCESS_KEY_ID", tt.id)
			t.Setenv("AWS_SECRET_ACCESS_KEY", tt.secret)
			t.Setenv("AWS_PROFILE", tt.profile)
			code, stdout, stderr := run(t, tt.args...)
			if code != tt.code || stderr != tt.want {
				t.Errorf("%q: exit %d, want %d and %q:\n%s%s", tt.args, code, tt.code, tt.want, stdout, stderr)
			}
		})
	}
}

// cutNARs is a proxy to the store at endpoint that passes everything but
// cuts the connection of every GET of a NAR file after its headers and a
// few bytes of its body: a store that stops answering once the listing
// is done. It returns the proxy's address.
func cutNARs(t *testing.T, endpoint string) string {
	return cutGETs(t, endpoint, "/nar/")
}

// cutGETs is cutNARs for the objects whose path contains part.
func cutGETs(t *testing.T, endpoint, part string) string {
	t.Helper()
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: endpoint})
	rp.ModifyResponse = func(r *http.Response) error {
		if r.Request.Method == http.MethodGet && strings.Contains(r.Request.URL.Path, part) {
			r.Body = &cutBody{ReadCloser: r.Body, left: 16}
		}
		return nil
	}
	rp.FlushInterval = -1 // the headers and first bytes reach the client
	rp.ErrorLog = log.New(io.Discard, "", 0)
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// cutBody fails after left bytes: the proxy then aborts the response, and
// the client sees its connection cut in the middle of the body.
type cutBody struct {
	io.ReadCloser
	left int
}

func (b *cutBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errors.New("cut")
	}
	if len(p) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= n
	return n, err
}

// TestS3StoreDownPartway: a store that stops answering after the listing,
// in the middle of the NAR files, is not damage: verify of the bucket and
// import --repair into it exit 75 (try again later) and say the store
// stopped answering, and call no file they could not read corrupt or
// damaged, while verify still reports the damage it found before.
func TestS3StoreDownPartway(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.Bucket(t)
	dir, paths, pub := writeBundleOf(t, []string{"0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello.txt", "1c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-other.txt"})
	if code, stdout, stderr := run(t, "import", dir, "--cache", bucket, "--public-key", pub, "--no-progress"); code != cli.ExitOK {
		t.Fatalf("import: exit %d\n%s%s", code, stdout, stderr)
	}
	via := strings.Replace(bucket, "endpoint="+srv.Endpoint, "endpoint="+cutNARs(t, srv.Endpoint), 1)
	if code, stdout, stderr := run(t, "verify", bucket, "--public-key", pub, "--json"); code != cli.ExitOK ||
		!strings.Contains(stdout, `"paths": 2,`) || strings.Contains(stdout, `"stopped"`) {
		t.Fatalf("verify --json before the cut: exit %d, want 0, 2 paths and no stopped:\n%s%s", code, stdout, stderr)
	}

	// import --repair re-checks the cache's files: none of them is
	// damaged, and none is said to be.
	code, stdout, stderr := run(t, "import", dir, "--cache", via, "--public-key", pub, "--repair", "--no-progress")
	t.Logf("import --repair:\n%s%s", stdout, stderr)
	if code != cli.ExitUnavailable || !strings.Contains(stderr, "the store stopped answering") ||
		regexp.MustCompile(`(?i)corrupt|damaged:|repaired`).MatchString(stdout+stderr) {
		t.Errorf("import --repair with the NAR files cut: exit %d, want %d and no damage:\n%s%s", code, cli.ExitUnavailable, stdout, stderr)
	}
	if strings.Count(stderr, "nar/") != 1 {
		t.Errorf("import --repair with the NAR files cut: want the NAR file it could not read named once:\n%s", stderr)
	}

	// A narinfo damaged before the store stops answering.
	bad := cache.NarInfoFile(paths[1].Hash)
	b, err := storage.Open(t.Context(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Put(t.Context(), bad, strings.NewReader("garbage\n"), -1); err != nil {
		t.Fatal(err)
	}
	b.Close()
	code, stdout, stderr = run(t, "verify", via, "--public-key", pub, "--no-progress")
	t.Logf("verify:\n%s%s", stdout, stderr)
	if code != cli.ExitUnavailable {
		t.Errorf("verify with the NAR files cut: exit %d, want %d", code, cli.ExitUnavailable)
	}
	if !strings.Contains(stderr, "the store stopped answering") || strings.Count(stdout+stderr, bad) != 1 {
		t.Errorf("verify with the NAR files cut: want the store said to have stopped answering and %s, damaged before, reported once:\n%s%s", bad, stdout, stderr)
	}
	// Neither NAR file was read whole (the damaged narinfo's path is not
	// counted either): no store path was checked.
	if !strings.Contains(stdout, ": 0 store paths and 1 other file, ") {
		t.Errorf("verify with the NAR files cut: want 0 store paths said to be checked:\n%s", stdout)
	}
	jcode, jstdout, jstderr := run(t, "verify", via, "--public-key", pub, "--json")
	var rep struct {
		Paths   int
		Stopped string
	}
	if err := json.Unmarshal([]byte(jstdout), &rep); jcode != cli.ExitUnavailable || err != nil || rep.Paths != 0 ||
		!strings.HasPrefix(rep.Stopped, bundle.StoreDownNote+": read nar/") {
		t.Errorf("verify --json with the NAR files cut: exit %d, %v, %+v; want %d, 0 paths and stopped saying why:\n%s%s", jcode, err, rep, cli.ExitUnavailable, jstdout, jstderr)
	}
	checkJSONScheme(t, "verify", jstdout)
	for line := range strings.Lines(stdout + stderr) {
		if strings.Count(line, "nar/") > 1 {
			t.Errorf("a line names a NAR file more than once: %s", line)
		}
		if strings.Contains(stdout, line) && strings.Contains(line, "nar/") && regexp.MustCompile(`(?i)corrupt|damage`).MatchString(line) {
			t.Errorf("a NAR file the store did not give is said to be damaged: %s", line)
		}
	}
}

// TestNARFileUnopenableNamedOnce: a NAR file (or narinfo) that cannot be
// opened, in a bucket whose store denies reading it or a directory where
// it is a symlink out of the cache, is named once in every line verify and
// import --repair say of it, as "op subject: problem". import --repair
// fails (1: neither damage nor a store that does not answer) rather than
// take a narinfo it cannot read for a path it need not check.
func TestNARFileUnopenableNamedOnce(t *testing.T) {
	keyed := s3test.StartWithKeys(t)
	keyed.UseKeys(t)
	dir, p, pub := writeBundle(t, "0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello.txt")
	importInto := func(c string) {
		t.Helper()
		if code, stdout, stderr := run(t, "import", dir, "--cache", c, "--public-key", pub, "--no-progress"); code != cli.ExitOK {
			t.Fatalf("import: exit %d\n%s%s", code, stdout, stderr)
		}
	}
	bucket := keyed.Bucket(t)
	importInto(bucket)
	keyed.Deny(t, bucket, "s3:GetObject", "nar/*")
	// And one whose store denies reading its narinfos.
	narinfoDenied := keyed.Bucket(t)
	importInto(narinfoDenied)
	keyed.Deny(t, narinfoDenied, "s3:GetObject", "*.narinfo")
	cdir := filepath.Join(t.TempDir(), "cache")
	importInto(cdir)
	nars, err := filepath.Glob(filepath.Join(cdir, "nar", "*"))
	if err != nil || len(nars) != 1 {
		t.Fatalf("NAR files of the cache: %q, %v", nars, err)
	}
	nar := filepath.Base(nars[0])
	os.Remove(nars[0])
	if err := os.Symlink("/etc/hostname", nars[0]); err != nil {
		t.Fatal(err)
	}
	// A file the store would not give is unreadable, not damaged: verify
	// fails (exit 1) without calling for a repair, which could not mend
	// it. A NAR file that is a link out of the cache is damage.
	for _, tt := range []struct {
		cache, file, problem string
		verify               int
		kind                 string
	}{
		{bucket, nar, "Access Denied.", cli.ExitFailure, ": unreadable: "},
		{narinfoDenied, cache.NarInfoFile(p.Hash), "Access Denied.", cli.ExitFailure, ": unreadable: "},
		{cdir, nar, "path escapes from parent", cli.ExitCorrupt, ": corrupt: "},
	} {
		code, stdout, stderr := run(t, "verify", tt.cache, "--public-key", pub, "--no-progress")
		if repairs := strings.Contains(stdout, "--repair"); code != tt.verify || !strings.Contains(stdout, tt.kind) || repairs == (tt.verify == cli.ExitFailure) {
			t.Errorf("verify %s: exit %d, repair advised %v; want exit %d, %q, and a repair advised only for damage:\n%s%s", tt.cache, code, repairs, tt.verify, tt.kind, stdout, stderr)
		}
		for _, args := range [][]string{
			{"verify", tt.cache, "--public-key", pub, "--no-progress"},
			{"import", dir, "--cache", tt.cache, "--public-key", pub, "--repair", "--no-progress"},
		} {
			code, stdout, stderr := run(t, args...)
			if code == cli.ExitOK || args[0] == "import" && code != cli.ExitFailure || !strings.Contains(stdout+stderr, tt.file) || !strings.Contains(stdout+stderr, tt.problem) {
				t.Errorf("%q: exit %d, want a failure naming %s and %q:\n%s%s", args, code, tt.file, tt.problem, stdout, stderr)
			}
			for line := range strings.Lines(stdout + stderr) {
				if strings.Count(line, tt.file) > 1 {
					t.Errorf("%q names %s more than once: %s", args, tt.file, line)
				}
			}
		}
	}
}

// TestGCNoCacheInfoTakesNoLock: gc of a bucket without nix-cache-info
// says it is no cache, as every command does, before it takes the lock:
// a store that refuses lock objects does not change what it says, and
// the bucket is left as it was.
func TestGCNoCacheInfoTakesNoLock(t *testing.T) {
	keyed := s3test.StartWithKeys(t)
	keyed.UseKeys(t)
	bucket := keyed.Bucket(t)
	dir, paths, pub := writeBundleOf(t, []string{"0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello.txt"})
	if code, stdout, stderr := run(t, "import", dir, "--cache", bucket, "--public-key", pub, "--no-progress"); code != cli.ExitOK {
		t.Fatalf("import: exit %d\n%s%s", code, stdout, stderr)
	}
	b, err := storage.Open(t.Context(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Remove(t.Context(), cache.CacheInfoFile); err != nil {
		t.Fatal(err)
	}
	keyed.Deny(t, bucket, "s3:PutObject", storage.LockDir+"/*")
	objects := func() []string {
		t.Helper()
		var names []string
		for _, top := range []string{"", storage.LockDir} {
			for info, err := range b.List(t.Context(), top) {
				if err != nil {
					t.Fatal(err)
				}
				names = append(names, info.Name)
			}
		}
		return names
	}
	before := objects()
	roots := filepath.Join(t.TempDir(), "roots")
	if err := os.WriteFile(roots, []byte(paths[0].String()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	want := "nix-airgap: gc " + bucket + ": no nix-cache-info, which every binary cache has\n"
	for _, args := range [][]string{
		{"gc", "--cache", bucket, "--keep-bundles", "1", "--no-progress"},
		{"gc", "--cache", bucket, "--keep-bundles", "1", "--dry-run", "--no-progress"},
		{"gc", "--cache", bucket, "--roots", roots, "--no-progress"},
	} {
		if code, stdout, stderr := run(t, args...); code != cli.ExitMissing || stderr != want {
			t.Errorf("%q: exit %d, want %d and %q:\n%s%s", args, code, cli.ExitMissing, want, stdout, stderr)
		}
	}
	if after := objects(); !slices.Equal(after, before) {
		t.Errorf("bucket after gc: %q, want it as it was, %q", after, before)
	}
}

// TestGCNarInfoUnreadableIsNoDamage: gc that cannot have a kept path's
// narinfo, from a store that refuses it, fails (1) naming it and what the
// store said, without calling it damaged or asking for import --repair,
// which could not mend it. A corrupt narinfo, in a directory cache, is
// damage (4), and the repair is asked for. Each names the narinfo once.
func TestGCNarInfoUnreadableIsNoDamage(t *testing.T) {
	keyed := s3test.StartWithKeys(t)
	keyed.UseKeys(t)
	dir, p, pub := writeBundle(t, "0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello.txt")
	denied := keyed.Bucket(t)
	cdir := filepath.Join(t.TempDir(), "cache")
	for _, c := range []string{denied, cdir} {
		if code, stdout, stderr := run(t, "import", dir, "--cache", c, "--public-key", pub, "--no-progress"); code != cli.ExitOK {
			t.Fatalf("import: exit %d\n%s%s", code, stdout, stderr)
		}
	}
	keyed.Deny(t, denied, "s3:GetObject", "*.narinfo")
	file := cache.NarInfoFile(p.Hash)
	if err := os.WriteFile(filepath.Join(cdir, file), []byte("garbage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		cache, problem string
		code           int
		damage         bool
	}{
		{denied, "Access Denied.", cli.ExitFailure, false},
		{cdir, "corrupt narinfo", cli.ExitCorrupt, true},
	} {
		code, stdout, stderr := run(t, "gc", "--cache", tt.cache, "--keep-bundles", "1", "--dry-run", "--no-progress")
		out := stdout + stderr
		damage := strings.Contains(out, "damaged") || strings.Contains(out, "--repair")
		if code != tt.code || damage != tt.damage || strings.Count(out, file) != 1 || !strings.Contains(stderr, tt.problem) {
			t.Errorf("gc --cache %s: exit %d, damage and repair said %v; want exit %d, %v, %s named once, and %q:\n%s%s",
				tt.cache, code, damage, tt.code, tt.damage, file, tt.problem, stdout, stderr)
		}
	}
}

// TestS3StoreDownAtNarInfos: a store that stops answering once the
// listing is done, in the middle of the narinfos, is not damage: gc and
// verify of the bucket exit 75 (try again later) with the hint that the
// store did not answer, and neither calls a narinfo it could not read
// corrupt or damaged nor asks for import --repair.
func TestS3StoreDownAtNarInfos(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.Bucket(t)
	dir, _, pub := writeBundle(t, "0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello.txt")
	if code, stdout, stderr := run(t, "import", dir, "--cache", bucket, "--public-key", pub, "--no-progress"); code != cli.ExitOK {
		t.Fatalf("import: exit %d\n%s%s", code, stdout, stderr)
	}
	via := strings.Replace(bucket, "endpoint="+srv.Endpoint, "endpoint="+cutGETs(t, srv.Endpoint, ".narinfo"), 1)
	for _, args := range [][]string{
		{"gc", "--cache", via, "--keep-bundles", "1", "--grace", "0s", "--no-progress"},
		{"verify", via, "--public-key", pub, "--no-progress"},
	} {
		code, stdout, stderr := run(t, args...)
		if code != cli.ExitUnavailable || !strings.Contains(stderr, "The object store did not answer") ||
			regexp.MustCompile(`(?i)corrupt|damaged(:| narinfo)|--repair`).MatchString(stdout+stderr) {
			t.Errorf("%s with the narinfos cut: exit %d, want %d, the hint that the store did not answer and no damage:\n%s%s", args[0], code, cli.ExitUnavailable, stdout, stderr)
		}
	}
}

// TestImportNewBucketSaysSo: an import into a bucket that does not exist
// makes it, and says so on stderr at the default log level, once: a
// misspelt name would otherwise go unnoticed. Into one that exists, it
// says nothing of the kind.
func TestImportNewBucketSaysSo(t *testing.T) {
	srv := s3test.Start(t)
	dir, _, pub := writeBundle(t, "0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello.txt")
	typo := srv.URL("typo-new-bucket-says-so")
	code, stdout, stderr := run(t, "import", dir, "--cache", typo, "--public-key", pub, "--no-progress")
	want := "warning: import " + dir + ": created bucket " + typo + ", which did not exist\n"
	if code != cli.ExitOK || stderr != want {
		t.Errorf("import into a new bucket: exit %d, stderr %q; want 0 and %q\n%s", code, stderr, want, stdout)
	}
	code, stdout, stderr = run(t, "import", dir, "--cache", typo, "--public-key", pub, "--no-progress")
	if code != cli.ExitOK || strings.Contains(stderr, "created bucket") {
		t.Errorf("import into the bucket again: exit %d, want 0 and no word of a bucket made\n%s%s", code, stdout, stderr)
	}
}
