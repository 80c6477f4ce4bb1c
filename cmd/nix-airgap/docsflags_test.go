package main

import (
	"bytes"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/cli"
)

// TestDocsFlags checks that every flag the docs and the help texts give a
// nix-airgap command is one that command's --help lists: in the docs'
// code (blocks and `spans`), each shell command that is `nix-airgap
// COMMAND …` or a span that starts with COMMAND; in the help texts,
// `nix-airgap COMMAND …` and a COMMAND (or COMMAND's) right before a flag,
// as in "pack --since OLD", and the commands of the Examples. A renamed or
// removed flag then fails here, not for the user who copies the command.
func TestDocsFlags(t *testing.T) {
	usage := map[string]string{}
	flags := map[string][]string{}
	listed := regexp.MustCompile(`(?m)^\s+(?:-\w, )?(--[a-z0-9-]+)`)
	for _, c := range helpCommands(t) {
		usage[c] = helpText(t, c)
		for _, m := range listed.FindAllStringSubmatch(usage[c], -1) {
			flags[c] = append(flags[c], m[1])
		}
	}
	if len(flags) < 10 {
		t.Fatalf("found the flags of only %d commands", len(flags))
	}
	// help's --details, as in each command's "Details: nix-airgap help
	// COMMAND --details".
	for _, m := range listed.FindAllStringSubmatch(helpText(t, "help"), -1) {
		flags["help"] = append(flags["help"], m[1])
	}

	type use struct{ where, cmd, flag string }
	var uses []use
	flag := regexp.MustCompile(`(?:^|\s)(--[a-z][a-z0-9-]*)`)
	// command reads one shell command: the flags after nix-airgap
	// COMMAND, or after COMMAND when lead says it may come first.
	invocation := regexp.MustCompile(`(?:^|[\s/])nix-airgap\s+([a-z-]+)(.*)`)
	leading := regexp.MustCompile(`^\s*([a-z-]+)(.*)`)
	command := func(where, s string, lead bool) {
		m := invocation.FindStringSubmatch(s)
		if m == nil && lead {
			m = leading.FindStringSubmatch(s)
		}
		if m == nil || flags[m[1]] == nil {
			return
		}
		for _, f := range flag.FindAllStringSubmatch(m[2], -1) {
			uses = append(uses, use{where, m[1], f[1]})
		}
	}
	// shell splits code into its commands.
	split := regexp.MustCompile(`\|\||&&|[|;()]|\$\(|\bdo\b|\bthen\b`)
	shell := func(where, code string, lead bool) {
		code = strings.ReplaceAll(code, `\|`, " ") // a | in a table's cell
		code = strings.ReplaceAll(code, "\\\n", " ")
		for _, line := range strings.Split(code, "\n") {
			line, _, _ = strings.Cut(line, " # ")
			for _, c := range split.Split(line, -1) {
				command(where, c, lead)
			}
		}
	}

	fence := regexp.MustCompile("(?ms)^```[^\n]*\n(.*?)^```$|^    \\S[^\n]*$")
	span := regexp.MustCompile("`([^`]+)`")
	for _, name := range []string{"README.md", "docs/guide.md", "docs/commands.md", "docs/bundle-format.md", "docs/reliability.md", "docs/design.md", "DEVELOPERS.md"} {
		data, err := os.ReadFile("../../" + name)
		if err != nil {
			t.Fatal(err)
		}
		text := string(data)
		prose := fence.ReplaceAllStringFunc(text, func(block string) string {
			shell(name, block, false)
			return ""
		})
		for _, m := range span.FindAllStringSubmatch(prose, -1) {
			shell(name, m[1], true)
		}
	}
	before := regexp.MustCompile(`\b([a-z-]+)(?:'s)? (--[a-z][a-z0-9-]*)`)
	texts := map[string]string{"nix-airgap --help": helpText(t)}
	for _, topic := range []string{"keys", "exit-codes"} {
		var out, stderr bytes.Buffer
		if err := cli.Run(t.Context(), []string{"help", topic}, &out, &stderr); err != nil {
			t.Fatalf("nix-airgap help %s: %v\n%s", topic, err, stderr.String())
		}
		texts["nix-airgap help "+topic] = out.String()
	}
	for c, text := range usage {
		texts["nix-airgap "+c+" --help"] = text
	}
	for where, text := range texts {
		// The examples, after the usage line, are commands to copy.
		if _, ex, ok := strings.Cut(text, "\nExamples:\n"); ok {
			ex, _, _ = strings.Cut(ex, "\n\n")
			shell(where, ex, false)
		}
		text, _, _ = strings.Cut(text, "\nUsage:")
		for _, line := range strings.Split(text, "\n") {
			command(where, line, false)
		}
		for _, m := range before.FindAllStringSubmatchIndex(text, -1) {
			cmd, flag := text[m[2]:m[3]], text[m[4]:m[5]]
			// In "help pack --details" the flag is help's.
			if flags[cmd] != nil && !strings.HasSuffix(text[:m[0]], "help ") {
				uses = append(uses, use{where, cmd, flag})
			}
		}
	}

	if len(uses) < 100 {
		t.Fatalf("found only %d flags given to commands in the docs and help texts", len(uses))
	}
	for _, u := range uses {
		if !slices.Contains(flags[u.cmd], u.flag) {
			t.Errorf("%s: nix-airgap %s %s: %s --help lists no such flag", u.where, u.cmd, u.flag, u.cmd)
		}
	}
	t.Logf("%d flags given to commands, each one the command has", len(uses))
}

// TestHelpDetails keeps each command's help short, its prose before the
// exit codes at most a screenful, and checks that it sends the
// reader on to the command's section of docs/commands.md, which has the
// details the help leaves out, and which help COMMAND --details prints
// from the binary.
func TestHelpDetails(t *testing.T) {
	const maxLines = 24
	doc, err := os.ReadFile("../../docs/commands.md")
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^## (\S+)$`).FindAllStringSubmatch(string(doc), -1) {
		sections[m[1]] = true
	}
	n := 0
	for _, c := range helpCommands(t) {
		n++
		text := helpText(t, c)
		prose, _, _ := strings.Cut(text, "\nExit codes")
		if lines := strings.Count(prose, "\n"); lines > maxLines {
			t.Errorf("nix-airgap %s --help: %d lines before the exit codes, want at most %d: move details to docs/commands.md", c, lines, maxLines)
		}
		if want := "Details: nix-airgap help " + c + " --details (docs/commands.md)\n"; !strings.Contains(prose, want) {
			t.Errorf("nix-airgap %s --help does not end its prose with %s", c, want)
		}
		if !sections[c] {
			t.Errorf("docs/commands.md has no section ## %s for nix-airgap %s --help to send the reader to", c, c)
		}
	}
	if n < 10 {
		t.Fatalf("found only %d commands", n)
	}
}

// helpText is what nix-airgap ARGS... --help prints.
func helpText(t *testing.T, args ...string) string {
	t.Helper()
	var out, stderr bytes.Buffer
	if err := cli.Run(t.Context(), append(args, "--help"), &out, &stderr); err != nil {
		t.Fatalf("nix-airgap %s --help: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out.String()
}

// helpCommands are the commands nix-airgap --help lists, but help and
// completion.
func helpCommands(t *testing.T) []string {
	_, list, _ := strings.Cut(helpText(t), "Available Commands:\n")
	list, _, _ = strings.Cut(list, "\n\n")
	var cmds []string
	for _, line := range strings.Split(list, "\n") {
		if c := strings.Fields(line)[0]; c != "help" && c != "completion" {
			cmds = append(cmds, c)
		}
	}
	return cmds
}
