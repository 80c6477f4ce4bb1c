package cache

import (
	"net/http"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/netrc"
)

// TestCredentials: a cache URL's credentials go first, with its requests
// only, and in no URL it shows; a netrc's go by host name to the hosts
// it names, and never over credentials a request carries.
func TestCredentials(t *testing.T) {
	info := []byte("StoreDir: /nix/store\n")
	a, srvA := serveDir(t, map[string][]byte{"/nix-cache-info": info, "/x": []byte("x")})
	b, srvB := serveDir(t, map[string][]byte{"/x": []byte("x")})
	// The netrc names A by its address; B is reached as localhost, at
	// the same address but under another name.
	hostB := strings.Replace(srvB.URL, "127.0.0.1", "localhost", 1)
	n, err := netrc.Parse([]byte("machine 127.0.0.1 login site password fromnetrc\n"))
	if err != nil {
		t.Fatal(err)
	}
	last := func(fc *fakeCache) *http.Request {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		return fc.requests[len(fc.requests)-1]
	}
	auth := func(fc *fakeCache) (user, pw string, ok bool) { return last(fc).BasicAuth() }
	get := func(c *http.Client, u string, header string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
		if header != "" {
			req.Header.Set("Authorization", header)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}

	c := WithNetrc(nil, n)
	get(c, srvA.URL+"/x", "")
	if u, p, ok := auth(a); !ok || u != "site" || p != "fromnetrc" {
		t.Errorf("a request to %s: credentials %q %q %v; want the netrc's", srvA.URL, u, p, ok)
	}
	get(c, hostB+"/x", "")
	if u, p, ok := auth(b); ok {
		t.Errorf("a request to %s, which the netrc does not name: credentials %q %q; want none", hostB, u, p)
	}
	get(c, srvA.URL+"/x", "Bearer own")
	if got := last(a).Header.Get("Authorization"); got != "Bearer own" {
		t.Errorf("a request with its own credentials: Authorization %q; want them kept", got)
	}

	withURL := strings.Replace(srvA.URL, "http://", "http://url:fromurl@", 1)
	h, err := OpenHTTP(t.Context(), withURL, c)
	if err != nil {
		t.Fatal(err)
	}
	if u, p, ok := auth(a); !ok || u != "url" || p != "fromurl" {
		t.Errorf("the cache's request: credentials %q %q %v; want its URL's, over the netrc's", u, p, ok)
	}
	if strings.Contains(h.URL(), "fromurl") {
		t.Errorf("URL() = %q; want it without the password", h.URL())
	}
	get(h.Client(), hostB+"/x", "")
	if u, p, ok := auth(b); ok {
		t.Errorf("the cache's client to another host %s: credentials %q %q; want none", hostB, u, p)
	}
}
