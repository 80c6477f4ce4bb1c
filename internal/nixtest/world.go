package nixtest

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/world"
)

// WorldOptions configure NewWorld. The zero value gives the standard world.
type WorldOptions struct {
	// Salt, if set, goes into every served file, so that the world's
	// FOD hashes and every store path differ from the standard world's:
	// two worlds with different salts share nothing, not even their
	// files on a shared Internet. Letters, digits, '.', '_' and '-' only.
	Salt string
	// StructuredAttrs makes the fetchers of src, patch and libbaseSrc
	// structured-attrs derivations, as nixpkgs' (see world.Options).
	StructuredAttrs bool
	// LibbaseData is world.Options.LibbaseData.
	LibbaseData int
}

// World is a world.World (read its doc for the attributes) wired to a
// Nix that builds it and an Internet that serves its sources.
type World struct {
	*world.World
	// Attr is the attribute Build and Instantiate use: "toplevel". Change
	// it on a copy of the World to build another attribute.
	Attr string
	// Nix runs the World's commands.
	Nix *Nix
	// Internet serves the World's sources.
	Internet *Internet
}

// FOD is one fixed-output derivation of a World.
type FOD = world.FOD

// NewWorld generates a World into a temp dir and publishes its sources on
// inet. It builds nothing.
func NewWorld(t testing.TB, n *Nix, inet *Internet, opts WorldOptions) *World {
	t.Helper()
	w, err := world.Generate(t.TempDir(), inet.URL, world.Options{Salt: opts.Salt, StructuredAttrs: opts.StructuredAttrs, LibbaseData: opts.LibbaseData})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range w.FODs {
		inet.Add(f.File, w.Files[f.File])
	}
	return &World{World: w, Attr: "toplevel", Nix: n, Internet: inet}
}

// FODs lists the World's fixed-output derivations, in a fixed order.
func (w *World) FODs() []FOD {
	return append([]FOD(nil), w.World.FODs...)
}

// FOD returns the FOD with attribute attr, failing t if there is none.
func (w *World) FOD(t testing.TB, attr string) FOD {
	t.Helper()
	f, ok := w.World.FOD(attr)
	if !ok {
		t.Fatalf("world: no FOD %q", attr)
	}
	return f
}

// RuntimeAttrs is world.RuntimeAttrs.
func (w *World) RuntimeAttrs() []string { return world.RuntimeAttrs() }

// BuildOnlyAttrs is world.BuildOnlyAttrs.
func (w *World) BuildOnlyAttrs() []string { return world.BuildOnlyAttrs() }

// Args is world.Args.
func (w *World) Args(variant, deep string) []string { return world.Args(variant, deep) }

// RebuildArgs is world.RebuildArgs.
func (w *World) RebuildArgs(rebuild string) []string { return world.RebuildArgs(rebuild) }

// Greeting is world.Greeting.
func (w *World) Greeting(variant, deep string) string { return world.Greeting(variant, deep) }

// On returns a copy of w whose commands run with another Nix: n.In(ns)
// for the same store offline, or a second hermetic Nix as an airgapped
// client of the same world.
func (w *World) On(n *Nix) *World {
	c := *w
	c.Nix = n
	return &c
}

// Instantiate runs nix-instantiate on w.Attr with extra args (such as
// Args) and returns the .drv path.
func (w *World) Instantiate(t testing.TB, args ...string) string {
	t.Helper()
	return w.Nix.Run(t, "nix-instantiate", append([]string{w.File, "-A", w.Attr}, args...)...)
}

// Build runs nix-build on w.Attr with extra args (such as Args), failing
// t on error, and returns the output path. It makes no GC root.
func (w *World) Build(t testing.TB, args ...string) string {
	t.Helper()
	out, err := w.TryBuild(t.Context(), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TryBuild is Build returning the error, with Nix's message, instead.
func (w *World) TryBuild(ctx context.Context, args ...string) (string, error) {
	return w.Nix.Output(ctx, "nix-build", append([]string{"--no-out-link", w.File, "-A", w.Attr}, args...)...)
}

// OutPaths evaluates every attribute's output path (without building or
// fetching anything) under extra args, keyed by attribute.
func (w *World) OutPaths(t testing.TB, args ...string) map[string]string {
	t.Helper()
	expr := "{ ... }@args: builtins.mapAttrs (_: d: d.outPath) (import " + w.File + " args)"
	// nix-instantiate --eval calls the function only when given an
	// argument, so always give it one: the default internet.
	out := w.Nix.Run(t, "nix-instantiate", append([]string{"--eval", "--strict", "--json", "-E", expr, "--argstr", "internet", w.Internet.URL}, args...)...)
	paths := map[string]string{}
	if err := json.Unmarshal([]byte(out), &paths); err != nil {
		t.Fatalf("world out paths: %v", err)
	}
	return paths
}
