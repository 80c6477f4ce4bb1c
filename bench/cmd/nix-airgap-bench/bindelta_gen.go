package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// The binary-delta benchmark's closures are made of real binaries: the
// files of Debian packages, each package one store path, as bookworm has
// them (the base) and as trixie has them (newer upstream builds of the
// same packages). A "rebuild" writes its store path and its references'
// into every file, as rpaths and shebangs carry them: a block of store
// paths inserted at the start of each file and every 256 KiB.

// bdPath is one generated store path.
type bdPath struct {
	Path  string   `json:"path"`
	Pkg   string   `json:"pkg"`
	Suite string   `json:"suite"`
	Refs  []string `json:"refs"`
	// Parts, for one large path, are the packages it holds, each in a
	// directory of its own, from Suite unless bumped.
	Parts  []string        `json:"parts,omitempty"`
	Bumped map[string]bool `json:"bumped,omitempty"`
}

// bdClosure is one generated closure: a path per package and a top.
type bdClosure struct {
	Name  string   `json:"name"`
	Top   string   `json:"top"`
	Paths []bdPath `json:"paths"`
}

// bdGen makes the closures of the benchmark in a store dir.
type bdGen struct {
	dir      storepath.Dir
	extract  string // EXTRACT/SUITE/PKG: a package's files
	versions map[string]map[string]string
}

// closure generates scenario's closure: every package from bookworm,
// except those in bumped, from trixie; every hash salted with the
// scenario.
func (g *bdGen) closure(scenario string, pkgs []string, bumped map[string]bool) *bdClosure {
	c := &bdClosure{Name: scenario}
	hash := func(name string) string {
		sum := sha256.Sum256([]byte("nix-airgap bindelta " + scenario + " " + name))
		return nixbase32.EncodeToString(sum[:20])
	}
	for i, pkg := range pkgs {
		suite := "bookworm"
		if bumped[pkg] {
			suite = "trixie"
		}
		name := storeName(pkg + "-" + upstreamVersion(g.versions[suite][pkg]))
		p := bdPath{Path: string(g.dir) + "/" + hash(pkg) + "-" + name, Pkg: pkg, Suite: suite}
		// A layered graph: each package refers to up to three before it,
		// in an order that does not depend on their hashes, as a build's
		// rpath does not.
		for _, j := range []int{i - 1, i / 2, i / 3} {
			if j >= 0 && j < i && !slices.Contains(p.Refs, c.Paths[j].Path) {
				p.Refs = append(p.Refs, c.Paths[j].Path)
			}
		}
		c.Paths = append(c.Paths, p)
	}
	top := bdPath{Path: string(g.dir) + "/" + hash("top") + "-bindelta-closure"}
	for _, p := range c.Paths {
		top.Refs = append(top.Refs, p.Path)
	}
	c.Paths = append(c.Paths, top)
	c.Top = top.Path
	return c
}

// upstreamVersion drops a Debian version's epoch.
func upstreamVersion(v string) string {
	if i := strings.IndexByte(v, ':'); i >= 0 {
		v = v[i+1:]
	}
	return v
}

// storeName keeps what a store path name allows.
func storeName(s string) string {
	return strings.Map(func(r rune) rune {
		if 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune("+-._?=", r) {
			return r
		}
		return '_'
	}, s)
}

// big generates a closure of one large path that holds every package
// of both suites (each under SUITE-PKG/), bumped ones from trixie in
// both places, for memory with a NAR over 1 GiB.
func (g *bdGen) big(scenario string, pkgs []string, bumped map[string]bool) *bdClosure {
	sum := sha256.Sum256([]byte("nix-airgap bindelta big " + scenario))
	p := bdPath{Path: string(g.dir) + "/" + nixbase32.EncodeToString(sum[:20]) + "-bindelta-big-1.0", Pkg: "big", Parts: pkgs, Bumped: bumped}
	return &bdClosure{Name: scenario, Top: p.Path, Paths: []bdPath{p}}
}

// importClosure adds c to the store with nix-store --import.
func (g *bdGen) importClosure(ctx context.Context, env []string, c *bdClosure) error {
	cmd := exec.CommandContext(ctx, "nix-store", "--import")
	cmd.Env = env
	cmd.Stdout = io.Discard
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	bw := bufio.NewWriterSize(stdin, 1<<20)
	werr := func() error {
		for _, p := range c.Paths {
			writeU64(bw, 1)
			if err := g.writeNAR(bw, p); err != nil {
				return fmt.Errorf("%s: %w", p.Path, err)
			}
			writeU64(bw, 0x4558494e)
			writeString(bw, p.Path)
			writeU64(bw, uint64(len(p.Refs)))
			for _, r := range p.Refs {
				writeString(bw, r)
			}
			writeString(bw, "")
			writeU64(bw, 0)
		}
		writeU64(bw, 0)
		return bw.Flush()
	}()
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("nix-store --import %s: %w", c.Name, err)
	}
	return werr
}

// writeNAR writes p's NAR: its package's files with p's store path and
// its references written into each, or, for the top, a list of paths.
func (g *bdGen) writeNAR(w io.Writer, p bdPath) error {
	nw := nar.NewWriter(w)
	block := "\x00" + strings.Join(append([]string{p.Path}, p.Refs...), ":") + "\x00"
	if p.Pkg == "" {
		if err := nw.WriteHeader(&nar.Header{Path: "/", Type: nar.TypeRegular, Size: int64(len(block))}); err != nil {
			return err
		}
		io.WriteString(nw, block)
		return nw.Close()
	}
	if p.Parts != nil {
		if err := nw.WriteHeader(&nar.Header{Path: "/", Type: nar.TypeDirectory}); err != nil {
			return err
		}
		for _, suite := range []string{"bookworm", "trixie"} {
			for _, pkg := range p.Parts {
				from := suite
				if p.Bumped[pkg] {
					from = "trixie"
				}
				if err := g.writeTree(nw, filepath.Join(g.extract, from, pkg), "/"+suite+"-"+pkg, block); err != nil {
					return err
				}
			}
		}
		return nw.Close()
	}
	if err := g.writeTree(nw, filepath.Join(g.extract, p.Suite, p.Pkg), "/", block); err != nil {
		return err
	}
	return nw.Close()
}

// writeTree writes the tree at root into the NAR at prefix, block
// inserted into every file.
func (g *bdGen) writeTree(nw *nar.Writer, root, prefix, block string) error {
	return filepath.WalkDir(root, func(fp string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, fp)
		np := prefix
		if rel != "." {
			np = strings.TrimSuffix(prefix, "/") + "/" + filepath.ToSlash(rel)
		}
		switch {
		case d.IsDir():
			return nw.WriteHeader(&nar.Header{Path: np, Type: nar.TypeDirectory})
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(fp)
			if err != nil {
				return err
			}
			return nw.WriteHeader(&nar.Header{Path: np, Type: nar.TypeSymlink, LinkTarget: target})
		case !d.Type().IsRegular():
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		data, err := os.ReadFile(fp)
		if err != nil {
			return err
		}
		withRefs := insertEvery(data, block, 256<<10)
		if err := nw.WriteHeader(&nar.Header{Path: np, Type: nar.TypeRegular, Size: int64(len(withRefs)), Executable: fi.Mode()&0o111 != 0}); err != nil {
			return err
		}
		_, err = nw.Write(withRefs)
		return err
	})
}

// insertEvery inserts block at the start of data and after every step
// bytes of it.
func insertEvery(data []byte, block string, step int) []byte {
	out := make([]byte, 0, len(data)+(len(data)/step+1)*len(block))
	for i := 0; ; i += step {
		out = append(out, block...)
		out = append(out, data[i:min(i+step, len(data))]...)
		if i+step >= len(data) {
			return out
		}
	}
}
