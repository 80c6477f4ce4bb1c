package bundle

import (
	"fmt"
	"slices"

	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Where a path came from, as a manifest's paths[].origin.from spells it.
const (
	FromStore    = "store"    // dumped from the packing machine's store
	FromUpstream = "upstream" // copied verbatim from a binary cache
	FromBuild    = "build"    // realised with Nix by pack, then dumped
)

// Origin is where pack took a path from. Manifests written before
// nix-airgap recorded it have none.
type Origin struct {
	// From is FromStore, FromUpstream or FromBuild.
	From string
	// URL is the binary cache's URL, for FromUpstream.
	URL string
	// Keys are the names of the trusted keys whose signatures on the
	// cache's narinfo verified, sorted; empty for a content-addressed
	// path taken unsigned, and for the other kinds.
	Keys []string
}

// Fetch is what the fixed-output derivation that made a path downloads.
// Manifests written before nix-airgap recorded it have none.
type Fetch struct {
	// URLs are as the derivation names them; empty for fetchers that
	// name none in their environment.
	URLs   []string
	Method storepath.Method
	// Hash is the derivation's output hash: of the file for Flat, of
	// the NAR for Recursive.
	Hash storepath.Hash
}

type (
	// jsonProvenance are the last keys of a path, after "flat".
	jsonProvenance struct {
		Origin *jsonOrigin `json:"origin,omitempty"`
		Fetch  *jsonFetch  `json:"fetch,omitempty"`
	}
	jsonOrigin struct {
		From string   `json:"from"`
		URL  string   `json:"url"`
		Keys []string `json:"keys"`
	}
	jsonFetch struct {
		URLs   []string `json:"urls"`
		Method string   `json:"method"`
		Hash   string   `json:"hash"`
	}
)

// methodNames are the manifest's names of a fetch's hash methods, read
// both ways; a var only because Go has no constant maps.
var methodNames = map[storepath.Method]string{storepath.Flat: "flat", storepath.Recursive: "recursive"}

func (o *Origin) toJSON() *jsonOrigin {
	if o == nil {
		return nil
	}
	keys := slices.Sorted(slices.Values(o.Keys))
	if keys == nil {
		keys = []string{}
	}
	return &jsonOrigin{From: o.From, URL: o.URL, Keys: slices.Compact(keys)}
}

func originFromJSON(j *jsonOrigin) (*Origin, error) {
	if j == nil {
		return nil, nil
	}
	switch j.From {
	case FromStore, FromBuild:
	case FromUpstream:
		if j.URL == "" {
			return nil, fmt.Errorf("origin: from %s without a url", j.From)
		}
	default:
		return nil, fmt.Errorf("origin: from %q: want %s, %s or %s", j.From, FromStore, FromUpstream, FromBuild)
	}
	o := &Origin{From: j.From, URL: j.URL}
	if len(j.Keys) > 0 {
		o.Keys = j.Keys
	}
	return o, nil
}

func (f *Fetch) toJSON() (*jsonFetch, error) {
	if f == nil {
		return nil, nil
	}
	m, ok := methodNames[f.Method]
	if !ok || f.Hash.IsZero() {
		return nil, fmt.Errorf("fetch: method %d, hash %q: want a flat or recursive hash", f.Method, f.Hash)
	}
	urls := f.URLs
	if urls == nil {
		urls = []string{}
	}
	return &jsonFetch{URLs: urls, Method: m, Hash: f.Hash.String()}, nil
}

func fetchFromJSON(j *jsonFetch) (*Fetch, error) {
	if j == nil {
		return nil, nil
	}
	f := &Fetch{}
	if len(j.URLs) > 0 {
		f.URLs = j.URLs
	}
	for m, name := range methodNames {
		if name == j.Method {
			f.Method = m
		}
	}
	if f.Method == 0 {
		return nil, fmt.Errorf("fetch: method %q: want flat or recursive", j.Method)
	}
	h, err := storepath.ParseHash(j.Hash)
	if err != nil {
		return nil, fmt.Errorf("fetch: hash: %w", err)
	}
	f.Hash = h
	return f, nil
}
