package cache

import (
	"net/http"
	"net/url"

	"github.com/nix-airgap/nix-airgap/internal/netrc"
)

// WithNetrc returns a copy of client that sends each request that carries
// no credentials of its own with those n has for the request's host (by
// name, not port, as curl and so Nix match a netrc's machines). nil n
// returns client. A nil client means NewHTTPClient().
func WithNetrc(client *http.Client, n *netrc.File) *http.Client {
	if client == nil {
		client = NewHTTPClient()
	}
	if n == nil {
		return client
	}
	return withAuth(client, func(u *url.URL) (string, string, bool) { return n.Lookup(u.Hostname()) })
}

// withUserinfo returns a copy of client that sends the credentials of a
// cache URL's user info with each request to that URL's scheme and host,
// so that the URL the cache keeps, and so every message, has none.
func withUserinfo(client *http.Client, base *url.URL) *http.Client {
	scheme, host, user := base.Scheme, base.Host, base.User
	return withAuth(client, func(u *url.URL) (string, string, bool) {
		if u.Scheme != scheme || u.Host != host {
			return "", "", false
		}
		pw, _ := user.Password()
		return user.Username(), pw, true
	})
}

func withAuth(client *http.Client, lookup func(*url.URL) (string, string, bool)) *http.Client {
	c := *client
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	c.Transport = &basicAuth{base: base, lookup: lookup}
	return &c
}

// basicAuth adds basic-auth credentials to requests that have none.
type basicAuth struct {
	base   http.RoundTripper
	lookup func(*url.URL) (login, password string, ok bool)
}

func (t *basicAuth) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Header.Get("Authorization") != "" {
		return t.base.RoundTrip(req)
	}
	login, password, ok := t.lookup(req.URL)
	if !ok {
		return t.base.RoundTrip(req)
	}
	// A RoundTripper must not modify the request it was given.
	r := req.Clone(req.Context())
	r.SetBasicAuth(login, password)
	return t.base.RoundTrip(r)
}
