package narinfo

import (
	"errors"
	"fmt"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// contentAddress is a parsed CA field, as Nix 2.8's parseContentAddress
// reads it: "text:sha256:DIGEST" or "fixed:[r:]ALGO:DIGEST".
type contentAddress struct {
	text   bool
	method storepath.Method
	hash   storepath.Hash
}

var errBadCA = errors.New(`want "text:sha256:HASH" or "fixed:[r:]ALGO:HASH"`)

func parseCA(s string) (contentAddress, error) {
	prefix, rest, ok := strings.Cut(s, ":")
	if !ok {
		return contentAddress{}, fmt.Errorf("parse content address %q: %w", s, errBadCA)
	}
	ca := contentAddress{method: storepath.Flat}
	switch prefix {
	case "text":
		ca.text = true
	case "fixed":
		if r, ok := strings.CutPrefix(rest, "r:"); ok {
			ca.method, rest = storepath.Recursive, r
		}
	default:
		return contentAddress{}, fmt.Errorf("parse content address %q: %w", s, errBadCA)
	}
	algoName, digest, ok := strings.Cut(rest, ":")
	if !ok {
		return contentAddress{}, fmt.Errorf("parse content address %q: %w", s, errBadCA)
	}
	algo, err := storepath.ParseAlgo(algoName)
	if err != nil {
		return contentAddress{}, fmt.Errorf("parse content address %q: %w", s, err)
	}
	if ca.text && algo != storepath.SHA256 {
		return contentAddress{}, fmt.Errorf("parse content address %q: text needs sha256: %w", s, errBadCA)
	}
	if ca.hash, err = storepath.ParseDigest(algo, digest); err != nil {
		return contentAddress{}, fmt.Errorf("parse content address %q: %w", s, err)
	}
	return ca, nil
}

// String is Nix's renderContentAddress: the digest in nix32.
func (ca contentAddress) String() string {
	if ca.text {
		return "text:" + ca.hash.String()
	}
	return "fixed:" + ca.method.Prefix() + ca.hash.String()
}

// IsContentAddressed reports whether ni has a CA field from which its
// store path recomputes, as Nix's ValidPathInfo::isContentAddressed
// checks. Nix trusts such a path without a signature: a forged one would
// need a hash collision, and the NAR is checked against NarHash anyway.
func (ni *NarInfo) IsContentAddressed() bool {
	if ni.CA == "" {
		return false
	}
	ca, err := parseCA(ni.CA)
	if err != nil {
		return false
	}
	dir, name := ni.StorePath.Dir, ni.StorePath.Name
	var p storepath.Path
	switch {
	case ca.text:
		p, err = dir.MakeText(ca.hash, name, ni.References)
	case ca.method == storepath.Recursive && ca.hash.Algo == storepath.SHA256:
		// A "source" path: the type lists its references, self last.
		var refs []string
		self := false
		for _, r := range ni.References {
			if r == ni.StorePath {
				self = true
			} else {
				refs = append(refs, r.String())
			}
		}
		typ := "source"
		for _, r := range sortedUnique(refs) {
			typ += ":" + r
		}
		if self {
			typ += ":self"
		}
		p, err = dir.Make(typ, ca.hash, name)
	case len(ni.References) == 0:
		p, err = dir.MakeFixedOutput(ca.method, ca.hash, name)
	default:
		return false // Nix asserts that these have no references
	}
	return err == nil && p == ni.StorePath
}

// FlatHash returns the hash of the file of a flat fixed-output path
// (ca is "fixed:ALGO:DIGEST"), which is what a hashed mirror serves it
// by, and whether ca names one.
func FlatHash(ca string) (storepath.Hash, bool) {
	c, err := parseCA(ca)
	if err != nil || c.text || c.method != storepath.Flat {
		return storepath.Hash{}, false
	}
	return c.hash, true
}
