// Package flakeregistry is Nix's flake registry file, version 2, the only
// version Nix reads: {"version": 2, "flakes": [{"from": ..., "to": ...}]}.
// pack writes one into a bundle, import merges a bundle's into the
// cache's, gc prunes the entries of removed paths, and serve serves the
// union of its directories' registries.
//
// Entries are kept as they were written, so that what nix-airgap does
// not read (an "exact", a "dir", a type it does not know) passes through.
package flakeregistry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// MaxSize caps a registry file, which is read whole.
const MaxSize = 16 << 20

// ErrInvalid reports a file that is not a version 2 flake registry: not
// JSON, another version, or too large.
var ErrInvalid = errors.New("not a version 2 flake registry")

// Registry is a flake registry. Its zero value is the empty registry.
type Registry struct {
	// Flakes are the entries, each as written, in order: Nix takes the
	// first whose "from" matches.
	Flakes []json.RawMessage
}

// file is a registry as Nix writes it.
type file struct {
	Version int               `json:"version"`
	Flakes  []json.RawMessage `json:"flakes"`
}

// Parse reads a registry. What is not JSON or not version 2 is an error
// wrapping ErrInvalid that does not name the file: callers do. Entries
// are not checked (see Valid).
func Parse(data []byte) (*Registry, error) {
	var f file
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if f.Version != 2 {
		// Entries added to another version would be lost on every
		// client.
		return nil, fmt.Errorf("%w: version %d", ErrInvalid, f.Version)
	}
	return &Registry{Flakes: f.Flakes}, nil
}

// Read reads and parses the registry name in b. Its errors name the file
// (storage.Where); one that is not there is storage.IsNotExist.
func Read(ctx context.Context, b storage.Backend, name string) (*Registry, error) {
	data, _, err := storage.ReadFile(ctx, b, name, MaxSize)
	if errors.Is(err, storage.ErrTooLarge) {
		return nil, fmt.Errorf("%s: %w: larger than %d bytes", storage.Where(b, name), ErrInvalid, MaxSize)
	}
	if err != nil {
		return nil, err
	}
	r, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", storage.Where(b, name), err)
	}
	return r, nil
}

// Marshal writes r as one line of JSON, strings as they are (no \u0026
// for &).
func (r *Registry) Marshal() ([]byte, error) {
	f := file{Version: 2, Flakes: r.Flakes}
	if f.Flakes == nil {
		f.Flakes = []json.RawMessage{}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(f); err != nil {
		// An entry that is no JSON value: not one Parse gave.
		return nil, fmt.Errorf("flake registry: %w", err)
	}
	return b.Bytes(), nil
}

// Key is an entry's "from", canonical (keys sorted, no spaces): two
// entries with the same key are for the same flake reference.
func Key(entry json.RawMessage) string {
	var e struct {
		From json.RawMessage `json:"from"`
	}
	json.Unmarshal(entry, &e)
	var v any
	json.Unmarshal(e.From, &v)
	b, _ := json.Marshal(v)
	return string(b)
}

// Valid reports whether an entry is one Nix can read: an object whose
// "from" and "to" are objects. Nix gives up on a whole registry at the
// first entry it cannot read.
func Valid(entry json.RawMessage) bool {
	var e struct {
		From map[string]json.RawMessage `json:"from"`
		To   map[string]json.RawMessage `json:"to"`
	}
	return json.Unmarshal(entry, &e) == nil && e.From != nil && e.To != nil
}

// Merge adds the entries of in, the newer registry: each replaces r's
// entry with the same "from", where it was, and the others are appended.
func (r *Registry) Merge(in *Registry) { r.add(in, true) }

// Extend adds the entries of in whose "from" no entry of r has: r's come
// first, as the first of several registries given to Nix does.
func (r *Registry) Extend(in *Registry) { r.add(in, false) }

func (r *Registry) add(in *Registry, replace bool) {
	at := make(map[string]int, len(r.Flakes))
	for i, f := range r.Flakes {
		if _, ok := at[Key(f)]; !ok {
			at[Key(f)] = i
		}
	}
	for _, f := range in.Flakes {
		k := Key(f)
		i, ok := at[k]
		switch {
		case !ok:
			at[k] = len(r.Flakes)
			r.Flakes = append(r.Flakes, f)
		case replace:
			r.Flakes[i] = f
		}
	}
}

// Prune drops the entries that lock a store path in dir (or a path
// below one) for whose hash part gone is true, and returns how many went.
// Entries it cannot read lock nothing it knows of, and stay.
func (r *Registry) Prune(dir storepath.Dir, gone func(hashPart string) bool) int {
	kept := r.Flakes[:0]
	for _, f := range r.Flakes {
		var e struct {
			To struct {
				Path string `json:"path"`
			} `json:"to"`
		}
		if json.Unmarshal(f, &e) == nil {
			if p, _, err := dir.ParseBelow(e.To.Path); err == nil && gone(p.Hash) {
				continue
			}
		}
		kept = append(kept, f)
	}
	dropped := len(r.Flakes) - len(kept)
	clear(r.Flakes[len(kept):])
	r.Flakes = kept
	return dropped
}

// Final is r as Nix 2.25 and later need it: an entry that pins its source
// by "narHash" (as pack writes them: a store path and its narHash) is
// substituted by that hash, not fetched, only if "to" has "__final":
// true; without it, Nix reads the path from the local file system and
// fails offline. Nix before 2.25 treats any input with a narHash as
// final, and rejects "__final" on a path input, so it gets r.
func (r *Registry) Final() *Registry {
	out := &Registry{Flakes: make([]json.RawMessage, 0, len(r.Flakes))}
	for _, f := range r.Flakes {
		out.Flakes = append(out.Flakes, final(f))
	}
	return out
}

// final is the entry f with "__final": true in its "to" if it pins a
// narHash, or f.
func final(f json.RawMessage) json.RawMessage {
	var whole map[string]json.RawMessage
	var to map[string]json.RawMessage
	if json.Unmarshal(f, &whole) != nil || json.Unmarshal(whole["to"], &to) != nil {
		return f
	}
	_, pinned := to["narHash"]
	_, done := to["__final"]
	if !pinned || done {
		return f
	}
	to["__final"] = json.RawMessage("true")
	whole["to"] = marshal(to)
	return marshal(whole)
}

// marshal is json.Marshal with strings as they are. Maps of
// json.RawMessage always encode.
func marshal(v map[string]json.RawMessage) json.RawMessage {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}
