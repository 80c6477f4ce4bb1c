// Package role names why a store path is in a plan or a bundle (its
// roles) and how much of the targets' closures a plan covers (its mode).
// plan decides both, pack carries them over, and bundle records them in
// manifest.json spelled as String, Names and ParseMode give them.
package role

import (
	"errors"
	"fmt"
	"strings"
)

// Set is a set of roles; each role below is a set of one. The zero value
// is the empty set.
type Set uint8

const (
	// Runtime: in the runtime closure of a target.
	Runtime Set = 1 << iota
	// Source: the output of a fixed-output derivation in the build
	// closure, or in such an output's closure.
	Source
	// Build: any other output of the build closure, or in its runtime
	// closure.
	Build
	// Derivation: a .drv, or in the closure of one (input sources).
	Derivation
	// FlakeInput: a flake's source or a locked input's source.
	FlakeInput

	// All is every role.
	All = Runtime | Source | Build | Derivation | FlakeInput
)

// names spells each role as docs/bundle-format.md §2 does, in bit order,
// which is also the order a manifest lists them in.
var names = [...]string{"runtime", "source", "build", "derivation", "flake-input"}

// Parse returns the role named name.
func Parse(name string) (Set, error) {
	for i, n := range names {
		if n == name {
			return 1 << i, nil
		}
	}
	return 0, fmt.Errorf("unknown role %q (want one of %s)", name, strings.Join(names[:], " "))
}

// Has reports whether s includes every role in x.
func (s Set) Has(x Set) bool { return s&x == x }

// Names lists s's roles in a fixed order: runtime, source, build,
// derivation, flake-input.
func (s Set) Names() []string {
	var out []string
	for i, n := range names {
		if s&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	return out
}

// String is s's names joined by ",".
func (s Set) String() string { return strings.Join(s.Names(), ",") }

// Mode chooses how much of the targets' closures a plan covers, and so
// which roles it collects. The zero Mode is ModeBuild, the default.
type Mode uint8

const (
	// ModeBuild: ModeSources plus every output of the build closure and
	// those outputs' runtime closures.
	ModeBuild Mode = iota
	// ModeRuntime: the runtime closure of the targets' outputs.
	ModeRuntime
	// ModeSources: ModeRuntime plus the outputs of every fixed-output
	// derivation in the targets' build closure (tarballs, git checkouts,
	// bootstrap tools).
	ModeSources
)

// ErrBadMode reports a mode name ParseMode does not know.
var ErrBadMode = errors.New("unknown mode")

var modeNames = [...]string{ModeBuild: "build", ModeRuntime: "runtime", ModeSources: "sources"}

// ParseMode parses "runtime", "sources" or "build".
func ParseMode(s string) (Mode, error) {
	for m, n := range modeNames {
		if n == s {
			return Mode(m), nil
		}
	}
	return 0, fmt.Errorf("mode %q: %w: want runtime, sources or build", s, ErrBadMode)
}

// String is the mode's name, as ParseMode takes it.
func (m Mode) String() string {
	if int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("Mode(%d)", m)
}
