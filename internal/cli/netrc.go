package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/netrc"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
)

// httpClient returns the client for the HTTP caches a command opens. It
// sends the credentials of the netrc file --netrc-file names, or else of
// the one Nix's netrc-file setting names (default /etc/nix/netrc), read
// from Nix's configuration as its substituters are, as Nix does. A file
// Nix names that is not there means no credentials, as for Nix; one
// --netrc-file names must be there and read as a netrc, or the command
// line is wrong (exit 2). The file is read once per command.
// location is the cache's URL: credentials in it go first, as for Nix.
func (f *targetFlags) httpClient(ctx context.Context, runner *nixcli.Runner, location string) (*http.Client, error) {
	if u, err := url.Parse(location); err == nil && u.User != nil {
		if f.userinfoHosts == nil {
			f.userinfoHosts = map[string]bool{}
		}
		f.userinfoHosts[u.Host] = true
	}
	if f.netrc != nil {
		return f.client, nil
	}
	path, given := f.netrcFile, f.netrcFile != ""
	if !given {
		conf, err := runner.Config(ctx)
		if err != nil {
			return nil, err
		}
		path = netrc.DefaultFile
		if v, ok := conf.Settings["netrc-file"]; ok {
			if err := json.Unmarshal(v, &path); err != nil {
				return nil, fmt.Errorf("nix config netrc-file %s: %w: %w", v, nixcli.ErrUnexpectedOutput, err)
			}
		}
	}
	n, err := netrc.ReadFile(path)
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrNotExist) && !given:
		n = &netrc.File{Path: path}
		f.netrcMissing = true
	case given:
		// As a --secret-key or --auth-file that cannot be read.
		return nil, usageError{fmt.Errorf("--netrc-file %s: %w", path, errors.Unwrap(err))}
	default:
		return nil, fmt.Errorf("nix config netrc-file: %w", err)
	}
	f.netrc, f.client = n, cache.WithNetrc(nil, n)
	return f.client, nil
}

// credentialsError is an HTTP cache's 401 Unauthorized, with what the
// command knows of the netrc file it read, for printError's hint.
type credentialsError struct {
	err     error
	host    string
	netrc   string // the file read, "" when none was
	given   bool   // by --netrc-file, not Nix's netrc-file
	missing bool   // Nix's netrc-file names no file that is there
	entry   bool   // the file has credentials for host
	inURL   bool   // the cache's URL has credentials, which go first
}

func (e *credentialsError) Error() string { return e.err.Error() }
func (e *credentialsError) Unwrap() error { return e.err }

// withCredentialsHint wraps err, when it is an HTTP cache's 401, in a
// credentialsError.
func (f *targetFlags) withCredentialsHint(err error) error {
	var se *cache.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusUnauthorized || errors.As(err, new(*credentialsError)) {
		return err
	}
	u, perr := url.Parse(se.URL)
	if perr != nil {
		return err
	}
	ce := &credentialsError{err: err, host: u.Hostname(), given: f.netrcFile != "", missing: f.netrcMissing, inURL: f.userinfoHosts[u.Host]}
	if f.netrc != nil {
		ce.netrc = f.netrc.Path
		_, _, ce.entry = f.netrc.Lookup(ce.host)
	}
	return ce
}

// hint is the lines that follow the error.
func (e *credentialsError) hint() string {
	which := e.netrc + " (Nix's netrc-file)"
	if e.given {
		which = e.netrc + " (--netrc-file)"
	}
	give := "give them in a netrc file as `machine " + e.host + " login NAME password PASSWORD`\n" +
		"(client-config --auth-file prints the line) with --netrc-file FILE or in Nix's netrc-file"
	switch {
	case e.inURL:
		return "The binary cache refused the credentials in its URL: check the login and password against the server's --auth-file"
	case e.netrc == "":
		return "The binary cache wants credentials: " + give
	case e.entry:
		return "The binary cache refused the credentials " + which + " has for " + e.host +
			": check the login and password against the server's --auth-file"
	case e.missing:
		return "The binary cache wants credentials, and " + which + " is not there: " + give
	}
	return "The binary cache wants credentials, and " + which + " has none for " + e.host + ": " + give
}
