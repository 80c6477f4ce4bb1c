package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
)

// serveRegistry answers /flake-registry.json with the union of the served
// directories' registries; for an indirect reference in several, the first
// directory wins.
func (s *Server) serveRegistry(w http.ResponseWriter, r *http.Request) error {
	body, err := s.registry.get()
	if err != nil {
		return err
	}
	if body == nil {
		return errNotFound
	}
	writeBytes(w, r, "application/json", body)
	return nil
}

func (s *Server) registrySignature() string {
	var b strings.Builder
	for _, l := range s.layers {
		fi, err := l.root.Stat(bundle.RegistryName)
		if err != nil {
			b.WriteString("-;")
			continue
		}
		fmt.Fprintf(&b, "%d,%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String()
}

const maxRegistrySize = 16 << 20

// buildRegistry merges the registries; it returns nil when there is none.
// A registry that does not parse is logged and left out.
func (s *Server) buildRegistry() ([]byte, error) {
	type registry struct {
		Version int               `json:"version"`
		Flakes  []json.RawMessage `json:"flakes"`
	}
	var (
		out   = registry{Version: 2, Flakes: []json.RawMessage{}}
		seen  = map[string]bool{}
		found bool
	)
	for _, l := range s.layers {
		raw, err := l.root.ReadFile(bundle.RegistryName)
		if err != nil {
			if !isMiss(err) {
				s.log.Warn("cannot read flake registry", "dir", l.dir, "err", err)
			}
			continue
		}
		var reg registry
		if len(raw) > maxRegistrySize {
			err = fmt.Errorf("larger than %d bytes", maxRegistrySize)
		} else if err = json.Unmarshal(raw, &reg); err == nil && reg.Version != 2 {
			err = fmt.Errorf("version %d, want 2", reg.Version)
		}
		if err != nil {
			s.log.Warn("skipping flake registry", "dir", l.dir, "file", bundle.RegistryName, "err", err)
			continue
		}
		found = true
		for _, f := range reg.Flakes {
			var entry struct {
				From json.RawMessage `json:"from"`
			}
			var key bytes.Buffer
			if json.Unmarshal(f, &entry) != nil || json.Compact(&key, entry.From) != nil {
				s.log.Warn("skipping bad flake registry entry", "dir", l.dir, "entry", string(f))
				continue
			}
			if !seen[key.String()] {
				seen[key.String()] = true
				out.Flakes = append(out.Flakes, f)
			}
		}
	}
	if !found {
		return nil, nil
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
