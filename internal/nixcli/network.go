package nixcli

import (
	"errors"
	"regexp"
	"strings"
)

// ErrNetwork is a nix program that failed only because a download did not
// get an answer: a substituter, a fixed-output fetch (builtin:fetchurl) or
// an evaluation-time fetch (builtins.fetchurl, a flake input) whose server
// refused the connection, timed out, cut it, did not resolve, or answered
// 502, 503 or 504. Trying again later may work. An *ExitError is it, for
// errors.Is, when Nix's error says so.
var ErrNetwork = errors.New("nix could not download: the server did not answer")

// networkError matches Nix's messages for such a download, the same from
// Nix 2.8 to 2.34 but for curl's wording (testdata/nix-*/network-*):
// FileTransfer's "unable to download 'URL': STRERROR (CURLCODE) DETAIL"
// for curl's couldn't-resolve-proxy (5), couldn't-resolve-host (6),
// couldn't-connect (7), timeout (28), empty reply (52), send (55) and
// receive (56) errors; its "unable to download 'URL': HTTP error 503"; and
// a derivation goal's "some substitutes … failed (usually happens due to
// networking issues)". A 404, a file:// URL that cannot be read or a TLS
// certificate refused is no network failure: trying again will not help.
var networkError = regexp.MustCompile(`unable to (?:download|upload) '[^']*': (?:HTTP error 50[234]\b|[^\n]*\((?:5|6|7|28|52|55|56)\))|usually happens due to networking issues`)

// isNetworkError reports whether msg, one of Nix's error messages, is a
// network failure.
func isNetworkError(msg string) bool { return networkError.MatchString(msg) }

// lastErrorLine is the last line of text that starts with "error:" (after
// indentation): the innermost cause in an evaluation error's trace, as
// Nix prints the outer context first.
func lastErrorLine(text string) string {
	var last string
	for _, l := range strings.Split(text, "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "error:") {
			last = l
		}
	}
	return last
}
