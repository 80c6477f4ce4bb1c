package cli_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/cli"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storage/s3test"
)

// TestS3CheckStoreDownPartway: check --against a bucket whose store stops
// answering once the bucket is open, in the middle of the narinfos, exits
// 75 (try again later), says the store did not answer, and calls nothing
// missing, blocked or corrupt that it could not read.
func TestS3CheckStoreDownPartway(t *testing.T) {
	// The store first: it outlives this test, and n.Setenv points
	// TMPDIR, where it keeps its data, into this test's directory.
	srv := s3test.Start(t)
	bucket := srv.Bucket(t)
	n := nixtest.New(t, nixtest.Options{})
	inet := nixtest.StartInternet(t)
	w := nixtest.NewWorld(t, n, inet, nixtest.WorldOptions{})
	n.Setenv(t)
	top := w.Build(t)
	dir := t.TempDir()
	n.Run(t, "nix", "copy", "--to", "file://"+dir, top)
	b, err := storage.Open(t.Context(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return b.Put(t.Context(), filepath.ToSlash(strings.TrimPrefix(p, dir+"/")), f, -1)
	})
	if err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr := run(t, "check", top, "--against", bucket); code != cli.ExitOK {
		t.Fatalf("check --against %s: exit %d, want 0:\n%s%s", bucket, code, stdout, stderr)
	}

	via := strings.Replace(bucket, "endpoint="+srv.Endpoint, "endpoint="+cutGETs(t, srv.Endpoint, ".narinfo"), 1)
	code, stdout, stderr := run(t, "check", top, "--against", via)
	t.Logf("check with the narinfos cut:\n%s%s", stdout, stderr)
	if code != cli.ExitUnavailable || !strings.Contains(stderr, ".narinfo") {
		t.Errorf("check with the narinfos cut: exit %d, want %d and the narinfo named", code, cli.ExitUnavailable)
	}
	if regexp.MustCompile(`(?i)missing|blocked|corrupt|damaged|to build`).MatchString(stdout + stderr) {
		t.Errorf("check with the narinfos cut calls what it could not read missing, blocked or corrupt:\n%s%s", stdout, stderr)
	}
}
