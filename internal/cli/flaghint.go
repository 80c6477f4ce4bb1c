package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// otherToolsFlag is the flag of cmd that Nix or another server calls
// name, which a user may type for ours: the unknown flag's hint names ours.
func otherToolsFlag(cmd, name string) (string, bool) {
	meant, ok := map[string]map[string]string{
		"verify":        {"key": "public-key"},
		"import":        {"store": "cache", "to": "cache", "key": "public-key"},
		"gc":            {"store": "cache"},
		"inventory":     {"store": "cache"},
		"client-config": {"substituters": "url", "substituter": "url"},
		"serve":         {"port": "listen", "bind": "listen", "addr": "listen", "address": "listen"},
	}[cmd][name]
	return meant, ok
}

// nixSettingsHint is what to do instead of Nix's --option NAME VALUE:
// the nix that plan, pack and check run reads NIX_CONFIG, as every nix
// does, and so do they for substituters and keys.
const nixSettingsHint = "nix-airgap passes no Nix settings on: give them in NIX_CONFIG='NAME = VALUE', " +
	"which the nix it runs reads, or as --substituters, --trusted-public-keys and their --extra- forms"

// otherToolsHint is what to do instead of Nix's flag name to cmd, which
// nix-airgap has no flag for: the unknown flag's hint says it.
func otherToolsHint(cmd, name string) (string, bool) {
	hint, ok := map[string]map[string]string{
		"plan":  {"option": nixSettingsHint},
		"pack":  {"option": nixSettingsHint, "dry-run": "nix-airgap plan says what pack would copy, and from where"},
		"check": {"option": nixSettingsHint},
	}[cmd][name]
	return hint, ok
}

// flagError is the error for a flag pflag refused: an unknown flag also
// names the flag of cmd meant, when one is near enough in spelling or is
// what Nix calls by that name.
func flagError(cmd *cobra.Command, err error) error {
	name, ok := strings.CutPrefix(err.Error(), "unknown flag: --")
	if !ok {
		return usageError{err}
	}
	if meant, ok := otherToolsFlag(cmd.Name(), name); ok {
		return usageError{fmt.Errorf("%w (nix-airgap %s calls it --%s)", err, cmd.Name(), meant)}
	}
	if hint, ok := otherToolsHint(cmd.Name(), name); ok {
		return usageError{fmt.Errorf("%w (%s)", err, hint)}
	}
	// A flag the name begins (--keep for --keep-bundles), else one a
	// typo or two away: one in a short name.
	var prefixed []string
	best, bestDist := "", 3
	if len(name) <= 4 {
		bestDist = 2
	}
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Hidden || f.Name == "help" {
			return
		}
		if strings.HasPrefix(f.Name, name) {
			prefixed = append(prefixed, f.Name)
		}
		if d := editDistance(name, f.Name); d < bestDist {
			best, bestDist = f.Name, d
		}
	})
	if len(prefixed) == 1 {
		best = prefixed[0]
	}
	if best != "" {
		return usageError{fmt.Errorf("%w (did you mean --%s?)", err, best)}
	}
	return usageError{err}
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
