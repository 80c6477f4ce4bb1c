package pack

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/progress"
	"github.com/nix-airgap/nix-airgap/internal/role"
)

// Summary is a Result in numbers, for people (WriteText) and scripts (its
// JSON form).
type Summary struct {
	Event string `json:"event"` // "done"
	ID    string `json:"id,omitempty"`
	Paths int    `json:"paths"`
	// Roles counts paths under each role they have (a path may count
	// under several), by the manifest's role names.
	Roles map[string]int `json:"roles"`
	// Sources counts paths by where they came from: "store", "build",
	// an upstream's URL; Reused counts those an earlier pack left at the
	// output already had: a bundle in the directory, or the start of the
	// tar a killed pack wrote.
	Sources map[string]int `json:"sources"`
	Reused  int            `json:"reused"`
	// InBases counts the paths left out because a site that imported
	// the bases holds them; InBasesNotCarried those of them no base
	// carries itself (held through its closure or its own bases).
	InBases           int    `json:"inBases"`
	InBasesNotCarried int    `json:"inBasesNotCarried"`
	Built             int    `json:"built"`
	NarBytes          uint64 `json:"narBytes"`
	BundleBytes       uint64 `json:"bundleBytes"`
	// Deltas are the paths that travel as binary deltas, and what that
	// saved on their compressed NARs.
	Deltas  DeltaStats `json:"deltas"`
	Seconds float64    `json:"seconds"`
	Signed  bool       `json:"signed"`
	// Volumes are the volume files of a volume set, in order.
	Volumes []string `json:"volumes,omitempty"`
	// Channels are the channels the bundle carries; ChannelsInBases
	// those left out, unchanged since the bases.
	Channels        []string `json:"channels,omitempty"`
	ChannelsInBases []string `json:"channelsInBases,omitempty"`
}

// Summary counts r.
func (r *Result) Summary() Summary {
	s := Summary{
		Event: "done", Paths: len(r.Paths), Roles: map[string]int{}, Sources: map[string]int{},
		InBases: r.InBases, InBasesNotCarried: r.InBasesNotCarried, Built: len(r.Built), NarBytes: r.NarBytes, BundleBytes: r.BundleBytes,
		Seconds: r.Elapsed.Seconds(), Signed: r.Signed, Deltas: r.Deltas, Volumes: r.Volumes, ChannelsInBases: r.ChannelsInBases,
	}
	if !r.ID.IsZero() {
		s.ID = r.ID.String()
	}
	if r.Manifest != nil {
		for _, c := range r.Manifest.Channels {
			s.Channels = append(s.Channels, c.Name)
		}
	}
	for _, p := range r.Paths {
		for _, name := range p.Roles.Names() {
			s.Roles[name]++
		}
		s.Sources[p.Source]++
		if p.Reused {
			s.Reused++
		}
	}
	return s
}

// WriteText writes s for people.
func (s Summary) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "packed %s", progress.Plural(s.Paths, "path"))
	if s.ID != "" {
		fmt.Fprintf(&b, ", bundle id %s", s.ID)
	}
	if !s.Signed {
		b.WriteString(", UNSIGNED")
	}
	b.WriteString("\n  roles:  ")
	var parts []string
	for _, name := range role.All.Names() {
		if n := s.Roles[name]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", name, n))
		}
	}
	b.WriteString(orNone(parts))
	b.WriteString("\n  from:   ")
	parts = parts[:0]
	for _, src := range []string{SourceStore, SourceBuild} {
		if n := s.Sources[src]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", src, n))
		}
	}
	for _, src := range slices.Sorted(maps.Keys(s.Sources)) {
		if src != SourceStore && src != SourceBuild {
			parts = append(parts, fmt.Sprintf("%s %d", src, s.Sources[src]))
		}
	}
	b.WriteString(orNone(parts))
	if s.Reused > 0 {
		fmt.Fprintf(&b, " (%d reused from an earlier pack's output)", s.Reused)
	}
	if s.InBases > 0 {
		fmt.Fprintf(&b, "\n  left out: %s a site that imported the bases holds", progress.Plural(s.InBases, "path"))
		if s.InBasesNotCarried > 0 {
			fmt.Fprintf(&b, " (%d not carried by the bases themselves: what theirs refer to, or their own bases provided)", s.InBasesNotCarried)
		}
	}
	if d := s.Deltas; d.Tried > 0 || d.NoBase > 0 {
		fmt.Fprintf(&b, "\n  binary deltas: %s, %s saved", progress.Plural(d.Paths, "path"), progress.IEC(d.Saved))
		if n := d.Tried - d.Paths; n > 0 {
			fmt.Fprintf(&b, "; %d whole, their delta no smaller", n)
		}
		if d.NoBase > 0 {
			fmt.Fprintf(&b, "; %d whole, the base's NAR not at hand", d.NoBase)
		}
	}
	if len(s.Channels) > 0 {
		fmt.Fprintf(&b, "\n  channels: %s", strings.Join(s.Channels, ", "))
	}
	if len(s.ChannelsInBases) > 0 {
		fmt.Fprintf(&b, "\n  left out, unchanged since the bases: channel %s", strings.Join(s.ChannelsInBases, ", "))
	}
	if s.Built > 0 {
		fmt.Fprintf(&b, "\n  realised with Nix: %s", progress.Plural(s.Built, "path"))
	}
	switch n := len(s.Volumes); {
	case n == 1:
		fmt.Fprintf(&b, "\n  volumes: 1 volume, %s", s.Volumes[0])
	case n > 1:
		fmt.Fprintf(&b, "\n  volumes: %d volumes, %s to %s", n, s.Volumes[0], s.Volumes[n-1])
	}
	ratio := 0.0
	if s.NarBytes > 0 {
		ratio = 100 * float64(s.BundleBytes) / float64(s.NarBytes)
	}
	rate := 0.0
	if s.Seconds > 0 {
		rate = float64(s.NarBytes) / s.Seconds
	}
	// The bundle is every file of it, as verify counts them, so the
	// ratio can pass 100% where small files outweigh small NARs.
	fmt.Fprintf(&b, "\n  NAR %s, bundle %s in all (%.0f%% of NAR), %.1fs, %s/s\n",
		progress.IEC(s.NarBytes), progress.IEC(s.BundleBytes), ratio, s.Seconds, progress.IEC(uint64(rate)))
	_, err := io.WriteString(w, b.String())
	return err
}

// orNone joins parts, or says there are none.
func orNone(parts []string) string {
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
