package plan

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// flakeInfo is what Nix says about one flake reference.
type flakeInfo struct {
	meta    nixcli.FlakeMetadata
	sources []storepath.Path
}

// resolveFlakes locks and archives each flake (which copies every input's
// source into the store), then evaluates the flake targets' installables
// in parallel, into perTarget.
func resolveFlakes(ctx context.Context, nix *nixcli.Runner, targets []TargetSpec, flakeTargets []int, flakeRefs []string, flakes map[string]*flakeInfo, perTarget [][]ResolvedTarget) error {
	for _, ref := range flakeRefs {
		meta, err := nix.FlakeMetadata(ctx, ref)
		if errors.Is(err, nixcli.ErrLockNotWritten) {
			return fmt.Errorf("plan flake %s: %w", ref, lockFirst(ctx, nix, ref, err))
		}
		if err != nil {
			return fmt.Errorf("plan flake %s: %w", ref, err)
		}
		arch, err := nix.FlakeArchive(ctx, ref)
		if err != nil {
			return fmt.Errorf("plan flake %s: %w", ref, err)
		}
		flakes[ref].meta = meta
		flakes[ref].sources = arch.Paths()
	}
	// Every target's error is reported, so no error cancels the others.
	errs := make([]error, len(targets))
	var g errgroup.Group
	g.SetLimit(nixParallel)
	for _, i := range flakeTargets {
		g.Go(func() error {
			t := targets[i]
			drvs, err := nix.DerivationPaths(ctx, t.Installable())
			if err != nil {
				errs[i] = fmt.Errorf("plan target %s: %w", t, err)
				return nil
			}
			for _, d := range drvs {
				perTarget[i] = append(perTarget[i], ResolvedTarget{Spec: t, DrvPath: d})
			}
			return nil
		})
	}
	g.Wait()
	return errors.Join(errs...)
}

// lockFirst says what to do when Nix would not write ref's lock file
// (err): lock the flake where it lives, named as Nix resolves ref. Nix's
// own hint, --no-write-lock-file, would leave inputs no lock file pins.
func lockFirst(ctx context.Context, nix *nixcli.Runner, ref string, err error) error {
	how := "lock a checkout of it (`nix flake lock DIR`) and name DIR instead"
	if m, merr := nix.FlakeMetadata(ctx, ref, "--no-write-lock-file"); merr == nil {
		switch u := m.ResolvedURL; {
		case strings.HasPrefix(u, "path:") || strings.HasPrefix(u, "git+file:"):
			how = fmt.Sprintf("run `nix flake lock %s` first", u)
		case u != "":
			how = fmt.Sprintf("lock a checkout of %s (`nix flake lock DIR`) and name DIR instead", u)
		}
	}
	return fmt.Errorf("the flake has no lock file, or one that lacks inputs, and Nix will not write one for a registry or remote reference: %s (pack must ship what a lock file pins): %w", how, err)
}

// flakeRefs says, for a reviewer, which flake each flake source in the
// store is: the locked reference of the flake or input. The flake's own
// source is the archive's: Nix 2.34's metadata names the source as it was
// before the lock file it writes, and its narHash in the URL with it.
func flakeRefs(dir storepath.Dir, flakes map[string]*flakeInfo) map[storepath.Path]string {
	out := map[storepath.Path]string{}
	for _, ref := range slices.Sorted(maps.Keys(flakes)) {
		fl := flakes[ref]
		if len(fl.sources) > 0 && fl.meta.Locked.Type() != "" {
			out[fl.sources[0]] = fl.meta.Locked.URL() // Paths lists the flake's first
		}
		for _, name := range slices.Sorted(maps.Keys(fl.meta.Locks.Nodes)) {
			n := fl.meta.Locks.Nodes[name]
			if n.Locked.IsZero() {
				continue
			}
			if p, err := n.Locked.SourcePath(dir); err == nil && out[p] == "" {
				out[p] = n.Locked.URL()
			}
		}
	}
	return out
}

// registry maps every indirect flake reference the flakes use (the
// targets' own and their lock files' inputs) to the source packed for it.
// A flake:ID target's entry is its metadata's locked source, which is the
// archive's: no Nix writes a lock file for an indirect reference (each
// refuses, "cannot write modified lock file"), so unlike a path: flake
// under 2.34 (see flakeRefs) its metadata comes after no write.
func registry(dir storepath.Dir, flakes map[string]*flakeInfo) ([]RegistryEntry, error) {
	byKey := map[string]RegistryEntry{}
	add := func(from, locked nixcli.FlakeRef) error {
		src, err := locked.SourcePath(dir)
		if err != nil {
			return fmt.Errorf("flake input %s: %w", from.URL(), err)
		}
		h, err := locked.NarHash()
		if err != nil {
			return fmt.Errorf("flake input %s: %w", from.URL(), err)
		}
		to := map[string]any{"type": "path", "path": src.String(), "narHash": h.SRI()}
		if lm, ok := locked.Attrs["lastModified"]; ok {
			to["lastModified"] = lm
		}
		key := fmt.Sprint(from.Attrs["id"], "\x00", from.Attrs["ref"], "\x00", from.Attrs["rev"])
		if _, dup := byKey[key]; !dup {
			byKey[key] = RegistryEntry{From: from, To: nixcli.FlakeRef{Attrs: to}, Locked: locked, Source: src}
		}
		return nil
	}
	for _, ref := range slices.Sorted(maps.Keys(flakes)) {
		meta := flakes[ref].meta
		if id, ok := strings.CutPrefix(meta.OriginalURL, "flake:"); ok {
			from := map[string]any{"type": "indirect"}
			id, rest, hasRest := strings.Cut(id, "/")
			from["id"] = id
			if hasRest {
				from["ref"] = rest
			}
			if err := add(nixcli.FlakeRef{Attrs: from}, meta.Locked); err != nil {
				return nil, err
			}
		}
		for _, name := range slices.Sorted(maps.Keys(meta.Locks.Nodes)) {
			n := meta.Locks.Nodes[name]
			if n.Original.Type() == "indirect" && !n.Locked.IsZero() {
				if err := add(n.Original, n.Locked); err != nil {
					return nil, err
				}
			}
		}
	}
	out := slices.Collect(maps.Values(byKey))
	slices.SortFunc(out, func(a, b RegistryEntry) int {
		return strings.Compare(fmt.Sprint(a.From.Attrs["id"], a.From.Attrs["ref"]), fmt.Sprint(b.From.Attrs["id"], b.From.Attrs["ref"]))
	})
	return out, nil
}
