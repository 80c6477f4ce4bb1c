package gc

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// readRecords reads every bundle record. One that cannot be read stops
// gc: what it needs is unknown.
func (g *collector) readRecords() error {
	var names []string
	for info, err := range g.b.List(g.ctx, bundle.RecordDir) {
		if err != nil {
			return err
		}
		base := path.Base(info.Name)
		switch {
		case info.Dir:
		case strings.HasSuffix(base, ".json"):
			names = append(names, base)
			g.records = append(g.records, &record{name: base, imported: info.ModTime})
		case strings.HasSuffix(base, ".json.sig"):
			g.sigs = append(g.sigs, base)
		}
	}
	return g.each(len(g.records), func(ctx context.Context, i int) error {
		r := g.records[i]
		data, _, err := storage.ReadFile(ctx, g.b, path.Join(bundle.RecordDir, r.name), bundle.MaxManifestSize)
		if err != nil {
			return err
		}
		m, err := bundle.ParseManifest(data)
		if err != nil {
			return fmt.Errorf("record %s: %w: mend or remove it first", r.name, err)
		}
		r.data, r.m = data, m
		return nil
	})
}

// readSets reads the half-imported volume sets.
func (g *collector) readSets() error {
	sets, err := bundle.HalfImportedSets(g.ctx, g.b)
	g.sets = sets
	return err
}

// readGraph reads every narinfo, many at once. One that cannot be read
// or parsed is a node with its error: garbage unless a kept path needs
// it. A store that stops answering stops gc: that is no damage, and
// what it did not give is unknown.
func (g *collector) readGraph() error {
	var names []storage.Info
	for info, err := range g.b.List(g.ctx, "") {
		if err != nil {
			return err
		}
		if h, ok := cache.NarInfoHashPart(info.Name); ok && !info.Dir && storepath.IsHashPart(h) {
			names = append(names, info)
		}
	}
	g.opts.Progress.Phase(PhaseRead, len(names), 0)
	g.graph = make(graph, len(names))
	nodes := make([]*node, len(names))
	err := g.each(len(names), func(ctx context.Context, i int) error {
		h, _ := cache.NarInfoHashPart(names[i].Name)
		n := &node{size: names[i].Size}
		ni, err := g.c.NarInfo(ctx, h)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, cache.ErrNotFound):
			return nil // removed since the listing
		case errors.Is(err, storage.ErrUnavailable):
			return err
		case err != nil:
			n.err = err
		default:
			fill(n, ni)
		}
		nodes[i] = n
		g.opts.Progress.Step("", "", 0)
		return nil
	})
	if err != nil {
		return err
	}
	for i, n := range nodes {
		if n != nil {
			h, _ := cache.NarInfoHashPart(names[i].Name)
			g.graph[h] = n
		}
	}
	return nil
}

func fill(n *node, ni *narinfo.NarInfo) {
	n.path, n.url = ni.StorePath, ni.URL
	if ni.Deriver != (storepath.Path{}) {
		n.deriver = ni.Deriver.Base()
	}
	for _, r := range ni.References {
		if r.Hash != ni.StorePath.Hash {
			n.refs = append(n.refs, r.Hash)
		}
	}
}
