package nixcli

import (
	"fmt"
	"strconv"
	"strings"
)

// Version is a Nix implementation and its Nix-compatible version, as
// nix --version prints them.
type Version struct {
	// Impl is what nix --version puts in parentheses: "Nix",
	// "Lix, like Nix", "Determinate Nix 3.6.2".
	Impl                string
	Major, Minor, Patch int
	// Raw is the version as printed, such as "2.25.0pre20241101_dirty".
	Raw string
}

// ParseVersion parses the first line of nix --version, such as
// "nix (Nix) 2.8.0" or "nix (Lix, like Nix) 2.91.1".
func ParseVersion(s string) (Version, error) {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	line = strings.TrimSpace(line)
	bad := func(why string) (Version, error) {
		return Version{}, fmt.Errorf("parse nix version %q: %s: %w", line, why, ErrUnexpectedOutput)
	}
	open := strings.IndexByte(line, '(')
	closing := strings.LastIndexByte(line, ')')
	if open < 0 || closing < open {
		return bad("want PROGRAM (IMPL) VERSION")
	}
	v := Version{Impl: line[open+1 : closing], Raw: strings.TrimSpace(line[closing+1:])}
	if v.Impl == "" || v.Raw == "" {
		return bad("want PROGRAM (IMPL) VERSION")
	}
	nums := [3]*int{&v.Major, &v.Minor, &v.Patch}
	rest := v.Raw
	for i, n := range nums {
		end := 0
		for end < len(rest) && '0' <= rest[end] && rest[end] <= '9' {
			end++
		}
		if end == 0 {
			if i < 2 {
				return bad("want MAJOR.MINOR")
			}
			break // "2.4pre2021…" has no patch number
		}
		x, err := strconv.Atoi(rest[:end])
		if err != nil {
			return bad("number out of range")
		}
		*n = x
		rest = rest[end:]
		if !strings.HasPrefix(rest, ".") {
			if i < 1 {
				return bad("want MAJOR.MINOR")
			}
			break
		}
		rest = rest[1:]
	}
	return v, nil
}

// IsLix reports whether v is Lix, whose version numbers (2.90 and up)
// do not follow Nix's: Lix forked from Nix 2.18.
func (v Version) IsLix() bool { return strings.Contains(v.Impl, "Lix") }

// AtLeast reports whether v's Nix version is at least major.minor. For
// Lix it compares the Nix version Lix forked from, 2.18.
func (v Version) AtLeast(major, minor int) bool {
	vMajor, vMinor := v.Major, v.Minor
	if v.IsLix() {
		vMajor, vMinor = 2, 18
	}
	return vMajor > major || vMajor == major && vMinor >= minor
}

func (v Version) String() string { return "nix (" + v.Impl + ") " + v.Raw }
