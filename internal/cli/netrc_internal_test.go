package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/netrc"
)

// TestCredentialsHint: a 401 names the netrc file read and what it lacks;
// other errors pass unchanged.
func TestCredentialsHint(t *testing.T) {
	n, err := netrc.Parse([]byte("machine cache.site login site password pw\n"))
	if err != nil {
		t.Fatal(err)
	}
	n.Path = "/etc/nix/netrc"
	unauthorized := fmt.Errorf("check: %w", &cache.StatusError{Op: "open", URL: "http://other.site:8080/nix-cache-info", Status: "401 Unauthorized", Code: 401})
	refused := &cache.StatusError{Op: "open", URL: "http://cache.site:8080/nix-cache-info", Status: "401 Unauthorized", Code: 401}
	for _, tt := range []struct {
		name string
		f    targetFlags
		err  error
		want string
	}{
		{"no entry", targetFlags{netrc: n}, unauthorized, "The binary cache wants credentials, and /etc/nix/netrc (Nix's netrc-file) has none for other.site: give them in a netrc file as `machine other.site login NAME password PASSWORD`"},
		{"--netrc-file", targetFlags{netrc: n, netrcFile: "/etc/nix/netrc"}, unauthorized, "and /etc/nix/netrc (--netrc-file) has none for other.site"},
		{"not there", targetFlags{netrc: &netrc.File{Path: "/etc/nix/netrc"}, netrcMissing: true}, unauthorized, "and /etc/nix/netrc (Nix's netrc-file) is not there: give them"},
		{"refused", targetFlags{netrc: n}, refused, "The binary cache refused the credentials /etc/nix/netrc (Nix's netrc-file) has for cache.site"},
		{"none read", targetFlags{}, unauthorized, "The binary cache wants credentials: give them in a netrc file"},
		{"in the URL", targetFlags{netrc: n, userinfoHosts: map[string]bool{"other.site:8080": true}}, unauthorized, "refused the credentials in its URL"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ce, ok := tt.f.withCredentialsHint(tt.err).(*credentialsError)
			if !ok {
				t.Fatalf("%v: no credentialsError", tt.err)
			}
			if got := ce.hint(); !strings.Contains(got, tt.want) {
				t.Errorf("hint = %q; want it to hold %q", got, tt.want)
			}
			if ce.Error() != tt.err.Error() {
				t.Errorf("Error() = %q; want %q", ce.Error(), tt.err)
			}
		})
	}
	other := &cache.StatusError{Op: "open", URL: "http://cache.site/nix-cache-info", Status: "500 Internal Server Error", Code: 500}
	if got := (&targetFlags{}).withCredentialsHint(other); got != error(other) {
		t.Errorf("a 500 became %#v", got)
	}
}

// TestNetrcFileUnreadable: a --netrc-file that is missing, a directory or
// no netrc is a bad command line (exit 2), as a --secret-key or
// --auth-file that cannot be read is, naming the file once.
func TestNetrcFileUnreadable(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("machine a login u password p\nmachin b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ path, want string }{
		{filepath.Join(dir, "gone"), "no such file or directory"},
		{dir, "is a directory"},
		{bad, "line 2: unknown keyword: not a netrc file"},
	} {
		f := targetFlags{netrcFile: tt.path}
		_, err := f.httpClient(t.Context(), nil, "http://cache.site")
		if want := "--netrc-file " + tt.path + ": " + tt.want; ExitCode(err) != ExitUsage || err == nil || err.Error() != want {
			t.Errorf("--netrc-file %s: %v (exit %d); want %q, exit %d", tt.path, err, ExitCode(err), want, ExitUsage)
		}
	}
}
