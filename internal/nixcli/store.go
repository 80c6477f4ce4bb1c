package nixcli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// StoreDir returns r.KnownStoreDir if set, or else the store dir Nix uses
// (builtins.storeDir via nix-instantiate, which needs no experimental
// features), asked once per Runner.
func (r *Runner) StoreDir(ctx context.Context) (storepath.Dir, error) {
	if r.KnownStoreDir != "" {
		return r.KnownStoreDir, nil
	}
	r.storeDirMu.Lock()
	defer r.storeDirMu.Unlock()
	if r.storeDir != "" {
		return r.storeDir, nil
	}
	out, err := r.output(ctx, r.nixInstantiate(), "--eval", "--json", "--expr", "builtins.storeDir")
	if err != nil {
		return "", err
	}
	var s string
	if err := json.Unmarshal(out, &s); err != nil {
		return "", fmt.Errorf("parse builtins.storeDir %q: %w: %w", out, ErrUnexpectedOutput, err)
	}
	dir, err := storepath.ParseDir(s)
	if err != nil {
		return "", err
	}
	r.storeDir = dir
	return dir, nil
}

// Config is Nix's effective configuration.
type Config struct {
	Substituters      []string
	TrustedPublicKeys []string
	RequireSigs       bool
	// Settings holds every setting's value as JSON, by name.
	Settings map[string]json.RawMessage
}

// ParseConfig parses nix show-config --json or nix config show --json:
// {"NAME": {"value": VALUE, ...}, ...}.
func ParseConfig(r io.Reader) (Config, error) {
	var raw map[string]struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.NewDecoder(r).Decode(&raw); err != nil {
		return Config{}, fmt.Errorf("parse nix config JSON: %w: %w", ErrUnexpectedOutput, err)
	}
	c := Config{Settings: make(map[string]json.RawMessage, len(raw))}
	for name, s := range raw {
		c.Settings[name] = s.Value
	}
	for _, f := range []struct {
		name string
		into any
	}{
		{"substituters", &c.Substituters},
		{"trusted-public-keys", &c.TrustedPublicKeys},
		{"require-sigs", &c.RequireSigs},
	} {
		v, ok := c.Settings[f.name]
		if !ok {
			return Config{}, fmt.Errorf("parse nix config JSON: no %s: %w", f.name, ErrUnexpectedOutput)
		}
		if err := json.Unmarshal(v, f.into); err != nil {
			return Config{}, fmt.Errorf("parse nix config JSON: %s: %w: %w", f.name, ErrUnexpectedOutput, err)
		}
	}
	return c, nil
}

// Config returns Nix's effective configuration (nix show-config --json,
// or nix config show --json on Nix 2.20 and later), asked once per
// Runner. Callers must not modify it.
func (r *Runner) Config(ctx context.Context) (Config, error) {
	r.configMu.Lock()
	defer r.configMu.Unlock()
	if r.config != nil {
		return *r.config, nil
	}
	v, err := r.Version(ctx)
	if err != nil {
		return Config{}, err
	}
	args := nixArgs("show-config", "--json")
	if v.AtLeast(2, 20) {
		args = nixArgs("config", "show", "--json")
	}
	var c Config
	err = r.stream(ctx, r.nix(), args, func(rd io.Reader) error {
		var err error
		c, err = ParseConfig(rd)
		return err
	})
	if err != nil {
		return Config{}, err
	}
	r.config = &c
	return c, nil
}

// ExperimentalFeatures returns the experimental features the user's Nix
// configuration turns on. Config cannot say, as it turns flakes on for
// its own call; and it reads nix show-config's text, as Nix 2.8's JSON
// gives the features as numbers.
func (r *Runner) ExperimentalFeatures(ctx context.Context) ([]string, error) {
	v, err := r.Version(ctx)
	if err != nil {
		return nil, err
	}
	args := []string{"--extra-experimental-features", "nix-command", "show-config"}
	if v.AtLeast(2, 20) {
		args = []string{"--extra-experimental-features", "nix-command", "config", "show"}
	}
	out, err := r.output(ctx, r.nix(), args...)
	if err != nil {
		return nil, err
	}
	for line := range strings.Lines(string(out)) {
		if list, ok := strings.CutPrefix(line, "experimental-features = "); ok {
			return strings.Fields(list), nil
		}
	}
	return nil, fmt.Errorf("parse nix config: no experimental-features: %w", ErrUnexpectedOutput)
}

// EvalJSON evaluates with nix eval --json and decodes the result into v.
// args are nix eval's: an installable, or --expr EXPR, --file FILE ATTR,
// and options.
func (r *Runner) EvalJSON(ctx context.Context, v any, args ...string) error {
	return r.stream(ctx, r.nix(), nixArgs(append([]string{"eval", "--json"}, args...)...), func(rd io.Reader) error {
		if err := json.NewDecoder(rd).Decode(v); err != nil {
			return fmt.Errorf("decode nix eval JSON: %w: %w", ErrUnexpectedOutput, err)
		}
		return nil
	})
}

// EvalRaw evaluates to a string with nix eval --raw.
func (r *Runner) EvalRaw(ctx context.Context, args ...string) (string, error) {
	out, err := r.output(ctx, r.nix(), nixArgs(append([]string{"eval", "--raw"}, args...)...)...)
	return string(out), err
}

// Instantiate evaluates attrs of a Nix file (nix-instantiate FILE -A
// ATTR...; no attrs means the whole file) and returns the .drv paths, in
// Nix's order. args go to nix-instantiate, such as --arg and --argstr,
// or --expr, which makes file an expression.
func (r *Runner) Instantiate(ctx context.Context, file string, attrs []string, args ...string) ([]storepath.Path, error) {
	cmd := []string{file}
	for _, a := range attrs {
		cmd = append(cmd, "-A", a)
	}
	cmd = append(append(cmd, args...), r.EvalArgs...)
	// nix-instantiate prints DRV!OUTPUT for attributes naming an output
	// other than out.
	return r.paths(ctx, r.nixInstantiate(), cmd, func(s string) string {
		s, _, _ = strings.Cut(s, "!")
		return s
	})
}

// FindFile resolves a Nix search path lookup, <name>, as the local Nix
// does (nix-instantiate --find-file): with NIX_PATH, nix.conf's nix-path
// and -I options in args and EvalArgs, downloading and unpacking a
// tarball entry first. It returns the path it found.
func (r *Runner) FindFile(ctx context.Context, name string, args ...string) (string, error) {
	out, err := r.output(ctx, r.nixInstantiate(), append(append([]string{"--find-file", name}, args...), r.EvalArgs...)...)
	if err != nil {
		return "", err
	}
	p := strings.TrimSpace(string(out))
	if p == "" || strings.Contains(p, "\n") {
		return "", fmt.Errorf("nix-instantiate --find-file %s: %w: %q", name, ErrUnexpectedOutput, out)
	}
	return p, nil
}

// DerivationPaths returns the .drv paths of installables such as flake
// references (nix path-info --derivation).
func (r *Runner) DerivationPaths(ctx context.Context, installables ...string) ([]storepath.Path, error) {
	args := append(append([]string{"path-info", "--derivation"}, r.EvalArgs...), "--")
	return r.paths(ctx, r.nix(), nixArgs(append(args, installables...)...), nil)
}

// Requisites returns the closure of paths (nix-store -qR), reading Nix's
// output as it comes.
func (r *Runner) Requisites(ctx context.Context, paths ...storepath.Path) ([]storepath.Path, error) {
	return r.storeQuery(ctx, "--requisites", paths)
}

// References returns the direct references of paths (nix-store -q
// --references).
func (r *Runner) References(ctx context.Context, paths ...storepath.Path) ([]storepath.Path, error) {
	return r.storeQuery(ctx, "--references", paths)
}

// Outputs returns the output paths of derivations (nix-store -q
// --outputs).
func (r *Runner) Outputs(ctx context.Context, drvs ...storepath.Path) ([]storepath.Path, error) {
	return r.storeQuery(ctx, "--outputs", drvs)
}

func (r *Runner) storeQuery(ctx context.Context, query string, paths []storepath.Path) ([]storepath.Path, error) {
	if len(paths) == 0 {
		return nil, nil
	}
	return r.paths(ctx, r.nixStore(), append([]string{"--query", query, "--"}, pathStrings(paths)...), nil)
}

// InvalidPaths returns those of paths that are not valid in the store
// (nix-store --check-validity --print-invalid).
func (r *Runner) InvalidPaths(ctx context.Context, paths ...storepath.Path) ([]storepath.Path, error) {
	if len(paths) == 0 {
		return nil, nil
	}
	return r.paths(ctx, r.nixStore(), append([]string{"--check-validity", "--print-invalid", "--"}, pathStrings(paths)...), nil)
}

// IsValid reports whether p is valid in the store.
func (r *Runner) IsValid(ctx context.Context, p storepath.Path) (bool, error) {
	invalid, err := r.InvalidPaths(ctx, p)
	return len(invalid) == 0, err
}

// paths runs prog and parses each stdout line, after fix if not nil, as a
// store path.
func (r *Runner) paths(ctx context.Context, prog string, args []string, fix func(string) string) ([]storepath.Path, error) {
	dir, err := r.StoreDir(ctx)
	if err != nil {
		return nil, err
	}
	var out []storepath.Path
	err = r.lines(ctx, prog, args, func(line string) error {
		if fix != nil {
			line = fix(line)
		}
		p, err := dir.Parse(line)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrUnexpectedOutput, err)
		}
		out = append(out, p)
		return nil
	})
	return out, err
}

func pathStrings(paths []storepath.Path) []string {
	ss := make([]string, len(paths))
	for i, p := range paths {
		ss[i] = p.String()
	}
	return ss
}
