package derivation

import "github.com/nix-airgap/nix-airgap/internal/storepath"

// Fetch is what a fixed-output derivation downloads, and the hash its
// output must have.
type Fetch struct {
	// URLs are FetchURLs: empty for fetchers that name none in the
	// environment.
	URLs   []string
	Method storepath.Method
	Hash   storepath.Hash
}

// Fetch describes a fixed-output derivation. ok is false for other
// derivations and for hashes FixedOutput cannot read.
func (d *Derivation) Fetch() (f Fetch, ok bool) {
	method, h, ok := d.FixedOutput()
	if !ok {
		return Fetch{}, false
	}
	return Fetch{URLs: d.FetchURLs(), Method: method, Hash: h}, true
}
