package nar_test

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// makeTree builds a tree covering what a NAR can hold and what makes
// dumping subtle: empty files and directories, nesting, every kind of
// symlink, executable bits, a multi-MiB file, sizes around the 8-byte
// padding, bytewise name order, UTF-8 and JSON-escaped names. It is
// deterministic, so its listing can be a golden file.
func makeTree(t testing.TB, root string) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	big := make([]byte, 3<<20+5)
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	files := map[string]struct {
		data string
		mode os.FileMode
	}{
		"empty":                        {"", 0o644},
		"exe":                          {"#!/bin/sh\necho hi\n", 0o755},
		"exe-user-only":                {"x", 0o700},
		"group-exec-only":              {"x", 0o654},
		"big":                          {string(big), 0o644},
		"A":                            {"upper", 0o644},
		"a":                            {"lower", 0o644},
		"a.b":                          {"dot", 0o644},
		"a-b":                          {"dash", 0o644},
		"B":                            {"B", 0o644},
		"b":                            {"b", 0o644},
		"_":                            {"underscore", 0o644},
		"ä":                            {"umlaut", 0o644},
		"日本語":                          {"utf8", 0o644},
		"z sp\"ace\\tab\tnl\ncr\r\x01": {"escapes", 0o644},
		"deep/er/and/deeper/file":      {"deep", 0o600},
		"deep/er/sibling":              {"s", 0o755},
		"deep/z":                       {"z", 0o644},
	}
	for i := 1; i <= 9; i++ {
		files[filepath.Join("pad", string(rune('0'+i)))] = struct {
			data string
			mode os.FileMode
		}{string(big[:i]), 0o644}
	}
	for name, f := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f.data), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, f.mode); err != nil { // not subject to umask
			t.Fatal(err)
		}
	}
	for _, d := range []string{"emptydir", "deep/emptydir"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		"rel":          "deep/er",
		"abs":          "/etc/hostname",
		"dangling":     "no/such/file",
		"deep/up":      "../a",
		"link-to-big":  "big",
		"weird-target": "a//b/../c/",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
}
