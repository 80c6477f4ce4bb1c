package server

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/channel"
	"github.com/nix-airgap/nix-airgap/internal/nixstore"
	"github.com/nix-airgap/nix-airgap/internal/storage"
)

// serveNAR answers /nar/FILE with the (compressed) NAR file as stored,
// honouring HEAD and Range. http.ServeContent on a directory's file lets
// the kernel send it (sendfile).
func (s *Server) serveNAR(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("file")
	if !validFileName(name) || !strings.Contains(name, ".nar") {
		return badRequest("invalid NAR file name")
	}
	if s.cfg.NixStore != nil && nixstore.IsNARName(name) {
		return s.serveStoreNAR(w, r, name)
	}
	if err := s.serveFile(w, r, cache.NarDir+"/"+name, cache.NarType); err != nil {
		return err
	}
	s.metrics.nars.Add(1)
	return nil
}

// serveStoreNAR answers /nar/NAME for a path of the Nix store, dumped as
// it is sent. An uncompressed NAR has a Content-Length; a zstd one is
// sent chunked, its length unknown until the end.
func (s *Server) serveStoreNAR(w http.ResponseWriter, r *http.Request, name string) error {
	n, err := s.cfg.NixStore.OpenNAR(r.Context(), name)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", cache.NarType)
	if size := n.Size(); size >= 0 {
		h.Set("Content-Length", itoa(size))
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return nil
	}
	if err := n.Dump(w); err != nil {
		// The status is out: writeError cuts the connection, so that
		// the client sees a short response, not a complete one.
		return err
	}
	s.metrics.nars.Add(1)
	return nil
}

// serveLog answers /log/DRVNAME with a build log.
func (s *Server) serveLog(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("file")
	if !validFileName(name) {
		return badRequest("invalid log name")
	}
	return s.serveFile(w, r, cache.LogDir+"/"+name, cache.LogType)
}

// serveChannel answers /channels/NAME for a channel the layers hold. It
// is what nix-channel --update fetches first: every Nix from 2.3 to 2.34
// stores the body (any will do) and then fetches nixexprs.tar.xz below
// the URL it ended at.
func (s *Server) serveChannel(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if channel.CheckName(name) != nil {
		return cache.ErrNotFound
	}
	f, err := s.open(r.Context(), channel.File(name))
	if err != nil {
		return err
	}
	f.Close()
	writeBytes(w, r, "text/plain; charset=utf-8", fmt.Appendf(nil, "nix-airgap channel %s: %s\n", name, channel.FileName))
	return nil
}

// redirectChannel sends /channels/NAME/ to /channels/NAME, so that a
// channel added with a trailing slash ends at a URL below which
// nixexprs.tar.xz is found.
func (s *Server) redirectChannel(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if channel.CheckName(name) != nil {
		return cache.ErrNotFound
	}
	// Relative, so that it holds behind a proxy that serves us below a
	// path of its own.
	w.Header().Set("Location", "../"+name)
	w.WriteHeader(http.StatusMovedPermanently)
	return nil
}

// serveChannelFile answers /channels/NAME/nixexprs.tar.xz: the channel's
// expressions, as nix-channel --update and -I NAME=URL fetch them.
func (s *Server) serveChannelFile(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if channel.CheckName(name) != nil {
		return cache.ErrNotFound
	}
	return s.serveFile(w, r, channel.File(name), "application/x-xz")
}

// serveFile serves the regular file name from the first layer that has it.
func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, name, contentType string) error {
	f, err := s.open(r.Context(), name)
	if err != nil {
		return err
	}
	defer f.Close()
	w.Header().Set("Content-Type", contentType)
	http.ServeContent(w, r, "", f.Info().ModTime, f)
	return nil
}

// open opens the file name in the first layer that has one. As for
// narinfos, a layer that cannot be read does not stop the others
// answering, but if none has the file the answer is that failure, not a
// miss.
func (s *Server) open(ctx context.Context, name string) (storage.File, error) {
	var m misses
	for _, l := range s.layers {
		f, err := l.b.Open(ctx, name)
		if err == nil {
			return f, nil
		}
		m.add(err)
	}
	return nil, m.err()
}

// validFileName reports whether name is a plausible cache file name: what
// Nix writes (nix32, hex, store path names) and nothing that could mean
// something to a file system.
func validFileName(name string) bool {
	if name == "" || len(name) > 255 || name[0] == '.' {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '.' || c == '-' || c == '_' || c == '+' || c == '=' || c == '?') {
			return false
		}
	}
	return true
}
