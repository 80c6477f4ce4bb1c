package inventory

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/progress"
	"github.com/nix-airgap/nix-airgap/internal/role"
)

// WriteText writes inv for people: each bundle's header, then the
// packages and the sources.
func (inv *Inventory) WriteText(w io.Writer) error {
	var b strings.Builder
	if inv.emptyCache() {
		fmt.Fprintf(&b, "%s\n", emptyCacheText)
	}
	for i := range inv.Bundles {
		inv.Bundles[i].writeText(&b, inv.Kind)
	}
	t := inv.Totals
	if inv.Kind == KindInventory {
		fmt.Fprintf(&b, "\n%s, %s NAR (a cache inventory records no compressed sizes, roles or origins)\n", progress.Plural(t.Paths, "path"), progress.IEC(t.NarSize))
	} else {
		fmt.Fprintf(&b, "\n%s, %s NAR, %s compressed: %s\n", progress.Plural(t.Paths, "path"), progress.IEC(t.NarSize), progress.IEC(t.FileSize), countList(t.Roles, role.All.Names()))
		fmt.Fprintf(&b, "from: %s\n", countList(t.Origins, nil))
	}

	fmt.Fprintf(&b, "\npackages (%d):\n", len(inv.Packages))
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, p := range inv.Packages {
		size := progress.IEC(p.NarSize)
		if p.Builds > 1 {
			// Several builds of one version, as a cache holds after a
			// rebuild: the size is theirs together.
			size += fmt.Sprintf(" in %d builds", p.Builds)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", p.Name, showVersion(p.Version), strings.Join(showOutputs(p.Outputs), ","), size, strings.Join(p.Origins, "; "))
	}
	tw.Flush()

	if len(inv.Sources) == 0 {
		b.WriteString("\nsources: none\n")
	} else {
		fmt.Fprintf(&b, "\nsources (%d):\n", len(inv.Sources))
		writeSources(&b, inv.Sources)
	}
	if t.Derivations > 0 {
		fmt.Fprintf(&b, "\nand %d .drv files\n", t.Derivations)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func (bd *Bundle) writeText(b *strings.Builder, kind string) {
	what := "bundle"
	if kind == KindCache {
		what = "imported bundle"
	}
	if bd.ID != "" {
		fmt.Fprintf(b, "%s %s\n", what, bd.ID)
	} else {
		fmt.Fprintf(b, "%s\n", what)
	}
	created := bd.Created.UTC().Format("2006-01-02 15:04:05 MST")
	if kind == KindInventory {
		// Of its bundles, an inventory keeps the id, the time and the
		// paths; its own entry is the inventory, which no key signs.
		if bd.Tool != "" {
			created += " by " + bd.Tool
		}
		fmt.Fprintf(b, "  created:  %s\n  (a cache inventory records no signature, mode or targets)\n", created)
		return
	}
	fmt.Fprintf(b, "  created:  %s by %s\n", created, bd.Tool)
	fmt.Fprintf(b, "  signed:   %s\n", bd.Signature.text())
	mode := bd.Mode
	if bd.Derivations {
		mode += ", with .drv files"
	}
	fmt.Fprintf(b, "  mode:     %s\n", mode)
	for _, base := range bd.extends() {
		fmt.Fprintf(b, "  extends:  %s\n", base)
	}
	for _, t := range bd.Targets {
		outs := slices.Sorted(maps.Keys(t.Outputs))
		for i, o := range outs {
			outs[i] = t.Outputs[o]
		}
		if len(outs) == 1 && outs[0] == t.Spec {
			fmt.Fprintf(b, "  target:   %s\n", t.Spec) // a store path, its own output
			continue
		}
		fmt.Fprintf(b, "  target:   %s → %s\n", t.Spec, strings.Join(outs, " "))
	}
	for _, f := range bd.Files {
		fmt.Fprintf(b, "  file:     %s\n", f)
	}
}

// extends says what the bundle was packed against (pack --since), as its
// manifest's bases do: a cache inventory's id is the sha256 of its file,
// which no command prints, so it is told by its time and size.
func (bd *Bundle) extends() []string {
	if bd.manifest == nil {
		return bd.Bases
	}
	var s []string
	for _, base := range bd.manifest.Bases {
		when := base.Created.UTC().Format("2006-01-02 15:04:05 MST")
		switch base.Kind {
		case bundle.BaseInventory:
			s = append(s, fmt.Sprintf("the cache inventory taken %s (%s)", when, progress.Plural(base.Paths, "path")))
		case bundle.BaseBundle:
			s = append(s, fmt.Sprintf("bundle %s, packed %s (%s)", base.ID, when, progress.Plural(base.Paths, "path")))
		default:
			// A manifest written before bases had kinds cannot tell
			// a cache inventory.
			s = append(s, fmt.Sprintf("%s, packed or taken %s (%s): a bundle, or a cache inventory", base.ID, when, progress.Plural(base.Paths, "path")))
		}
	}
	return s
}

func (s Signature) text() string {
	switch {
	case len(s.Keys) == 0:
		return "UNSIGNED"
	case s.Trusted != "":
		return "by " + s.Trusted + " (verified)"
	case s.Checked:
		return "by " + strings.Join(s.Keys, ", ") + " (NOT a trusted key, or a bad signature)"
	}
	return "by " + strings.Join(s.Keys, ", ") + " (not checked: give --public-key)"
}

func writeSources(b *strings.Builder, sources []Source) {
	for _, s := range sources {
		hash := s.Hash
		if hash == "" {
			hash = "no fixed hash recorded"
		}
		fmt.Fprintf(b, "  %s (%s, %s)\n", s.Name, progress.IEC(s.NarSize), hash)
		urls := s.URLs
		if len(urls) == 0 {
			urls = []string{"(no URL recorded)"}
		}
		for _, u := range urls {
			fmt.Fprintf(b, "    %s\n", u)
		}
	}
}

// showVersion spells a version as diff-closures does: ε for none.
func showVersion(v string) string {
	if v == "" {
		return "ε"
	}
	return v
}

func showVersions(vs []string) string {
	if len(vs) == 0 {
		return "∅"
	}
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = showVersion(v)
	}
	return strings.Join(out, ", ")
}

func showOutputs(outs []string) []string {
	out := slices.Clone(outs)
	for i, o := range out {
		if o == "" {
			out[i] = "?"
		}
	}
	return out
}

// countList spells counts "a 3, b 1", in order's order, then the rest
// sorted.
func countList(counts map[string]int, order []string) string {
	var parts []string
	for _, k := range order {
		if n := counts[k]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, n))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		if !slices.Contains(order, k) && counts[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, counts[k]))
		}
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}

// signedIEC spells a size change: "+1.5 KiB", "-512 B".
func signedIEC(n int64) string {
	if n < 0 {
		return "-" + progress.IEC(uint64(-n))
	}
	return "+" + progress.IEC(uint64(n))
}

// WriteText writes d for people, one line per changed package as `nix
// store diff-closures` writes them, then the sources and the totals.
func (d *Diff) WriteText(w io.Writer) error {
	var b strings.Builder
	writeSignatures(&b, "OLD", d.OldSignatures)
	writeSignatures(&b, "NEW", d.NewSignatures)
	for _, n := range d.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	// Against a delta, what only OLD holds is what NEW no longer needs:
	// importing it removes nothing.
	removed := "removed"
	if d.newIsDelta {
		removed = "no longer needed"
	}
	// Against a delta of a cache that holds other systems too, what NEW
	// no longer needs can be hundreds of packages: named in one line.
	fold := d.newIsDelta && d.unneededPackages() > foldUnneeded
	var unneeded []string
	counts := map[string]int{}
	for _, c := range d.Packages {
		counts[c.Change]++
		if fold && c.Change == Removed {
			unneeded = append(unneeded, c.Name)
			continue
		}
		var items []string
		if len(c.Old) > 0 || len(c.New) > 0 {
			// The whole sets, so that a version kept beside a new one
			// does not read as a package added.
			items = append(items, showVersions(sortedSet(slices.Concat(c.Old, c.Versions)))+" → "+showVersions(sortedSet(slices.Concat(c.New, c.Versions))))
		}
		for _, vc := range c.Builds {
			items = append(items, vc.text())
		}
		line := strings.Join(items, "; ")
		switch {
		case c.SizeUnknown:
			line += ", size change unknown"
		case c.SizeDelta != 0:
			line += ", " + signedIEC(c.SizeDelta)
		}
		fmt.Fprintf(&b, "%s: %s\n", c.Name, line)
	}
	if len(d.SourcesAdded) > 0 {
		fmt.Fprintf(&b, "\nsources added (%d):\n", len(d.SourcesAdded))
		writeSources(&b, d.SourcesAdded)
	}
	if len(unneeded) > 0 {
		fmt.Fprintf(&b, "no longer needed (%d packages): %s\n", len(unneeded), foldNames(unneeded))
	}
	switch {
	case d.newIsDelta && len(d.SourcesRemoved) > foldUnneeded:
		var names []string
		for _, src := range d.SourcesRemoved {
			names = append(names, src.Name)
		}
		fmt.Fprintf(&b, "\nsources %s (%d): %s\n", removed, len(d.SourcesRemoved), foldNames(names))
	case len(d.SourcesRemoved) > 0:
		fmt.Fprintf(&b, "\nsources %s (%d):\n", removed, len(d.SourcesRemoved))
		writeSources(&b, d.SourcesRemoved)
	}
	if len(d.Packages) > 0 || len(d.SourcesAdded) > 0 || len(d.SourcesRemoved) > 0 {
		b.WriteByte('\n')
	}
	pkgs := "no package changed"
	if len(d.Packages) > 0 {
		labels := []string{"version changed", "builds changed", "outputs changed", "rebuilt", "added", removed}
		n := map[string]int{}
		for i, kind := range []string{Updated, Builds, Outputs, Rebuilt, Added, Removed} {
			n[labels[i]] = counts[kind]
		}
		pkgs = "packages: " + countList(n, labels)
	}
	fmt.Fprintf(&b, "%s; %s; %s\n", pkgs, pathTotals("added", d.PathsAdded), pathTotals(removed, d.PathsRemoved))
	_, err := io.WriteString(w, b.String())
	return err
}

// foldUnneeded is how many packages, or sources, NEW no longer needs
// that a diff names one per line; more are named in one.
const foldUnneeded = 10

func (d *Diff) unneededPackages() int {
	n := 0
	for _, c := range d.Packages {
		if c.Change == Removed {
			n++
		}
	}
	return n
}

// foldNames names the first few of names and says how to see all.
func foldNames(names []string) string {
	const shown = 5
	if len(names) <= shown {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:shown], ", ") + fmt.Sprintf(" and %d more (--json lists them all)", len(names)-shown)
}

// writeSignatures says who signed a side's bundles, when they were
// checked: each bundle's signer, or of many, those not signed by a trusted
// key.
func writeSignatures(b *strings.Builder, side string, sigs []BundleSignature) {
	var bad []BundleSignature
	var trusted []string
	for _, s := range sigs {
		if s.Trusted == "" {
			bad = append(bad, s)
		} else {
			trusted = append(trusted, s.Trusted)
		}
	}
	switch {
	case len(sigs) == 1:
		fmt.Fprintf(b, "%s signature: %s\n", side, sigs[0].text())
	case len(sigs) > 1 && len(bad) == 0:
		fmt.Fprintf(b, "%s: %d bundles, all signed by %s (verified)\n", side, len(sigs), strings.Join(sortedSet(trusted), ", "))
	case len(sigs) > 1:
		fmt.Fprintf(b, "%s: %d of %d bundles NOT signed by a trusted key:\n", side, len(bad), len(sigs))
		for _, s := range bad {
			fmt.Fprintf(b, "  %s: %s\n", s.ID, s.text())
		}
	}
}

// text says how one version's builds changed: "2.12 rebuilt", "2.12
// builds 1 → 2", "2.12 rebuilt and output man added".
func (vc VersionChange) text() string {
	var parts []string
	switch {
	case vc.OldBuilds != vc.NewBuilds && vc.Rebuilt > 0:
		// New builds in place of old ones, as against a cache that kept
		// earlier builds: a rebuild first, not only fewer builds.
		parts = append(parts, fmt.Sprintf("rebuilt, builds %d → %d", vc.OldBuilds, vc.NewBuilds))
	case vc.OldBuilds != vc.NewBuilds:
		parts = append(parts, fmt.Sprintf("builds %d → %d", vc.OldBuilds, vc.NewBuilds))
	case vc.Rebuilt > 0 && vc.Rebuilt < vc.NewBuilds:
		parts = append(parts, fmt.Sprintf("rebuilt (%d of %d builds)", vc.Rebuilt, vc.NewBuilds))
	case vc.Rebuilt > 0 || len(vc.OutputsAdded)+len(vc.OutputsRemoved) == 0:
		parts = append(parts, "rebuilt")
	}
	for _, o := range []struct {
		outs []string
		what string
	}{{vc.OutputsAdded, "added"}, {vc.OutputsRemoved, "removed"}} {
		switch len(o.outs) {
		case 0:
		case 1:
			parts = append(parts, "output "+showOutputs(o.outs)[0]+" "+o.what)
		default:
			parts = append(parts, "outputs "+strings.Join(showOutputs(o.outs), ", ")+" "+o.what)
		}
	}
	return showVersion(vc.Version) + " " + strings.Join(parts, " and ")
}

func pathTotals(what string, t Totals) string {
	switch {
	case t.Paths == 0:
		return "no paths " + what
	case t.FileSize == 0:
		// No path's NAR file is empty: none of these is known, as of a
		// cache inventory's paths.
		return fmt.Sprintf("%s %s (%s NAR)", progress.Plural(t.Paths, "path"), what, progress.IEC(t.NarSize))
	}
	return fmt.Sprintf("%s %s (%s NAR, %s compressed)", progress.Plural(t.Paths, "path"), what, progress.IEC(t.NarSize), progress.IEC(t.FileSize))
}
