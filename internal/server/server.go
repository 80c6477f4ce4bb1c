// Package server serves nix-airgap caches and bundles to stock Nix clients
// over HTTP: the binary cache protocol (nix-cache-info, narinfos, NARs,
// NAR listings, build logs), a hashed mirror for flat fixed-output files,
// a flake registry, nixpkgs channels, a health check and Prometheus
// metrics.
//
// The server is strictly read-only. Every file it serves is opened through
// a storage.Backend per served location (a directory's goes through an
// os.Root), so no request, however crafted, reaches a file outside them;
// request paths are checked before routing and anything
// unusual ('..', encoded slashes, backslashes, control bytes) is refused
// with 400. A miss is always 404, never 5xx, because Nix retries a 5xx and
// then fails the build instead of building from source. No response ever
// carries Content-Encoding: Nix 2.8 would try to decode the body.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/channel"
	"github.com/nix-airgap/nix-airgap/internal/nixstore"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Config configures a Server. Dirs or NixStore is required.
type Config struct {
	// Dirs are the cache or bundle directories to serve, in order: when
	// several hold the same file, the first wins. Each must have a
	// nix-cache-info, and all must name the same StoreDir.
	Dirs []string
	// NixStore, if set, is served after Dirs: its valid paths as a
	// binary cache, and its flat fixed-output paths as a hashed mirror.
	// Its store dir must be theirs.
	NixStore *nixstore.Store
	// Key, if set, adds the site's signature to every narinfo served, so
	// that clients need to trust only this key.
	Key *signing.SecretKey
	// Priority is the Priority nix-cache-info announces; 0 means 40.
	Priority int
	// Auth, if set, requires credentials on every route but /healthz.
	Auth *Credentials
	// TLSCertFile and TLSKeyFile, if set (both or neither), make Serve
	// speak HTTPS.
	TLSCertFile, TLSKeyFile string
	// Log receives errors and warnings; nil discards them.
	Log *slog.Logger
	// AccessLog receives one record per request; nil logs none. It costs
	// about a fifth of the server's CPU at full narinfo load.
	AccessLog *slog.Logger
	// NarInfoCacheBytes bounds the in-memory narinfo cache; 0 means 64 MiB.
	NarInfoCacheBytes int
	// RescanInterval is how often, at most, the server looks for new
	// manifests and flake registries, and how long a narinfo it has
	// checked against its file is served without checking again (a new
	// narinfo is seen at once), which is never longer than half of
	// cache.RemovalGrace, so that a narinfo gc removed is a miss before
	// its NAR goes; 0 means one second.
	RescanInterval time.Duration
	// WriteTimeout bounds writing one response; 0 means one hour, enough
	// for a multi-gigabyte NAR on a slow link.
	WriteTimeout time.Duration
	// ShutdownTimeout is how long Serve waits for requests in flight once
	// its context ends; 0 means 30 seconds.
	ShutdownTimeout time.Duration
	// Now is the server's clock, for RescanInterval and the access log;
	// nil means time.Now. Tests move it instead of sleeping.
	Now func() time.Time
}

const (
	defaultPriority          = 40
	defaultNarInfoCacheBytes = 64 << 20
	defaultRescanInterval    = time.Second
	defaultWriteTimeout      = time.Hour
	defaultShutdownTimeout   = 30 * time.Second
	maxHeaderBytes           = 64 << 10
	maxPathLen               = 2048
)

// Server serves a set of directories. Create it with New.
type Server struct {
	cfg       Config
	log       *slog.Logger
	layers    []*layer
	storeDir  storepath.Dir
	cacheInfo []byte
	tls       *tls.Config

	narinfos *narinfoCache
	mirror   *refresher[bundle.FlatIndex]
	registry *refresher[registries]
	metrics  *metrics
	mux      *http.ServeMux
	// routeNames names the route of each of mux's patterns.
	routeNames map[string]string

	// listings holds NAR listings made from NARs, keyed and bounded as
	// narinfos are.
	listings     *narinfoCache
	listingCalls singleflight.Group
}

// New opens cfg.Dirs and checks that they can be served together.
func New(cfg Config) (*Server, error) {
	if len(cfg.Dirs) == 0 && cfg.NixStore == nil {
		return nil, errors.New("serve: no directory to serve")
	}
	if cfg.Priority == 0 {
		cfg.Priority = defaultPriority
	}
	if cfg.Priority < 0 {
		return nil, fmt.Errorf("serve: priority %d: must be positive", cfg.Priority)
	}
	if cfg.NarInfoCacheBytes == 0 {
		cfg.NarInfoCacheBytes = defaultNarInfoCacheBytes
	}
	if cfg.RescanInterval == 0 {
		cfg.RescanInterval = defaultRescanInterval
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = defaultWriteTimeout
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = defaultShutdownTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, log: cfg.Log, metrics: newMetrics()}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if (cfg.TLSCertFile == "") != (cfg.TLSKeyFile == "") {
		return nil, errors.New("serve: TLS needs both a certificate and a key")
	}
	if cfg.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("serve: load TLS key pair: %w", err)
		}
		s.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if err := s.openLayers(context.Background()); err != nil {
		s.Close()
		return nil, err
	}
	s.cacheInfo = fmt.Appendf(nil, "StoreDir: %s\nWantMassQuery: 1\nPriority: %d\n", s.storeDir, cfg.Priority)
	s.narinfos = newNarinfoCache(cfg.NarInfoCacheBytes)
	s.listings = newNarinfoCache(cfg.NarInfoCacheBytes)
	s.mirror = newRefresher(cfg.Now, cfg.RescanInterval, s.mirrorSignature, s.buildMirrorIndex)
	s.registry = newRefresher(cfg.Now, cfg.RescanInterval, s.registrySignature, s.buildRegistry)
	s.routes()
	return s, nil
}

// Close releases the served directories. The Handler must not be used
// afterwards.
func (s *Server) Close() error {
	var errs []error
	for _, l := range s.layers {
		errs = append(errs, l.b.Close())
	}
	return errors.Join(errs...)
}

// StoreDir is the store directory the served caches are for.
func (s *Server) StoreDir() storepath.Dir { return s.storeDir }

// Serve serves on ln until ctx ends, then shuts down gracefully: it stops
// accepting, lets requests in flight finish for up to ShutdownTimeout, and
// returns nil. It uses TLS when the Config has a certificate.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second, // requests have no body
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    maxHeaderBytes,
		// OPTIONS * gets the 405 every other method does.
		DisableGeneralOptionsHandler: true,
		ErrorLog:                     slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:                  func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	if s.tls != nil {
		srv.TLSConfig = s.tls.Clone()
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		srv.Close()
		err = fmt.Errorf("serve %s: shut down: %w", ln.Addr(), err)
	}
	<-errc
	return err
}

// Handler is the server's HTTP handler.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

func (s *Server) routes() {
	s.mux, s.routeNames = http.NewServeMux(), map[string]string{}
	handle := func(pattern, route string, h handlerFunc) {
		s.mux.Handle(pattern, s.adapt(h))
		s.routeNames[pattern] = route
	}
	handle("GET /"+cache.CacheInfoFile, "nix-cache-info", s.serveCacheInfo)
	handle("GET /healthz", "healthz", s.serveHealth)
	handle("GET /metrics", "metrics", s.serveMetrics)
	handle("GET /"+bundle.RegistryName, "flake-registry", s.serveRegistry)
	handle("GET /"+cache.NarDir+"/{file}", "nar", s.serveNAR)
	handle("GET /"+cache.LogDir+"/{file}", "log", s.serveLog)
	handle("GET /"+channel.Dir+"/{name}", "channel", s.serveChannel)
	handle("GET /"+channel.Dir+"/{name}/{$}", "channel", s.redirectChannel)
	handle("GET /"+channel.Dir+"/{name}/"+channel.FileName, "channel", s.serveChannelFile)
	handle("GET /{file}", "narinfo", s.serveNarInfo)
	handle("/", "other", func(http.ResponseWriter, *http.Request) error { return cache.ErrNotFound })
}

// serveHTTP counts and logs every request; dispatch answers it.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	var start time.Time
	if s.cfg.AccessLog != nil {
		start = s.cfg.Now()
	}
	rw := &responseWriter{ResponseWriter: w, route: "other"}
	defer s.finish(rw, r, start)
	if err := s.dispatch(rw, r); err != nil {
		s.writeError(rw, r, err)
	}
}

// dispatch checks what every request must pass, then routes it. Hashed
// mirror paths are routed here, not by the ServeMux, because their base64
// digests may hold '/' and even '//', which the ServeMux would redirect.
func (s *Server) dispatch(w *responseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return errMethod
	}
	if err := checkPath(r); err != nil {
		return err
	}
	// Routed before auth, so that a refused request is counted and
	// logged under the route it asked for.
	var serve handlerFunc
	w.route, serve = s.route(r)
	if s.cfg.Auth != nil && r.URL.Path != "/healthz" && !s.cfg.Auth.allow(r) {
		w.Header().Set("WWW-Authenticate", `Basic realm="nix-airgap", charset="UTF-8"`)
		return errUnauthorized
	}
	return serve(w, r)
}

// route returns the name and handler of r's route.
func (s *Server) route(r *http.Request) (string, handlerFunc) {
	if h, ok := ParseMirrorPath(r.URL.Path); ok {
		return "mirror", func(w http.ResponseWriter, r *http.Request) error { return s.serveMirror(w, r, h) }
	}
	if strings.Contains(r.URL.Path, "//") {
		return "other", func(http.ResponseWriter, *http.Request) error { return badRequest("empty path segment") }
	}
	// Narinfos are most requests by far: skip the ServeMux for them.
	if hash, ok := cache.NarInfoHashPart(r.URL.Path[1:]); ok && len(hash) == storepath.HashLen {
		return "narinfo", func(w http.ResponseWriter, r *http.Request) error { return s.serveNarInfoFile(w, r, r.URL.Path[1:]) }
	}
	if hash, ok := cache.ListingHashPart(r.URL.Path[1:]); ok {
		return "listing", func(w http.ResponseWriter, r *http.Request) error { return s.serveListing(w, r, hash) }
	}
	_, pattern := s.mux.Handler(r)
	route, ok := s.routeNames[pattern]
	if !ok {
		route = "other" // a redirect the ServeMux makes
	}
	return route, func(w http.ResponseWriter, r *http.Request) error {
		s.mux.ServeHTTP(w, r)
		return nil
	}
}

// checkPath refuses request paths that no honest client sends and that
// could confuse a file lookup.
func checkPath(r *http.Request) error {
	p := r.URL.Path
	if len(r.RequestURI) > maxPathLen || len(p) > maxPathLen {
		return &httpError{status: http.StatusRequestURITooLong, msg: "path too long"}
	}
	if !strings.HasPrefix(p, "/") {
		return badRequest("path must be absolute")
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x20 || c == 0x7f || c == '\\' || c == '%' {
			return badRequest("forbidden byte in path")
		}
	}
	if raw := r.URL.RawPath; raw != "" && strings.Contains(strings.ToLower(raw), "%2f") {
		return badRequest("encoded slash in path")
	}
	for seg := range strings.SplitSeq(p[1:], "/") {
		if seg == "." || seg == ".." {
			return badRequest("dot segment in path")
		}
	}
	return nil
}

func (s *Server) finish(rw *responseWriter, r *http.Request, start time.Time) {
	if rw.status == 0 {
		rw.status = http.StatusOK
	}
	s.metrics.request(rw.route, rw.status, rw.bytes)
	if s.cfg.AccessLog == nil || !s.cfg.AccessLog.Enabled(r.Context(), slog.LevelInfo) {
		return
	}
	s.cfg.AccessLog.LogAttrs(r.Context(), slog.LevelInfo, "request",
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.String("route", rw.route),
		slog.Int("status", rw.status),
		slog.Int64("bytes", rw.bytes),
		slog.Duration("duration", s.cfg.Now().Sub(start)),
		slog.String("remote", r.RemoteAddr),
	)
}

func (s *Server) serveCacheInfo(w http.ResponseWriter, r *http.Request) error {
	writeBytes(w, r, cache.CacheInfoType, s.cacheInfo)
	return nil
}

func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) error {
	writeBytes(w, r, "text/plain; charset=utf-8", []byte("ok\n"))
	return nil
}

// writeBytes answers a GET or HEAD with a small in-memory body.
func writeBytes(w http.ResponseWriter, r *http.Request, contentType string, body []byte) {
	h := w.Header()
	// Direct assignment: the keys are canonical already.
	h["Content-Type"] = []string{contentType}
	h["Content-Length"] = []string{itoa(int64(len(body)))}
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}
