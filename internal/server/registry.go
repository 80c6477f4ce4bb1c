package server

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/flakeregistry"
)

// registries is the flake registry served, in the two forms Nix versions
// need (flakeregistry.Registry.Final): plain for Nix before 2.25, final
// for 2.25 and later.
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

// buildRegistry merges the registries, the first directory's entries
// first (flakeregistry.Registry.Extend). A registry that does not parse,
// or an entry Nix could not read, is logged and left out.
func (s *Server) buildRegistry() (registries, error) {
	var (
		merged flakeregistry.Registry
		found  bool
	)
	for _, l := range s.layers {
		reg, err := flakeregistry.Read(context.Background(), l.b, bundle.RegistryName)
		if isMiss(err) {
			continue
		}
		if err != nil {
			s.log.Warn("skipping flake registry", "dir", l.dir, "err", err)
			continue
		}
		found = true
		good := reg.Flakes[:0]
		for _, f := range reg.Flakes {
			if !flakeregistry.Valid(f) {
				s.log.Warn("skipping bad flake registry entry", "dir", l.dir, "entry", string(f))
				continue
			}
			good = append(good, f)
		}
		reg.Flakes = good
		merged.Extend(reg)
	}
	if !found {
		return registries{plain: emptyRegistry, final: emptyRegistry}, nil
	}
	var (
		regs registries
		err  error
	)
	if regs.plain, err = merged.Marshal(); err != nil {
		return registries{}, err
	}
	if regs.final, err = merged.Final().Marshal(); err != nil {
		return registries{}, err
	}
	return regs, nil
}
