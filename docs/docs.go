// Package docs is the part of nix-airgap's documentation that the binary
// carries: commands.md, each command's details, so that a machine in the
// airgap, which has the binary but not the repository, has them too
// (`nix-airgap help COMMAND --details`). It lives beside the file, since
// a go:embed directive reads only files in or below its package's
// directory.
package docs

import (
	_ "embed"
	"strings"
)

// commands is commands.md. The one package-level variable here: go:embed
// needs one, and nothing writes it.
//
//go:embed commands.md
var commands string

// Commands is the whole of commands.md.
func Commands() string { return commands }

// CommandSections are the names of commands.md's sections, in order: its
// "## NAME" headings, lower-cased ("targets", "plan", "pack", …).
func CommandSections() []string {
	var names []string
	for _, s := range sections(commands) {
		names = append(names, s.name)
	}
	return names
}

// CommandSection is commands.md's section name (any case): its "## "
// heading, its text and its subsections, up to the next "## " heading.
func CommandSection(name string) (string, bool) {
	for _, s := range sections(commands) {
		if strings.EqualFold(s.name, name) {
			return s.text, true
		}
	}
	return "", false
}

type section struct{ name, text string }

// sections splits doc at its "## " headings, outside fenced code blocks,
// where a line may start with "## " too. What comes before the first is
// no section.
func sections(doc string) []section {
	var (
		out   []section
		fence bool
	)
	for line := range strings.Lines(doc) {
		if strings.HasPrefix(line, "```") {
			fence = !fence
		}
		if heading, ok := strings.CutPrefix(line, "## "); ok && !fence {
			out = append(out, section{name: strings.ToLower(strings.TrimSpace(heading))})
		}
		if len(out) > 0 {
			out[len(out)-1].text += line
		}
	}
	for i := range out {
		out[i].text = strings.TrimRight(out[i].text, "\n") + "\n"
	}
	return out
}
