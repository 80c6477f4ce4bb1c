// Package drvname splits a Nix derivation or store path name into a
// package name and a version exactly as Nix does: builtins.parseDrvName,
// which `nix-env` and `nix store diff-closures` use too (DrvName in Nix's
// libstore/names.cc).
package drvname

// Name is a derivation name split into its parts.
type Name struct {
	// Name is everything before the first "-" that is not followed by
	// a letter: "apache-httpd" of "apache-httpd-2.0.48". It is the
	// whole input when there is no such "-".
	Name string
	// Version is everything after that "-": "2.0.48". It is "" when
	// there is none.
	Version string
}

// Parse splits s as builtins.parseDrvName does. A "-" starts the version
// when another byte follows it and that byte is not an ASCII letter (Nix
// tests it with isalpha in the C locale); the version is the rest of s,
// even if it holds further dashes ("hello-1.0-man" is hello, "1.0-man").
func Parse(s string) Name {
	for i := 0; i+1 < len(s); i++ {
		if s[i] == '-' && !isLetter(s[i+1]) {
			return Name{Name: s[:i], Version: s[i+1:]}
		}
	}
	return Name{Name: s}
}

// String joins the parts back into the name Parse was given. Parse never
// splits off an empty version, so an empty one means there was none.
func (n Name) String() string {
	if n.Version == "" {
		return n.Name
	}
	return n.Name + "-" + n.Version
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
