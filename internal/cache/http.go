package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// StatusError is an HTTP response other than 200. It wraps ErrNotFound for
// 404, 403 and 410, which Nix treats as a miss, and storage.ErrUnavailable
// for 502, 503 and 504, a server that cannot answer now.
type StatusError struct {
	Op     string // the request: "GET", "HEAD", or "open" for a cache's nix-cache-info
	URL    string
	Status string // such as "500 Internal Server Error"
	Code   int
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: %s", e.Op, storage.Redact(e.URL), e.Status)
}

func (e *StatusError) Unwrap() error {
	switch {
	case e.Code == http.StatusNotFound, e.Code == http.StatusForbidden, e.Code == http.StatusGone:
		return ErrNotFound
	case storage.StatusUnavailable(e.Code):
		return storage.ErrUnavailable
	}
	return nil
}

// HTTP is a binary cache served over http or https.
type HTTP struct {
	base   string // without a trailing slash
	client *http.Client
	info   CacheInfo
}

// NewHTTPClient returns the client OpenHTTP uses when given nil: bounded
// connect, TLS and response-header times but no limit on a whole body (NARs
// can be gigabytes), proxies from the environment, and no transparent
// decompression.
func NewHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   16,
		DisableCompression:    true,
		ForceAttemptHTTP2:     true,
	}}
}

// OpenHTTP opens the cache at rawURL (http or https) and reads its
// nix-cache-info, tried up to RetryAttempts times on a transient error
// (see WithRetry). A nil client means NewHTTPClient().
func OpenHTTP(ctx context.Context, rawURL string, client *http.Client) (*HTTP, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("open cache %s: not an http or https URL", storage.Redact(rawURL))
	}
	u.RawQuery, u.Fragment = "", ""
	if client == nil {
		client = NewHTTPClient()
	}
	if u.User != nil {
		// Credentials in the URL go with its requests but into no
		// message: the cache's URL has none.
		client = withUserinfo(client, u)
		u.User = nil
	}
	h := &HTTP{base: strings.TrimRight(u.String(), "/"), client: client}
	// A 5xx or a connection cut is tried again, as a narinfo request is
	// and as Nix does; a refused connection is not.
	info, err := Retry(ctx, RetryAttempts, RetryBackoff, func() (CacheInfo, error) { return h.readInfo(ctx) })
	if err != nil {
		return nil, err
	}
	h.info = info
	return h, nil
}

// readInfo fetches and parses the cache's nix-cache-info. Errors read
// "open URL/nix-cache-info: problem", as a bucket's do.
func (h *HTTP) readInfo(ctx context.Context) (CacheInfo, error) {
	u := h.base + "/" + CacheInfoFile
	resp, err := Get(ctx, h.client, "open", u)
	if err != nil {
		return CacheInfo{}, err
	}
	defer resp.Body.Close()
	info, err := ParseCacheInfo(resp.Body)
	if err != nil {
		return CacheInfo{}, fmt.Errorf("open %s: %w", u, err)
	}
	return info, nil
}

// URL is the cache's base URL, without a trailing slash.
func (h *HTTP) URL() string { return h.base }

// Client is the client the cache's requests go with, credentials and all:
// for other requests to the same server.
func (h *HTTP) Client() *http.Client { return h.client }

// StoreDir is the store dir the cache's nix-cache-info names.
func (h *HTTP) StoreDir() storepath.Dir { return h.info.StoreDir }

// Info is the parsed nix-cache-info.
func (h *HTTP) Info() CacheInfo { return h.info }

// NarInfo fetches HASHPART.narinfo.
func (h *HTTP) NarInfo(ctx context.Context, hashPart string) (*narinfo.NarInfo, error) {
	if err := checkHashPart(hashPart); err != nil {
		return nil, fmt.Errorf("narinfo %q from %s: %w", hashPart, storage.Redact(h.base), err)
	}
	u := h.base + "/" + NarInfoFile(hashPart)
	resp, err := Get(ctx, h.client, http.MethodGet, u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := decodeContent(resp)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	defer body.Close()
	return parseNarInfo(body, h.info.StoreDir, hashPart, u)
}

// decodeContent is resp's body with its Content-Encoding undone. A cache
// that Nix 2.32 and later wrote with narinfo-compression (over http, as
// its s3 store always could) holds narinfos compressed, and its server
// sends them with the Content-Encoding they were uploaded with, whatever
// the request's Accept-Encoding. Nix decodes gzip, deflate, br and zstd;
// nix-airgap reads gzip and zstd (see package compression).
func decodeContent(resp *http.Response) (io.ReadCloser, error) {
	enc := strings.ToLower(strings.TrimSpace(resp.Header.Get("Content-Encoding")))
	name, ok := map[string]string{"": compression.None, "identity": compression.None,
		"gzip": compression.Gzip, "x-gzip": compression.Gzip, "zstd": compression.Zstd}[enc]
	if !ok {
		return nil, fmt.Errorf("sent with Content-Encoding %q: %w", enc, compression.ErrUnsupported)
	}
	return compression.NewReader(resp.Body, name)
}

// Open fetches the file url names: relative to the cache, or an absolute
// http or https URL, as Nix resolves a narinfo's URL. The body is the
// file's bytes, never transparently decompressed.
func (h *HTTP) Open(ctx context.Context, rawURL string) (io.ReadCloser, error) {
	u := rawURL
	switch {
	case IsHTTP(rawURL):
	case strings.Contains(rawURL, "://"):
		return nil, fmt.Errorf("open %s: unsupported scheme for cache %s", storage.Redact(rawURL), storage.Redact(h.base))
	default:
		u = h.base + "/" + strings.TrimPrefix(rawURL, "/")
	}
	resp, err := Get(ctx, h.client, http.MethodGet, u)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Get fetches u with client and returns a 200 response, whose body is as
// sent, never transparently decompressed. Any other answer fails with a
// *StatusError and no answer as Do says, so that what did not answer
// matches storage.ErrUnavailable. op names the request in errors ("GET",
// "open").
func Get(ctx context.Context, client *http.Client, op, u string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", op, storage.Redact(u), err)
	}
	// An explicit Accept-Encoding keeps net/http from asking for gzip and
	// then silently gunzipping, whatever transport the caller gave us.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := Do(client, req, op)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		return nil, &StatusError{Op: op, URL: u, Status: resp.Status, Code: resp.StatusCode}
	}
	return resp, nil
}

// Do sends req with client, as client.Do does, but a request that got no
// answer fails with a *NetError, which matches storage.ErrUnavailable,
// and one its context ended with the context's error. op names the
// request in errors ("GET", "HEAD", "open").
func Do(client *http.Client, req *http.Request, op string) (*http.Response, error) {
	resp, err := client.Do(req)
	if err == nil {
		return resp, nil
	}
	if err := req.Context().Err(); err != nil {
		return nil, fmt.Errorf("%s %s: %w", op, req.URL.Redacted(), err)
	}
	// The one rule for stores and caches alike: no answer is
	// unavailable, to try again later.
	return nil, storage.Unavailable(&NetError{Op: op, URL: req.URL.Redacted(), Err: err})
}

// NetError is a request to an HTTP binary cache that got no answer: the
// connection refused, cut or timed out, or a host name that does not
// resolve (storage.Refused tells the first and last apart).
type NetError struct {
	Op  string // as StatusError's
	URL string
	Err error
}

func (e *NetError) Error() string {
	var ue *url.Error
	if errors.As(e.Err, &ue) {
		return fmt.Sprintf("%s %s: %v", e.Op, e.URL, ue.Err) // ue repeats the URL
	}
	return fmt.Sprintf("%s %s: %v", e.Op, e.URL, e.Err)
}

func (e *NetError) Unwrap() error { return e.Err }
