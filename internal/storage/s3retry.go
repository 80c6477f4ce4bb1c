package storage

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"
)

// The retry policy of bucket requests, all of it. minio-go tries a request
// up to ten times (FailFast: once), backing off up to a second between
// tries, whatever failed: a throttled or 5xx answer, a connection reset or
// timed out mid-transfer. A connection refused, or a host name that does
// not resolve, is not tried again: nothing listening on the port will not
// change in the five seconds the tries take, and the user wants the
// answer at once. minio-go has no say over which failures it retries, but
// stops when the request's context ends: so the transport ends it
// (stopTransport), and the caller reports the refusal (stopped).

// s3Transport is the HTTP transport of a bucket, with the timeouts and the
// number of tries (0: minio-go's ten) of cfg.
func s3Transport(cfg S3Config) (*http.Transport, int) {
	// A large multipart upload's completion can take a while to answer.
	dialTimeout, headerTimeout, tries := 30*time.Second, 5*time.Minute, 0
	if cfg.FailFast {
		dialTimeout, headerTimeout, tries = 2*time.Second, 5*time.Second, 1
	}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: headerTimeout,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256, // serve replicas stream many objects at once
		DisableCompression:    true,
		ForceAttemptHTTP2:     true,
	}, tries
}

// stopTransport ends the request context (from request) of a request the
// host refused, with that failure as its cause.
type stopTransport struct{ *http.Transport }

type stopKey struct{}

func (t stopTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := t.Transport.RoundTrip(req)
	if err != nil && Refused(err) {
		if stop, ok := req.Context().Value(stopKey{}).(context.CancelCauseFunc); ok {
			stop(&url.Error{Op: req.Method, URL: req.URL.String(), Err: err})
		}
	}
	return res, err
}

// Refused reports whether err is a connection the host refused or a host
// name that does not exist: tried once, never again, by a bucket's
// requests and an HTTP binary cache's (package cache) alike.
func Refused(err error) bool {
	var dns *net.DNSError
	return errors.Is(err, syscall.ECONNREFUSED) || errors.As(err, &dns) && dns.IsNotFound
}

// request is the context for a request (or a file's requests), which
// stopTransport ends if the host refuses it; done releases it.
func request(ctx context.Context) (_ context.Context, done func()) {
	ctx, stop := context.WithCancelCause(ctx)
	return context.WithValue(ctx, stopKey{}, stop), func() { stop(nil) }
}

// stopped is err of a request made with ctx (from request), or the
// refusal that stopped it.
func stopped(ctx context.Context, err error) error {
	if ue, ok := context.Cause(ctx).(*url.Error); ok && err != nil {
		return ue
	}
	return err
}
