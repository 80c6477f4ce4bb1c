package nixcli

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// TestNetworkFailedRecorded reads what each Nix of the matrix wrote when
// it failed (testdata/README.md, "network-*"): a builtin:fetchurl
// fixed-output derivation and an evaluation-time builtins.fetchurl with no
// network (unshare --net), a fetch that got a 404, and a builder that
// prints network-like words and fails. Only the first two are network
// failures.
func TestNetworkFailedRecorded(t *testing.T) {
	dirs := map[string]storepath.Dir{"2.8": "/tmp/nixcli-work/t2/store", "2.26": "/nix/store", "2.34": "/nix/store"}
	for _, v := range []string{"2.8", "2.26", "2.34"} {
		for _, tc := range []struct {
			file string
			want bool
		}{
			{"network-realise-fod.txt", true},
			{"network-realise-http404.txt", false},
			{"network-realise-bad.txt", false},
		} {
			data, err := os.ReadFile(filepath.Join("testdata", "nix-"+v, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			// As pack -L runs it: the log lines go to BuildLog, none
			// are kept for Tail.
			l := &buildLog{opts: RealiseOptions{LogLines: -1}, log: slog.New(slog.DiscardHandler), ctx: context.Background(), dir: dirs[v], acts: map[int64]*activity{}}
			l.Write(data)
			if got := l.NetworkFailed(); got != tc.want {
				t.Errorf("Nix %s, %s: NetworkFailed() = %v, want %v; Tail:\n%s", v, tc.file, got, tc.want, l.Tail())
			}
		}
		data, err := os.ReadFile(filepath.Join("testdata", "nix-"+v, "network-instantiate.txt"))
		if err != nil {
			t.Fatal(err)
		}
		if tb := (&tailBuffer{max: stderrMax, buf: data}); !tb.NetworkFailed() {
			t.Errorf("Nix %s: nix-instantiate's failed builtins.fetchurl is no network failure:\n%s", v, data)
		}
	}
}

// TestNetworkError: Nix's messages of a download that got no answer, from
// curl's wording in Nix 2.8 and in later Nix, against those of a
// download that got a final answer, and an evaluation error whose trace
// mentions a download but whose cause is another.
func TestNetworkError(t *testing.T) {
	for _, tc := range []struct {
		stderr string
		want   bool
	}{
		{"error: unable to download 'https://cache.example/nix-cache-info': Couldn't resolve host name (6)", true},
		{"error: unable to download 'https://cache.example/x.narinfo': Could not resolve hostname (6) Could not resolve host: cache.example", true},
		{"error: unable to download 'http://127.0.0.1:9/x': Timeout was reached (28) Connection timed out after 5001 milliseconds", true},
		{"error: unable to download 'http://h/x': Failure when receiving data from the peer (56) Recv failure: Connection reset by peer", true},
		{"error: unable to download 'http://h/x': HTTP error 503 (curl error: HTTP response code said error)", true},
		{"error: unable to download 'http://h/x': HTTP error 504", true},
		{"error: some substitutes for the outputs of derivation '/nix/store/dfjsqv7az0k41vyvi7jx81hn3wg7137v-a.drv' failed (usually happens due to networking issues); try '--fallback' to build derivation from source ", true},
		{"error: unable to download 'http://h/x': HTTP error 404 (curl error: HTTP response code said error)", false},
		{"error: unable to download 'http://h/x': HTTP error 500", false},
		{"error: unable to download 'file:///nonexistent/x': Could not read a file:// file (37) Could not open file /nonexistent/x", false},
		{"error: unable to download 'https://h/x': SSL peer certificate or SSH remote key was not OK (60)", false},
		{"error: Could not connect to server (7)", false},
		{"warning: error: unable to download 'http://h/y': Couldn't connect to server (7); retrying in 313 ms\nerror: undefined variable 'x'", false},
		{"error:\n       … while fetching 'http://h/y'\n\n       error: unable to download 'http://h/y': Couldn't connect to server (7)", true},
		{"error: unable to download 'http://h/y': Couldn't connect to server (7)\n\n       error: attribute 'x' missing", false},
	} {
		if got := (&tailBuffer{buf: []byte(tc.stderr)}).NetworkFailed(); got != tc.want {
			t.Errorf("NetworkFailed(%q) = %v, want %v", tc.stderr, got, tc.want)
		}
	}
}
