package plan

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/nix-airgap/nix-airgap/internal/progress"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Count adds up paths and their sizes.
type Count struct {
	Paths int `json:"paths"`
	// NarSize and FileSize add up the paths' Item.NarSize and
	// Item.FileSize: paths still to be built count as zero.
	NarSize  uint64 `json:"narBytes"`
	FileSize uint64 `json:"fileBytes"`
	// ToBuild counts the paths still to be built, whose sizes are known
	// only afterwards.
	ToBuild int `json:"toBuild"`
}

func (c *Count) add(it *Item) {
	c.Paths++
	c.NarSize += it.NarSize
	c.FileSize += it.FileSize
	if it.Source.Kind == FromBuild {
		c.ToBuild++
	}
}

// RoleCounts splits paths by role, each path counted once under the first
// of its roles in this order: runtime, source, flake-input, build
// (build-only), derivation.
type RoleCounts struct {
	Runtime    Count `json:"runtime"`
	Source     Count `json:"source"`
	FlakeInput Count `json:"flakeInput"`
	BuildOnly  Count `json:"buildOnly"`
	Derivation Count `json:"derivation"`
	Total      Count `json:"total"`
}

func (rc *RoleCounts) add(it *Item, roles role.Set) {
	switch {
	case roles.Has(role.Runtime):
		rc.Runtime.add(it)
	case roles.Has(role.Source):
		rc.Source.add(it)
	case roles.Has(role.FlakeInput):
		rc.FlakeInput.add(it)
	case roles.Has(role.Build):
		rc.BuildOnly.add(it)
	case roles.Has(role.Derivation):
		rc.Derivation.add(it)
	}
	rc.Total.add(it)
}

// TargetSummary counts what one target (or one --paths-from file) needs.
type TargetSummary struct {
	Target string `json:"target"`
	RoleCounts
}

// SourceSummary counts the paths from one source: "store", an upstream's
// URL, or "build".
type SourceSummary struct {
	Source string `json:"source"`
	Count
}

// Summary is a plan in numbers.
type Summary struct {
	// Targets has one entry per target, or per --paths-from file;
	// a path two targets share counts for both.
	Targets []TargetSummary `json:"targets"`
	// Total counts every path once.
	Total RoleCounts `json:"total"`
	// Sources counts paths by where they come from: the store, each
	// upstream in order, then build.
	Sources []SourceSummary `json:"sources"`
	// NarSize is the known NAR bytes of all paths.
	NarSize uint64 `json:"narBytes"`
	// FileSize is the expected size of the bundle's compressed NAR files:
	// upstream compressed sizes (exact) plus local NAR sizes ×
	// estimatedZstdRatio (an estimate), not counting paths still to be
	// built, nor the small files (narinfos, manifest) pack's figure adds.
	FileSize uint64 `json:"fileBytes"`
	// ToBuild counts paths to realise; their sizes, and the runtime
	// closures of built targets, are known only after pack builds them.
	ToBuild int `json:"toBuild"`
}

// Summary counts p's paths per target, role and source.
func (p *Plan) Summary() Summary {
	var s Summary
	store := SourceSummary{Source: "store"}
	ups := make([]SourceSummary, len(p.Upstreams))
	for i, u := range p.Upstreams {
		ups[i].Source = u
	}
	build := SourceSummary{Source: "build"}
	for i := range p.Items {
		it := &p.Items[i]
		s.Total.add(it, it.Roles)
		switch it.Source.Kind {
		case FromStore:
			store.add(it)
		case FromUpstream:
			if it.Source.Upstream >= 0 && it.Source.Upstream < len(ups) {
				ups[it.Source.Upstream].add(it)
			}
		case FromBuild:
			build.add(it)
		}
	}
	s.Sources = append(append([]SourceSummary{store}, ups...), build)
	s.NarSize, s.FileSize, s.ToBuild = s.Total.Total.NarSize, s.Total.Total.FileSize, s.Total.Total.ToBuild
	for _, g := range p.groups {
		ts := TargetSummary{Target: g.name}
		for q, roles := range g.roles {
			if it := p.Item(q); it != nil {
				ts.add(it, roles)
			}
		}
		s.Targets = append(s.Targets, ts)
	}
	return s
}

// WriteTable writes s as tables for people: paths and NAR bytes per
// target and role ("+?" marks sizes still unknown because some paths must
// be built first), then per source.
func (s Summary) WriteTable(w io.Writer) error {
	cell := func(c Count) string {
		if c.Paths == 0 {
			return "-"
		}
		size := progress.IEC(c.NarSize)
		if c.ToBuild > 0 {
			size += "+?"
		}
		return fmt.Sprintf("%d (%s)", c.Paths, size)
	}
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "TARGET\tRUNTIME\tSOURCE\tFLAKE-INPUT\tBUILD-ONLY\tDERIVATION\tTOTAL\n")
	rows := append([]TargetSummary(nil), s.Targets...)
	if len(rows) != 1 {
		rows = append(rows, TargetSummary{Target: "all", RoleCounts: s.Total})
	}
	for _, t := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.Target, cell(t.Runtime), cell(t.Source), cell(t.FlakeInput), cell(t.BuildOnly), cell(t.Derivation), cell(t.Total))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "FROM\tPATHS\tNAR SIZE\tCOMPRESSED\n")
	for _, src := range s.Sources {
		if src.Source == "build" && src.Paths == 0 {
			continue // a row of its own only when something is built
		}
		size := progress.IEC(src.FileSize)
		switch src.Source {
		case "store":
			size = "~" + size
		case "build":
			size = "after build"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", src.Source, src.Paths, progress.IEC(src.NarSize), size)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// FileSize is of the NAR files alone: pack's bundle figure adds
	// the narinfos and manifest.
	_, err := fmt.Fprintf(w, "\nNAR size %s; compressed NAR files expected %s (upstream sizes exact, local NARs estimated at %.0f%% with zstd; the bundle's narinfos and manifest not counted)",
		progress.IEC(s.NarSize), progress.IEC(s.FileSize), estimatedZstdRatio*100)
	if err != nil {
		return err
	}
	if s.ToBuild > 0 {
		_, err = fmt.Fprintf(w, ",\nplus %s to build or fetch first: their sizes, and the runtime closures\nof built paths, are known only after pack realises them", progress.Plural(s.ToBuild, "path"))
		if err != nil {
			return err
		}
	}
	_, err = fmt.Fprintln(w, ".")
	return err
}

// The JSON form of a plan (MarshalJSON):
//
//	{
//	  "storeDir": "/nix/store", "mode": "build", "derivations": false,
//	  "upstreams": ["https://cache.nixos.org"],
//	  "targets": [{"spec": ".#hello", "group": ".#hello",
//	               "drvPath": "/nix/store/…-hello.drv", "outputs": {"out": "/nix/store/…-hello"},
//	               "path": ""}],
//	  "paths": [{"path": "/nix/store/…-hello", "roles": ["runtime"],
//	             "source": "store" | "upstream" | "build", "upstream": "URL (for upstream)",
//	             "narHash": "sha256:NIX32" (or ""), "narSize": 0, "fileSize": 0,
//	             "referencesKnown": true, "references": ["/nix/store/…"],
//	             "deriver": "…", "drvPath": "… (for build)"}],
//	  "flakeRegistry": [{"from": {"type": "indirect", "id": "nixpkgs"},
//	                     "to": {"type": "path", "path": "/nix/store/…-source", "narHash": "sha256-…"},
//	                     "locked": {…}}],
//	  "summary": Summary
//	}
//
// Paths are sorted; a path to be built has "referencesKnown": false and
// no references.
type planJSON struct {
	StoreDir      storepath.Dir  `json:"storeDir"`
	Mode          string         `json:"mode"`
	Derivations   bool           `json:"derivations"`
	Upstreams     []string       `json:"upstreams"`
	Targets       []targetJSON   `json:"targets"`
	Paths         []itemJSON     `json:"paths"`
	FlakeRegistry []registryJSON `json:"flakeRegistry"`
	Summary       Summary        `json:"summary"`
	Since         *Since         `json:"since,omitempty"`
}

type targetJSON struct {
	Spec    string            `json:"spec"`
	Group   string            `json:"group"`
	DrvPath string            `json:"drvPath,omitempty"`
	Outputs map[string]string `json:"outputs,omitempty"`
	Path    string            `json:"path,omitempty"`
}

type itemJSON struct {
	Path            string   `json:"path"`
	Roles           []string `json:"roles"`
	Source          string   `json:"source"`
	Upstream        string   `json:"upstream,omitempty"`
	NarHash         string   `json:"narHash"`
	NarSize         uint64   `json:"narSize"`
	FileSize        uint64   `json:"fileSize"`
	ReferencesKnown bool     `json:"referencesKnown"`
	References      []string `json:"references"`
	Deriver         string   `json:"deriver,omitempty"`
	DrvPath         string   `json:"drvPath,omitempty"`
}

type registryJSON struct {
	From   map[string]any `json:"from"`
	To     map[string]any `json:"to"`
	Locked map[string]any `json:"locked"`
}

func pathString(p storepath.Path) string {
	if p == (storepath.Path{}) {
		return ""
	}
	return p.String()
}

// MarshalJSON writes the plan in the documented shape above.
func (p *Plan) MarshalJSON() ([]byte, error) {
	j := planJSON{
		StoreDir: p.StoreDir, Mode: p.Mode.String(), Derivations: p.Derivations,
		Upstreams: append([]string{}, p.Upstreams...), Targets: []targetJSON{}, Paths: make([]itemJSON, 0, len(p.Items)),
		FlakeRegistry: []registryJSON{}, Summary: p.Summary(), Since: p.Since,
	}
	for _, t := range p.Targets {
		tj := targetJSON{Spec: t.Spec.Text, Group: t.Spec.Group, DrvPath: pathString(t.DrvPath), Path: pathString(t.Path)}
		if len(t.Outputs) > 0 {
			tj.Outputs = map[string]string{}
			for name, o := range t.Outputs {
				tj.Outputs[name] = o.String()
			}
		}
		j.Targets = append(j.Targets, tj)
	}
	for i := range p.Items {
		it := &p.Items[i]
		ij := itemJSON{
			Path: it.Path.String(), Roles: it.Roles.Names(), Source: it.Source.Kind.String(), Upstream: it.Source.URL,
			NarSize: it.NarSize, FileSize: it.FileSize, ReferencesKnown: it.ReferencesKnown(), References: []string{},
			Deriver: pathString(it.Deriver), DrvPath: pathString(it.DrvPath),
		}
		if !it.NarHash.IsZero() {
			ij.NarHash = it.NarHash.String()
		}
		for _, r := range it.References {
			ij.References = append(ij.References, r.String())
		}
		j.Paths = append(j.Paths, ij)
	}
	for _, e := range p.FlakeRegistry {
		j.FlakeRegistry = append(j.FlakeRegistry, registryJSON{From: e.From.Attrs, To: e.To.Attrs, Locked: e.Locked.Attrs})
	}
	return json.Marshal(j)
}
