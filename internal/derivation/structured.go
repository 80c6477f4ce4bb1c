package derivation

import (
	"encoding/json"
	"strings"
)

// structuredVar is the environment variable that holds a derivation's
// structured attrs. A derivation with __structuredAttrs = true (nixpkgs'
// fetchurl and fetchgit since late 2025, and ever more of stdenv) has
// every attribute, its name and URLs included, in one JSON object there;
// its environment holds only that and the output paths. Nix treats any
// derivation with this variable as structured, and so do we.
const structuredVar = "__json"

// IsStructured reports whether d has structured attrs.
func (d *Derivation) IsStructured() bool {
	_, ok := d.Env[structuredVar]
	return ok
}

// structuredAttrs decodes d's structured attrs into v, a struct naming
// the attributes wanted. It reports false for a derivation without them,
// and for JSON that does not decode, which Nix never writes.
func (d *Derivation) structuredAttrs(v any) bool {
	js, ok := d.Env[structuredVar]
	return ok && json.Unmarshal([]byte(js), v) == nil
}

// stringOrList is an attribute that is a string or a list of strings;
// other values read as nothing.
type stringOrList []string

func (s *stringOrList) UnmarshalJSON(b []byte) error {
	var str string
	if json.Unmarshal(b, &str) == nil {
		*s = strings.Fields(str)
		return nil
	}
	var list []any
	if json.Unmarshal(b, &list) == nil {
		for _, e := range list {
			if str, ok := e.(string); ok {
				*s = append(*s, str)
			}
		}
	}
	return nil
}
