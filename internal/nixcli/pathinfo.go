package nixcli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// PathInfo is what Nix knows about a valid store path.
type PathInfo struct {
	Path       storepath.Path
	NarHash    storepath.Hash
	NarSize    uint64
	References []storepath.Path // sorted
	// Deriver is the zero Path when unknown.
	Deriver storepath.Path
	// Signatures are "KEYNAME:BASE64", as in a narinfo's Sig lines.
	Signatures []string
	// CA is the content address as a narinfo writes it
	// ("fixed:r:sha256:NIX32", "text:sha256:NIX32"), or "".
	CA string
	// RegistrationTime is seconds since the epoch, or 0 when unknown.
	RegistrationTime int64
	Ultimate         bool
}

// pathInfoJSON is one path-info object in any of the shapes Nix prints:
// "path" appears only in 2.8–2.18's array; narHash and ca are strings or,
// in --json-format 2 and up, ca is {method, hash}; signatures are strings
// or, in format 3, {keyName, sig}.
type pathInfoJSON struct {
	Path             *string           `json:"path"`
	Valid            *bool             `json:"valid"`
	NarHash          string            `json:"narHash"`
	NarSize          uint64            `json:"narSize"`
	References       []string          `json:"references"`
	Deriver          *string           `json:"deriver"`
	Signatures       []json.RawMessage `json:"signatures"`
	CA               json.RawMessage   `json:"ca"`
	RegistrationTime *int64            `json:"registrationTime"`
	Ultimate         bool              `json:"ultimate"`
}

// ParsePathInfo parses the output of nix path-info --json from any Nix
// version: 2.8–2.18's array of objects with "path", 2.19+'s object keyed
// by absolute path, and --json-format 2/3's {"version", "storeDir",
// "info"} keyed by base name. Store paths are parsed in dir. Paths Nix
// reports as invalid are returned in invalid, not as infos.
func ParsePathInfo(dir storepath.Dir, r io.Reader) (infos []PathInfo, invalid []storepath.Path, err error) {
	var raw json.RawMessage
	if err := json.NewDecoder(r).Decode(&raw); err != nil {
		return nil, nil, fmt.Errorf("parse path-info JSON: %w: %w", ErrUnexpectedOutput, err)
	}
	type entry struct {
		key  string
		info *pathInfoJSON
	}
	var entries []entry
	raw = bytes.TrimSpace(raw)
	switch {
	case bytes.HasPrefix(raw, []byte("[")):
		var list []*pathInfoJSON
		if err := json.Unmarshal(raw, &list); err != nil {
			return nil, nil, fmt.Errorf("parse path-info JSON: %w: %w", ErrUnexpectedOutput, err)
		}
		for _, pi := range list {
			if pi == nil || pi.Path == nil {
				return nil, nil, fmt.Errorf("parse path-info JSON: entry without path: %w", ErrUnexpectedOutput)
			}
			entries = append(entries, entry{*pi.Path, pi})
		}
	default:
		var wrapped struct {
			Version  *int                     `json:"version"`
			StoreDir string                   `json:"storeDir"`
			Info     map[string]*pathInfoJSON `json:"info"`
		}
		if err := json.Unmarshal(raw, &wrapped); err == nil && wrapped.Version != nil && wrapped.Info != nil {
			if wrapped.StoreDir != "" && wrapped.StoreDir != string(dir) {
				return nil, nil, fmt.Errorf("parse path-info JSON: store dir %s, want %s: %w", wrapped.StoreDir, dir, ErrUnexpectedOutput)
			}
			for k, v := range wrapped.Info {
				entries = append(entries, entry{k, v})
			}
			break
		}
		var byPath map[string]*pathInfoJSON
		if err := json.Unmarshal(raw, &byPath); err != nil {
			return nil, nil, fmt.Errorf("parse path-info JSON: %w: %w", ErrUnexpectedOutput, err)
		}
		for k, v := range byPath {
			entries = append(entries, entry{k, v})
		}
	}
	for _, e := range entries {
		p, err := parsePath(dir, e.key)
		if err != nil {
			return nil, nil, fmt.Errorf("parse path-info JSON: %w", err)
		}
		if e.info == nil || e.info.Valid != nil && !*e.info.Valid {
			invalid = append(invalid, p)
			continue
		}
		info, err := e.info.normalise(dir, p)
		if err != nil {
			return nil, nil, fmt.Errorf("parse path-info JSON for %s: %w", p, err)
		}
		infos = append(infos, info)
	}
	slices.SortFunc(infos, func(a, b PathInfo) int { return storepath.Compare(a.Path, b.Path) })
	slices.SortFunc(invalid, storepath.Compare)
	return infos, invalid, nil
}

func (j *pathInfoJSON) normalise(dir storepath.Dir, p storepath.Path) (PathInfo, error) {
	info := PathInfo{Path: p, NarSize: j.NarSize, Ultimate: j.Ultimate}
	var err error
	if info.NarHash, err = storepath.ParseHash(j.NarHash); err != nil {
		return PathInfo{}, fmt.Errorf("narHash: %w", err)
	}
	if info.References, err = parsePaths(dir, j.References); err != nil {
		return PathInfo{}, fmt.Errorf("references: %w", err)
	}
	slices.SortFunc(info.References, storepath.Compare)
	if j.Deriver != nil && *j.Deriver != "" {
		if info.Deriver, err = parsePath(dir, *j.Deriver); err != nil {
			return PathInfo{}, fmt.Errorf("deriver: %w", err)
		}
	}
	if j.RegistrationTime != nil {
		info.RegistrationTime = *j.RegistrationTime
	}
	for _, raw := range j.Signatures {
		sig, err := parseSignature(raw)
		if err != nil {
			return PathInfo{}, err
		}
		info.Signatures = append(info.Signatures, sig)
	}
	if info.CA, err = parseCA(j.CA); err != nil {
		return PathInfo{}, err
	}
	return info, nil
}

// parseSignature accepts "NAME:BASE64" or {"keyName": NAME, "sig": BASE64}.
func parseSignature(raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var obj struct {
		KeyName string `json:"keyName"`
		Sig     string `json:"sig"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil || obj.KeyName == "" || obj.Sig == "" {
		return "", fmt.Errorf("signature %s: %w", raw, ErrUnexpectedOutput)
	}
	return obj.KeyName + ":" + obj.Sig, nil
}

// parseCA accepts null, a rendered content address, or {method, hash} and
// renders it as a narinfo's CA field.
func parseCA(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var obj struct {
		Method string `json:"method"`
		Hash   string `json:"hash"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return "", fmt.Errorf("ca %s: %w", raw, ErrUnexpectedOutput)
	}
	h, err := storepath.ParseHash(obj.Hash)
	if err != nil {
		return "", fmt.Errorf("ca hash: %w", err)
	}
	switch obj.Method {
	case "text":
		return "text:" + h.String(), nil
	case "flat":
		return "fixed:" + h.String(), nil
	case "nar":
		return "fixed:r:" + h.String(), nil
	case "git":
		return "fixed:git:" + h.String(), nil
	}
	return "", fmt.Errorf("ca method %q: %w", obj.Method, ErrUnexpectedOutput)
}

// parsePath parses an absolute store path in dir, or a base name as newer
// Nix prints them.
func parsePath(dir storepath.Dir, s string) (storepath.Path, error) {
	if strings.Contains(s, "/") {
		return dir.Parse(s)
	}
	return dir.Base(s)
}

func parsePaths(dir storepath.Dir, ss []string) ([]storepath.Path, error) {
	var ps []storepath.Path
	for _, s := range ss {
		p, err := parsePath(dir, s)
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// PathInfo queries Nix about store paths (nix path-info --json --sigs),
// .drv files as themselves rather than their outputs. A path that is not
// valid gives an error wrapping ErrInvalidPath.
func (r *Runner) PathInfo(ctx context.Context, paths ...storepath.Path) ([]PathInfo, error) {
	infos, invalid, err := r.pathInfo(ctx, false, paths)
	if err == nil && len(invalid) > 0 {
		err = fmt.Errorf("path-info %s: %w", invalid[0], ErrInvalidPath)
	}
	return infos, err
}

// ValidPathInfo is PathInfo for callers that expect some paths to be
// missing, such as a server asked for any store path: those that are not
// valid come back in invalid rather than failing the query.
func (r *Runner) ValidPathInfo(ctx context.Context, paths ...storepath.Path) (infos []PathInfo, invalid []storepath.Path, err error) {
	return r.pathInfo(ctx, false, paths)
}

// ClosurePathInfo describes the closures of paths (nix path-info
// --recursive): one query where a client will soon ask for every
// reference. A path that is not valid fails the query: Nix 2.19 and
// later refuse it (an *ExitError), older Nix reports it as invalid
// (ErrInvalidPath).
func (r *Runner) ClosurePathInfo(ctx context.Context, paths ...storepath.Path) ([]PathInfo, error) {
	infos, invalid, err := r.pathInfo(ctx, true, paths)
	if err == nil && len(invalid) > 0 {
		err = fmt.Errorf("path-info %s: %w", invalid[0], ErrInvalidPath)
	}
	return infos, err
}

func (r *Runner) pathInfo(ctx context.Context, recursive bool, paths []storepath.Path) ([]PathInfo, []storepath.Path, error) {
	if len(paths) == 0 {
		return nil, nil, nil
	}
	dir, err := r.StoreDir(ctx)
	if err != nil {
		return nil, nil, err
	}
	v, err := r.Version(ctx)
	if err != nil {
		return nil, nil, err
	}
	// Nix 2.8 reads a .drv installable as its outputs: --derivation makes
	// it the .drv itself, but would turn any other path into its deriver.
	var drvs, others []string
	for _, p := range paths {
		if p.IsDerivation() {
			drvs = append(drvs, p.String())
		} else {
			others = append(others, p.String())
		}
	}
	var all []PathInfo
	var allInvalid []storepath.Path
	for _, group := range []struct {
		flags []string
		paths []string
	}{{nil, others}, {[]string{"--derivation"}, drvs}} {
		if len(group.paths) == 0 {
			continue
		}
		args := nixArgs("path-info", "--json", "--sigs")
		if v.AtLeast(2, 33) {
			args = append(args, "--json-format", "1")
		}
		if recursive {
			args = append(args, "--recursive")
		}
		args = append(append(append(args, group.flags...), "--"), group.paths...)
		var infos []PathInfo
		var invalid []storepath.Path
		err := r.stream(ctx, r.nix(), args, func(rd io.Reader) error {
			var err error
			infos, invalid, err = ParsePathInfo(dir, rd)
			return err
		})
		if err != nil {
			return nil, nil, err
		}
		all = append(all, infos...)
		allInvalid = append(allInvalid, invalid...)
	}
	// A closure query of a .drv and of an output may describe a path twice.
	slices.SortFunc(all, func(a, b PathInfo) int { return storepath.Compare(a.Path, b.Path) })
	all = slices.CompactFunc(all, func(a, b PathInfo) bool { return a.Path == b.Path })
	slices.SortFunc(allInvalid, storepath.Compare)
	return all, allInvalid, nil
}
