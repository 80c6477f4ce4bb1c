package check

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/progress"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// WriteText writes r for people: the summary, each target's class, the
// blocked paths as a tree down to their root causes, and the root causes
// with their URLs, hashes and the targets that need them.
func (r *Result) WriteText(w io.Writer) error {
	bw := bufio.NewWriter(w)
	s := r.Summary
	inputs := 0
	for _, t := range r.Targets {
		if t.FlakeInput {
			inputs++
		}
	}
	fmt.Fprintf(bw, "checked %s", plural(len(r.Targets)-inputs, "target"))
	if inputs > 0 {
		fmt.Fprintf(bw, " and %s", plural(inputs, "flake input"))
	}
	fmt.Fprintf(bw, " against %s", plural(len(r.Sources), "source"))
	if len(r.Sources) > 0 {
		fmt.Fprintf(bw, ": %s", strings.Join(r.Sources, ", "))
	}
	fmt.Fprintln(bw)
	fmt.Fprintf(bw, "  available  %6d %s (%d substitutable from --against, %d local, %d via a hashed mirror), %s to download\n",
		s.Available, noun(s.Available, "path"), s.FromSources, s.Local, s.ViaMirror, progress.IEC(s.DownloadBytes))
	fmt.Fprintf(bw, "  to build   %6d %s\n", s.ToBuild, noun(s.ToBuild, "path"))
	fmt.Fprintf(bw, "  blocked    %6d %s, %s\n", s.Blocked, noun(s.Blocked, "path"), plural(len(r.RootCauses), "root cause"))
	if s.NotNeeded > 0 {
		fmt.Fprintf(bw, "  not needed %6d %s of the build closure (what is built with them is available)\n", s.NotNeeded, noun(s.NotNeeded, "output"))
	}
	fmt.Fprintln(bw)
	for _, t := range r.Targets {
		fmt.Fprintf(bw, "target %s: %s\n", t.Name, t.Class)
	}
	for _, p := range r.Paths {
		if p.Needed && p.Class == Available && strings.HasPrefix(p.Via, "mirror ") {
			fmt.Fprintf(bw, "via hashed mirror: %s (%s from %s; clients need hashed-mirrors set to it)\n",
				p.Path, p.FixedOutput.Hash, strings.TrimPrefix(p.Via, "mirror "))
		}
	}
	if s.Blocked > 0 {
		fmt.Fprintln(bw, "\nblocked, down to the root causes:")
		expanded := map[storepath.Path]bool{}
		for _, t := range r.Targets {
			for _, p := range t.Paths {
				if pr := r.Path(p); pr != nil && pr.Class == Blocked {
					r.writeTree(bw, pr, 0, expanded)
				}
			}
		}
		fmt.Fprintf(bw, "\nroot causes (%d):\n", len(r.RootCauses))
		for _, c := range r.RootCauses {
			fmt.Fprintf(bw, "  %s\n    %s\n", c.Path, c.Reason)
			if c.DrvPath != (storepath.Path{}) {
				fmt.Fprintf(bw, "    derivation %s\n", c.DrvPath)
			}
			if f := c.FixedOutput; f != nil {
				mode := "flat"
				if f.Recursive {
					mode = "recursive"
				}
				fmt.Fprintf(bw, "    hash %s (%s, builder %s)\n", f.Hash, mode, f.Builder)
				for _, u := range f.URLs {
					fmt.Fprintf(bw, "    url %s\n", u)
				}
			}
			fmt.Fprintf(bw, "    needed by %s\n", strings.Join(c.Targets, ", "))
		}
	}
	return bw.Flush()
}

// writeTree writes pr and what blocks it, each subtree once.
func (r *Result) writeTree(w io.Writer, pr *PathResult, depth int, expanded map[storepath.Path]bool) {
	indent := strings.Repeat("  ", depth+1)
	switch {
	case len(pr.BlockedBy) == 0:
		fmt.Fprintf(w, "%s%s  [root cause]\n", indent, pr.Path)
		return
	case expanded[pr.Path]:
		fmt.Fprintf(w, "%s%s  (see above)\n", indent, pr.Path)
		return
	}
	expanded[pr.Path] = true
	fmt.Fprintf(w, "%s%s\n", indent, pr.Path)
	for _, p := range pr.BlockedBy {
		if c := r.Path(p); c != nil {
			r.writeTree(w, c, depth+1, expanded)
		}
	}
}

func plural(n int, what string) string {
	return fmt.Sprintf("%d %s", n, noun(n, what))
}

// noun is what, in the plural unless n is 1.
func noun(n int, what string) string {
	if n == 1 {
		return what
	}
	return what + "s"
}

type jsonPath struct {
	Path        string       `json:"path"`
	Kind        Kind         `json:"kind"`
	Class       Class        `json:"class"`
	Needed      bool         `json:"needed"`
	Via         string       `json:"via,omitempty"`
	FileSize    uint64       `json:"fileSize,omitempty"`
	NarSize     uint64       `json:"narSize,omitempty"`
	DrvPath     string       `json:"drvPath,omitempty"`
	FixedOutput *FixedOutput `json:"fixedOutput,omitempty"`
	BlockedBy   []string     `json:"blockedBy,omitempty"`
	Reason      string       `json:"reason,omitempty"`
}

type jsonCause struct {
	Path        string       `json:"path"`
	DrvPath     string       `json:"drvPath,omitempty"`
	FixedOutput *FixedOutput `json:"fixedOutput,omitempty"`
	Reason      string       `json:"reason"`
	Targets     []string     `json:"targets"`
}

type jsonTarget struct {
	Name       string   `json:"name"`
	FlakeInput bool     `json:"flakeInput,omitempty"`
	Class      Class    `json:"class"`
	Paths      []string `json:"paths"`
}

func pathString(p storepath.Path) string {
	if p == (storepath.Path{}) {
		return ""
	}
	return p.String()
}

func pathStrings(ps []storepath.Path) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// MarshalJSON writes r as
//
//	{"storeDir", "sources": [...], "ok": bool, "summary": {...},
//	 "targets": [{"name", "flakeInput", "class", "paths"}],
//	 "rootCauses": [{"path", "drvPath", "fixedOutput": {"urls", "hash",
//	   "recursive", "builder"}, "reason", "targets"}],
//	 "paths": [{"path", "kind", "class", "needed", "via", "fileSize",
//	   "narSize", "drvPath", "fixedOutput", "blockedBy", "reason"}]}
//
// with every path of the build closure and its class.
func (r *Result) MarshalJSON() ([]byte, error) {
	v := struct {
		StoreDir   string       `json:"storeDir"`
		Sources    []string     `json:"sources"`
		OK         bool         `json:"ok"`
		Summary    Summary      `json:"summary"`
		Targets    []jsonTarget `json:"targets"`
		RootCauses []jsonCause  `json:"rootCauses"`
		Paths      []jsonPath   `json:"paths"`
	}{
		StoreDir: string(r.StoreDir), Sources: r.Sources, OK: r.Summary.Blocked == 0, Summary: r.Summary,
		Targets: []jsonTarget{}, RootCauses: []jsonCause{}, Paths: make([]jsonPath, 0, len(r.Paths)),
	}
	if v.Sources == nil {
		v.Sources = []string{}
	}
	for _, t := range r.Targets {
		v.Targets = append(v.Targets, jsonTarget{Name: t.Name, FlakeInput: t.FlakeInput, Class: t.Class, Paths: pathStrings(t.Paths)})
	}
	for _, c := range r.RootCauses {
		v.RootCauses = append(v.RootCauses, jsonCause{
			Path: c.Path.String(), DrvPath: pathString(c.DrvPath), FixedOutput: c.FixedOutput, Reason: c.Reason, Targets: c.Targets,
		})
	}
	for _, p := range r.Paths {
		jp := jsonPath{
			Path: p.Path.String(), Kind: p.Kind, Class: p.Class, Needed: p.Needed, Via: p.Via,
			FileSize: p.FileSize, NarSize: p.NarSize, DrvPath: pathString(p.DrvPath),
			FixedOutput: p.FixedOutput, Reason: p.Reason,
		}
		if len(p.BlockedBy) > 0 {
			jp.BlockedBy = pathStrings(p.BlockedBy)
		}
		v.Paths = append(v.Paths, jp)
	}
	return json.Marshal(v)
}
