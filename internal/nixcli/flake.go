package nixcli

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/url"
	"slices"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// FlakeMetadata is nix flake metadata --json.
type FlakeMetadata struct {
	// URL is the locked flake reference.
	URL         string
	OriginalURL string
	ResolvedURL string
	Description string
	// Path is the flake's source in the store.
	Path         storepath.Path
	Locked       FlakeRef
	LastModified int64
	Locks        FlakeLock
}

// FlakeLock is a flake.lock: a graph of nodes from Root.
type FlakeLock struct {
	Version int
	Root    string
	Nodes   map[string]FlakeNode
}

// FlakeNode is one node of a lock graph. The root node has no Locked.
type FlakeNode struct {
	Inputs   map[string]FlakeInput
	Locked   FlakeRef
	Original FlakeRef
	// IsFlake is false for inputs with flake = false.
	IsFlake bool
}

// FlakeInput names the node an input is locked to: Node, or for a
// "follows" input the input path from the root in Follows.
type FlakeInput struct {
	Node    string
	Follows []string
}

// FlakeRef is a flake reference in attribute form ({"type": "github",
// ...}). Attrs holds all attributes with numbers as json.Number.
type FlakeRef struct {
	Attrs map[string]any
}

// IsZero reports whether f has no attributes.
func (f FlakeRef) IsZero() bool { return len(f.Attrs) == 0 }

// Type is the "type" attribute: "path", "git", "github", "tarball", …
func (f FlakeRef) Type() string { s, _ := f.Attrs["type"].(string); return s }

// URL spells f as a flake reference URL, for people: TYPE:OWNER/REPO/REV
// for the forges, path:PATH, flake:ID, and for the others (git,
// mercurial, tarball, file) their URL, prefixed with the type where Nix
// would not infer it, with rev, ref and dir as query parameters.
func (f FlakeRef) URL() string {
	str := func(k string) string { s, _ := f.Attrs[k].(string); return s }
	q := url.Values{}
	for _, k := range []string{"dir", "ref", "rev"} {
		if v := str(k); v != "" {
			q.Set(k, v)
		}
	}
	var s string
	switch t := f.Type(); t {
	case "github", "gitlab", "sourcehut":
		s = t + ":" + str("owner") + "/" + str("repo")
		if r := cmp.Or(str("rev"), str("ref")); r != "" {
			s += "/" + r
		}
		q.Del("rev")
		q.Del("ref")
	case "path":
		s = "path:" + str("path")
	case "indirect":
		s = "flake:" + str("id")
	case "git", "mercurial", "tarball", "file":
		prefix := map[string]string{"git": "git+", "mercurial": "hg+", "tarball": "tarball+", "file": "file+"}[t]
		s = str("url")
		if !strings.HasPrefix(s, prefix) {
			s = prefix + s
		}
	default:
		return fmt.Sprint(f.Attrs)
	}
	if len(q) > 0 {
		s += "?" + q.Encode()
	}
	return s
}

// NarHash is the locked NAR hash of the input's source.
func (f FlakeRef) NarHash() (storepath.Hash, error) {
	s, ok := f.Attrs["narHash"].(string)
	if !ok {
		return storepath.Hash{}, fmt.Errorf("flake ref %v: no narHash: %w", f.Attrs, ErrUnexpectedOutput)
	}
	return storepath.ParseHash(s)
}

// SourcePath is the store path Nix gives a locked input's source: a
// recursive sha256 "source" path of its narHash. Nix substitutes this
// path before fetching the input, which is what makes flakes work
// offline.
func (f FlakeRef) SourcePath(dir storepath.Dir) (storepath.Path, error) {
	h, err := f.NarHash()
	if err != nil {
		return storepath.Path{}, err
	}
	return dir.MakeFixedOutput(storepath.Recursive, h, "source")
}

func (f *FlakeRef) UnmarshalJSON(b []byte) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	return d.Decode(&f.Attrs)
}

func (in *FlakeInput) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &in.Node); err == nil {
		return nil
	}
	if err := json.Unmarshal(b, &in.Follows); err != nil {
		return fmt.Errorf("flake input %s: %w", b, ErrUnexpectedOutput)
	}
	return nil
}

func (n *FlakeNode) UnmarshalJSON(b []byte) error {
	var j struct {
		Inputs   map[string]FlakeInput `json:"inputs"`
		Locked   FlakeRef              `json:"locked"`
		Original FlakeRef              `json:"original"`
		Flake    *bool                 `json:"flake"`
	}
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*n = FlakeNode{Inputs: j.Inputs, Locked: j.Locked, Original: j.Original, IsFlake: j.Flake == nil || *j.Flake}
	return nil
}

// ParseFlakeMetadata parses nix flake metadata --json, parsing store
// paths in dir.
func ParseFlakeMetadata(dir storepath.Dir, r io.Reader) (FlakeMetadata, error) {
	var j struct {
		URL          string   `json:"url"`
		OriginalURL  string   `json:"originalUrl"`
		ResolvedURL  string   `json:"resolvedUrl"`
		Description  string   `json:"description"`
		Path         string   `json:"path"`
		Locked       FlakeRef `json:"locked"`
		LastModified int64    `json:"lastModified"`
		Locks        struct {
			Version int                  `json:"version"`
			Root    string               `json:"root"`
			Nodes   map[string]FlakeNode `json:"nodes"`
		} `json:"locks"`
	}
	if err := json.NewDecoder(r).Decode(&j); err != nil {
		return FlakeMetadata{}, fmt.Errorf("parse flake metadata JSON: %w: %w", ErrUnexpectedOutput, err)
	}
	p, err := parsePath(dir, j.Path)
	if err != nil {
		return FlakeMetadata{}, fmt.Errorf("parse flake metadata JSON: path: %w", err)
	}
	if _, ok := j.Locks.Nodes[j.Locks.Root]; !ok {
		return FlakeMetadata{}, fmt.Errorf("parse flake metadata JSON: root node %q missing: %w", j.Locks.Root, ErrUnexpectedOutput)
	}
	return FlakeMetadata{
		URL: j.URL, OriginalURL: j.OriginalURL, ResolvedURL: j.ResolvedURL,
		Description: j.Description, Path: p, Locked: j.Locked, LastModified: j.LastModified,
		Locks: FlakeLock{Version: j.Locks.Version, Root: j.Locks.Root, Nodes: j.Locks.Nodes},
	}, nil
}

// FlakeMetadata locks a flake and describes it (nix flake metadata
// --json REF). args are extra options such as --no-write-lock-file.
func (r *Runner) FlakeMetadata(ctx context.Context, ref string, args ...string) (FlakeMetadata, error) {
	dir, err := r.StoreDir(ctx)
	if err != nil {
		return FlakeMetadata{}, err
	}
	var m FlakeMetadata
	err = r.stream(ctx, r.nix(), nixArgs(append(append([]string{"flake", "metadata", "--json"}, args...), "--", ref)...), func(rd io.Reader) error {
		var err error
		m, err = ParseFlakeMetadata(dir, rd)
		return err
	})
	return m, err
}

// ArchivedFlake is a flake's source in the store and, recursively, its
// inputs', as nix flake archive --json prints them.
type ArchivedFlake struct {
	Path   storepath.Path
	Inputs map[string]ArchivedFlake
}

// Paths returns every store path in a, depth first, without duplicates.
func (a ArchivedFlake) Paths() []storepath.Path {
	seen := map[storepath.Path]bool{}
	var out []storepath.Path
	var walk func(ArchivedFlake)
	walk = func(a ArchivedFlake) {
		if !seen[a.Path] {
			seen[a.Path] = true
			out = append(out, a.Path)
		}
		for _, name := range slices.Sorted(maps.Keys(a.Inputs)) {
			walk(a.Inputs[name])
		}
	}
	walk(a)
	return out
}

type archivedFlakeJSON struct {
	Path   string                       `json:"path"`
	Inputs map[string]archivedFlakeJSON `json:"inputs"`
}

// maxFlakeDepth bounds input nesting, so hostile JSON cannot exhaust the
// stack.
const maxFlakeDepth = 256

func (j archivedFlakeJSON) normalise(dir storepath.Dir, depth int) (ArchivedFlake, error) {
	if depth > maxFlakeDepth {
		return ArchivedFlake{}, fmt.Errorf("inputs nested deeper than %d: %w", maxFlakeDepth, ErrUnexpectedOutput)
	}
	p, err := parsePath(dir, j.Path)
	if err != nil {
		return ArchivedFlake{}, err
	}
	a := ArchivedFlake{Path: p, Inputs: make(map[string]ArchivedFlake, len(j.Inputs))}
	for name, in := range j.Inputs {
		if a.Inputs[name], err = in.normalise(dir, depth+1); err != nil {
			return ArchivedFlake{}, fmt.Errorf("input %s: %w", name, err)
		}
	}
	return a, nil
}

// ParseFlakeArchive parses nix flake archive --json, parsing store paths
// in dir.
func ParseFlakeArchive(dir storepath.Dir, r io.Reader) (ArchivedFlake, error) {
	var j archivedFlakeJSON
	if err := json.NewDecoder(r).Decode(&j); err != nil {
		return ArchivedFlake{}, fmt.Errorf("parse flake archive JSON: %w: %w", ErrUnexpectedOutput, err)
	}
	a, err := j.normalise(dir, 0)
	if err != nil {
		return ArchivedFlake{}, fmt.Errorf("parse flake archive JSON: %w", err)
	}
	return a, nil
}

// FlakeArchive copies a flake's source and all its inputs' into the
// store (nix flake archive --json REF) and returns their paths. args are
// extra options such as --dry-run.
func (r *Runner) FlakeArchive(ctx context.Context, ref string, args ...string) (ArchivedFlake, error) {
	dir, err := r.StoreDir(ctx)
	if err != nil {
		return ArchivedFlake{}, err
	}
	var a ArchivedFlake
	err = r.stream(ctx, r.nix(), nixArgs(append(append([]string{"flake", "archive", "--json"}, args...), "--", ref)...), func(rd io.Reader) error {
		var err error
		a, err = ParseFlakeArchive(dir, rd)
		return err
	})
	return a, err
}
