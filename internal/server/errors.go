package server

import (
	"errors"
	"io"
	"io/fs"
	"net/http"
	"strconv"
	"syscall"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/storage"
)

var (
	errMethod       = &httpError{status: http.StatusMethodNotAllowed, msg: "method not allowed"}
	errUnauthorized = &httpError{status: http.StatusUnauthorized, msg: "unauthorized"}
)

// httpError is an error with the status and the message, safe to show a
// client, it maps to.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(msg string) error { return &httpError{status: http.StatusBadRequest, msg: msg} }

// handlerFunc is an HTTP handler that reports failure as an error for
// adapt to turn into a status code.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// adapt makes h an http.Handler.
func (s *Server) adapt(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	})
}

// writeError is the one place that maps errors to responses. A client sees
// only the status and a fixed message; the details go to the log.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := http.StatusInternalServerError, "internal server error"
	var he *httpError
	switch {
	case errors.As(err, &he):
		status, msg = he.status, he.msg
	case isMiss(err):
		status, msg = http.StatusNotFound, "not found"
	case errors.Is(err, storage.ErrUnavailable):
		// A layer that may have it is down: Nix retries a 503 and does
		// not remember it, as it would a miss. The layer's breaker
		// logs its going down, once.
		status, msg = http.StatusServiceUnavailable, "service unavailable"
	}
	if rw, ok := w.(*responseWriter); ok && rw.status != 0 {
		// The body is under way: all we can do is cut the connection so
		// that the client sees a truncated response, not a complete one.
		s.log.Error("response failed", "path", r.URL.Path, "err", err)
		panic(http.ErrAbortHandler)
	}
	if status == http.StatusServiceUnavailable {
		s.log.Debug("request failed", "path", r.URL.Path, "err", err)
	} else if status >= 500 {
		s.log.Error("request failed", "path", r.URL.Path, "err", err)
	} else if status != http.StatusNotFound {
		s.log.Debug("request refused", "path", r.URL.Path, "status", status, "err", err)
	}
	h := w.Header()
	h.Del("Content-Length")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		io.WriteString(w, msg+"\n")
	}
}

// isMiss reports whether err means the thing asked for is not there (or
// not reachable inside the served directories, which to a client is the
// same).
func isMiss(err error) bool {
	if errors.Is(err, cache.ErrNotFound) || errors.Is(err, fs.ErrNotExist) ||
		errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.EISDIR) ||
		errors.Is(err, syscall.ELOOP) {
		return true
	}
	// os.Root's error for a path that would leave the root.
	var pe *fs.PathError
	return errors.As(err, &pe) && pe.Err.Error() == "path escapes from parent"
}

// misses is what a request for a file ends with when no layer had it:
// the first failure that is no miss, as the layer that could not be read
// may hold the file and a client would remember a miss and build what it
// holds; else a miss.
type misses struct{ failed error }

// add notes one layer's answer.
func (m *misses) add(err error) {
	if m.failed == nil && !isMiss(err) {
		m.failed = err
	}
}

// err is the answer to the request.
func (m *misses) err() error {
	if m.failed == nil {
		return cache.ErrNotFound
	}
	return m.failed
}

// responseWriter records the status and body size for metrics and logs.
// It passes ReadFrom through, so that http.ServeContent of an *os.File
// still uses sendfile.
type responseWriter struct {
	http.ResponseWriter
	route  string
	status int
	bytes  int64
}

func (w *responseWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
		// Nix 2.8 decodes any Content-Encoding it is given, even
		// "identity", and fails: never let one out.
		w.Header().Del("Content-Encoding")
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *responseWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	n, err := io.Copy(w.ResponseWriter, r)
	w.bytes += n
	return n, err
}

func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
