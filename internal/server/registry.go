package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/storage"
)

// registries is the flake registry served, in the two forms Nix versions
// need. A registry entry that pins a source by narHash (as pack writes
// them: a store path and its narHash) is substituted by that hash, not
// fetched, only if Nix sees it as complete: Nix before 2.25 does so for
// any input with a narHash, but rejects the "__final" attribute on a path
// input; Nix 2.25 and later need "__final": true, or they read the path
// from the local file system and fail offline.
type registries struct {
	plain, final []byte
}

// emptyRegistry is served when no directory has a registry: a 404 would
// make every indirect flake reference fail, where an empty registry just
// resolves nothing.
var emptyRegistry = []byte(`{"version":2,"flakes":[]}` + "\n")

// serveRegistry answers /flake-registry.json with the union of the served
// directories' registries; for an indirect reference in several, the first
// directory wins. It always answers, with an empty registry if no
// directory has one.
func (s *Server) serveRegistry(w http.ResponseWriter, r *http.Request) error {
	regs, err := s.registry.get()
	if err != nil {
		return err
	}
	body := regs.plain
	if nixAtLeast(r.UserAgent(), 2, 25) {
		body = regs.final
	}
	writeBytes(w, r, "application/json", body)
	return nil
}

// nixAtLeast reports whether a User-Agent names Nix major.minor or later.
// Every Nix sends "curl/VERSION Nix/VERSION"; Lix and anything else that
// names no Nix version count as older.
func nixAtLeast(userAgent string, major, minor int) bool {
	for field := range strings.FieldsSeq(userAgent) {
		v, ok := strings.CutPrefix(field, "Nix/")
		if !ok {
			continue
		}
		maj, rest, _ := strings.Cut(v, ".")
		end := 0
		for end < len(rest) && '0' <= rest[end] && rest[end] <= '9' {
			end++
		}
		x, err1 := strconv.Atoi(maj)
		y, err2 := strconv.Atoi(rest[:end])
		if err1 != nil || err2 != nil {
			return false
		}
		return x > major || x == major && y >= minor
	}
	return false
}

func (s *Server) registrySignature() string {
	var b strings.Builder
	for _, l := range s.layers {
		fi, err := l.b.Stat(context.Background(), bundle.RegistryName)
		if err != nil {
			b.WriteString("-;")
			continue
		}
		fmt.Fprintf(&b, "%s;", fi.Version)
	}
	return b.String()
}

const maxRegistrySize = 16 << 20

// buildRegistry merges the registries. A registry that does not parse is
// logged and left out.
func (s *Server) buildRegistry() (registries, error) {
	type registry struct {
		Version int               `json:"version"`
		Flakes  []json.RawMessage `json:"flakes"`
	}
	var (
		plain = registry{Version: 2, Flakes: []json.RawMessage{}}
		final = registry{Version: 2, Flakes: []json.RawMessage{}}
		seen  = map[string]bool{}
		found bool
	)
	for _, l := range s.layers {
		raw, _, err := storage.ReadFile(context.Background(), l.b, bundle.RegistryName, maxRegistrySize)
		if isMiss(err) {
			continue
		}
		var reg registry
		if err == nil {
			err = json.Unmarshal(raw, &reg)
		}
		if err == nil && reg.Version != 2 {
			err = fmt.Errorf("version %d, want 2", reg.Version)
		}
		if err != nil {
			s.log.Warn("skipping flake registry", "dir", l.dir, "file", bundle.RegistryName, "err", err)
			continue
		}
		found = true
		for _, f := range reg.Flakes {
			var entry struct {
				From json.RawMessage            `json:"from"`
				To   map[string]json.RawMessage `json:"to"`
			}
			var key bytes.Buffer
			if json.Unmarshal(f, &entry) != nil || entry.To == nil || json.Compact(&key, entry.From) != nil {
				s.log.Warn("skipping bad flake registry entry", "dir", l.dir, "entry", string(f))
				continue
			}
			if seen[key.String()] {
				continue
			}
			seen[key.String()] = true
			plain.Flakes = append(plain.Flakes, f)
			fin := f
			if _, pinned := entry.To["narHash"]; pinned {
				if _, ok := entry.To["__final"]; !ok {
					var whole map[string]json.RawMessage
					if err := json.Unmarshal(f, &whole); err != nil {
						return registries{}, err
					}
					entry.To["__final"] = json.RawMessage("true")
					if whole["to"], err = json.Marshal(entry.To); err != nil {
						return registries{}, err
					}
					if fin, err = json.Marshal(whole); err != nil {
						return registries{}, err
					}
				}
			}
			final.Flakes = append(final.Flakes, fin)
		}
	}
	if !found {
		return registries{plain: emptyRegistry, final: emptyRegistry}, nil
	}
	var regs registries
	for _, r := range []struct {
		out *[]byte
		reg registry
	}{{&regs.plain, plain}, {&regs.final, final}} {
		b, err := json.Marshal(r.reg)
		if err != nil {
			return registries{}, err
		}
		*r.out = append(b, '\n')
	}
	return regs, nil
}
