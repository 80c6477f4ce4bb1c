package cli_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/cli"
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

// TestS3ErrorsNameTheCacheOnce: a bucket that is not there fails each
// command with one error that names it once, as "op subject: problem".
func TestS3ErrorsNameTheCacheOnce(t *testing.T) {
	srv := s3test.Start(t)
	url := srv.URL("nosuch")
	out := filepath.Join(t.TempDir(), "inventory.json")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"inventory", "--cache", url, "--out", out}, "nix-airgap: inventory: open s3://nosuch/nix-cache-info: no such bucket\n"},
		{[]string{"show", url}, "nix-airgap: show: list s3://nosuch/nix-airgap/bundles: no such bucket\n"},
		{[]string{"diff", url, url}, "nix-airgap: diff: list s3://nosuch/nix-airgap/bundles: no such bucket\n"},
		// SeaweedFS refuses the lock's object as Access Denied.
		{[]string{"gc", "--cache", url, "--keep-bundles", "1"}, "nix-airgap: gc: lock s3://nosuch: no such bucket\n"},
		{[]string{"gc", "--cache", url, "--keep-bundles", "1", "--dry-run"}, "nix-airgap: gc: lock s3://nosuch: no such bucket\n"},
	} {
		code, stdout, stderr := run(t, tt.args...)
		if code != cli.ExitMissing || stderr != tt.want {
			t.Errorf("%q: exit %d, want %d and %q:\n%s%s", tt.args, code, cli.ExitMissing, tt.want, stdout, stderr)
		}
	}
}
