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
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// StatusError is an HTTP response other than 200. It wraps ErrNotFound for
// 404, 403 and 410, which Nix treats as a miss.
type StatusError struct {
	URL    string
	Status string // such as "500 Internal Server Error"
	Code   int
}

func (e *StatusError) Error() string { return fmt.Sprintf("GET %s: %s", e.URL, e.Status) }

func (e *StatusError) Unwrap() error {
	switch e.Code {
	case http.StatusNotFound, http.StatusForbidden, http.StatusGone:
		return ErrNotFound
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
// nix-cache-info. A nil client means NewHTTPClient().
func OpenHTTP(ctx context.Context, rawURL string, client *http.Client) (*HTTP, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("open cache %s: not an http or https URL", rawURL)
	}
	u.RawQuery, u.Fragment = "", ""
	if client == nil {
		client = NewHTTPClient()
	}
	h := &HTTP{base: strings.TrimRight(u.String(), "/"), client: client}
	resp, err := h.get(ctx, h.base+"/"+CacheInfoFile)
	if err != nil {
		return nil, fmt.Errorf("open cache %s: %w", h.base, err)
	}
	defer resp.Body.Close()
	info, err := ParseCacheInfo(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("open cache %s: %s: %w", h.base, h.base+"/"+CacheInfoFile, err)
	}
	h.info = info
	return h, nil
}

// URL is the cache's base URL, without a trailing slash.
func (h *HTTP) URL() string { return h.base }

// StoreDir is the store dir the cache's nix-cache-info names.
func (h *HTTP) StoreDir() storepath.Dir { return h.info.StoreDir }

// Info is the parsed nix-cache-info.
func (h *HTTP) Info() CacheInfo { return h.info }

// NarInfo fetches HASHPART.narinfo.
func (h *HTTP) NarInfo(ctx context.Context, hashPart string) (*narinfo.NarInfo, error) {
	if err := checkHashPart(hashPart); err != nil {
		return nil, fmt.Errorf("narinfo %q from %s: %w", hashPart, h.base, err)
	}
	u := h.base + "/" + NarInfoFile(hashPart)
	resp, err := h.get(ctx, u)
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
	case strings.HasPrefix(rawURL, "http://"), strings.HasPrefix(rawURL, "https://"):
	case strings.Contains(rawURL, "://"):
		return nil, fmt.Errorf("open %s: unsupported scheme for cache %s", rawURL, h.base)
	default:
		u = h.base + "/" + strings.TrimPrefix(rawURL, "/")
	}
	resp, err := h.get(ctx, u)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// get fetches u and returns a 200 response, whose body is as sent.
func (h *HTTP) get(ctx context.Context, u string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	// An explicit Accept-Encoding keeps net/http from asking for gzip and
	// then silently gunzipping, whatever transport the caller gave us.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := h.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("GET %s: %w", u, ctx.Err())
		}
		return nil, &netError{url: u, err: err}
	}
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		return nil, &StatusError{URL: u, Status: resp.Status, Code: resp.StatusCode}
	}
	return resp, nil
}

// netError is a failed request that got no response: worth retrying.
type netError struct {
	url string
	err error
}

func (e *netError) Error() string {
	var ue *url.Error
	if errors.As(e.err, &ue) {
		return fmt.Sprintf("GET %s: %v", e.url, ue.Err)
	}
	return fmt.Sprintf("GET %s: %v", e.url, e.err)
}

func (e *netError) Unwrap() error { return e.err }
