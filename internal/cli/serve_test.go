package cli_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/cli"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/signing"
)

func writeCacheDir(t *testing.T, storeDir string) string {
	dir := t.TempDir()
	writeTestFile(t, filepath.Join(dir, "nix-cache-info"), "StoreDir: "+storeDir+"\nWantMassQuery: 1\n")
	return dir
}

// startServe runs serve with args (and --listen on a free port) until the
// test ends or stop is called, and returns the address it listens on,
// its stderr, and stop, which returns serve's exit code.
func startServe(t *testing.T, args ...string) (addr string, stderr *nixtest.SyncBuffer, stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	stderr = &nixtest.SyncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- cli.Run(ctx, append([]string{"serve", "--listen", "127.0.0.1:0"}, args...), io.Discard, stderr)
	}()
	stopped, code := false, 0
	stop = func() int {
		t.Helper()
		if stopped {
			return code
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			code = cli.ExitCode(err)
		case <-time.After(10 * time.Second):
			t.Fatal("serve did not stop on cancel")
		}
		return code
	}
	t.Cleanup(func() { stop() })
	addrRE := regexp.MustCompile(`addr=(127\.0\.0\.1:\d+)`)
	for deadline := time.Now().Add(10 * time.Second); addr == "" && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if m := addrRE.FindStringSubmatch(stderr.String()); m != nil {
			addr = m[1]
		}
	}
	if addr == "" {
		stop()
		t.Fatalf("serve logged no address:\n%s", stderr.String())
	}
	return addr, stderr, stop
}

func TestServe(t *testing.T) {
	cache := writeCacheDir(t, "/test/store")
	sk, _, err := signing.Generate("site-1")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "site.sec")
	writeTestFile(t, keyFile, sk.String())
	addr, stderr, stop := startServe(t, "--key", keyFile, "--priority", "20", cache)
	if !strings.Contains(stderr.String(), "cache-key=\""+sk.Public().String()+"\"") {
		t.Errorf("serve did not log the cache key's public half as cache-key:\n%s", stderr.String())
	}
	resp, err := http.Get("http://" + addr + "/nix-cache-info")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "StoreDir: /test/store\nWantMassQuery: 1\nPriority: 20\n"; string(body) != want {
		t.Errorf("nix-cache-info = %q, want %q", body, want)
	}
	if code := stop(); code != 0 {
		t.Errorf("serve after cancel: exit %d, want 0", code)
	}
	if !strings.Contains(stderr.String(), "path=/nix-cache-info") {
		t.Errorf("no access log line for the request:\n%s", stderr.String())
	}
	if strings.Contains(stderr.String(), "without --secret-key") {
		t.Errorf("serve with a key warned of none:\n%s", stderr.String())
	}
}

// TestServeWithoutKey: serve without the cache key says that clients
// must trust the packing keys, as those of client-config's settings,
// which trust the cache key, would refuse every path.
func TestServeWithoutKey(t *testing.T) {
	_, stderr, stop := startServe(t, writeCacheDir(t, "/test/store"))
	stop()
	if !strings.Contains(stderr.String(), "serving without --secret-key: narinfos carry only the signatures of the keys that packed them, so clients must trust those keys, not a cache key") {
		t.Errorf("serve without --secret-key gave no warning:\n%s", stderr.String())
	}
}

func TestServeErrors(t *testing.T) {
	a, b := writeCacheDir(t, "/test/store"), writeCacheDir(t, "/other/store")
	badAuth := filepath.Join(t.TempDir(), "auth")
	writeTestFile(t, badAuth, "basic alice\n")
	emptyAuth := filepath.Join(t.TempDir(), "empty-auth")
	writeTestFile(t, emptyAuth, "# nobody yet\n")
	tests := []struct {
		args   []string
		code   int
		stderr []string
	}{
		{[]string{}, cli.ExitUsage, []string{"at least one"}},
		{[]string{a, "--tls-cert", "x"}, cli.ExitUsage, []string{"--tls-key"}},
		{[]string{a, b}, cli.ExitFailure, []string{a, b, "/other/store"}},
		{[]string{a, "--key", filepath.Join(a, "missing.sec")}, cli.ExitUsage, []string{"missing.sec"}},
		{[]string{a, "--auth-file", badAuth}, cli.ExitUsage, []string{"--auth-file " + badAuth + ": line 1"}},
		{[]string{a, "--auth-file", emptyAuth}, cli.ExitUsage, []string{"--auth-file " + emptyAuth + ": no credentials"}},
		{[]string{a, "--auth-file", filepath.Join(a, "no-auth")}, cli.ExitUsage, []string{"no-auth: no such file"}},
		{[]string{a, "--auth-file", a}, cli.ExitUsage, []string{"--auth-file " + a + ": invalid auth file: is a directory"}},
		{[]string{filepath.Join(a, "nope")}, cli.ExitMissing, []string{"nope"}},
		{[]string{a, "--listen", "256.0.0.1:1"}, cli.ExitFailure, []string{"256.0.0.1"}},
	}
	for _, tt := range tests {
		code, _, stderr := run(t, append([]string{"serve"}, tt.args...)...)
		if code != tt.code {
			t.Errorf("serve %q: exit %d, want %d; stderr:\n%s", tt.args, code, tt.code, stderr)
		}
		for _, w := range tt.stderr {
			if !strings.Contains(stderr, w) {
				t.Errorf("serve %q: stderr %q lacks %q", tt.args, stderr, w)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(a, "nar")); err == nil {
		t.Errorf("serve wrote to the served directory")
	}
}

// TestServePortInUse: serve on a port another server holds fails (1, the
// same command works once the port is free) with the error as Run returns
// it, "op subject: problem" in one line, and the hint of what to do after
// it, as printError adds every hint.
func TestServePortInUse(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	var stderr strings.Builder
	err = cli.Run(t.Context(), []string{"serve", writeCacheDir(t, "/test/store"), "--listen", addr}, io.Discard, &stderr)
	want := "nix-airgap: serve: listen tcp " + addr + ": bind: address already in use\n" +
		"Another server listens on " + addr + " (one more serve?): stop it, or choose another address with --listen\n"
	if code := cli.ExitCode(err); code != cli.ExitFailure || stderr.String() != want {
		t.Errorf("serve --listen %s: exit %d, stderr\n%s\nwant exit %d and\n%s", addr, code, stderr.String(), cli.ExitFailure, want)
	}
	if err != nil && strings.Contains(err.Error(), "\n") {
		t.Errorf("serve --listen %s returned %q: the hint belongs to printError, not the error", addr, err)
	}
}
