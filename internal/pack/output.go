package pack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/atomicfile"
	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/flakeregistry"
	"github.com/nix-airgap/nix-airgap/internal/inventory"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/sbom"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// close adds the channels, the flake registry and, if asked, the SBOM to
// the bundle, then its manifest, and publishes it.
func (p *Packer) close(ctx context.Context, out *output, pl *plan.Plan, opts Options, bases *bundle.Bases, known *bundle.Known, res *Result) (*bundle.Manifest, error) {
	same, err := p.addChannels(ctx, out.w, opts, bases)
	if err != nil {
		return nil, err
	}
	res.ChannelsInBases = slices.Sorted(maps.Keys(same))
	if len(pl.FlakeRegistry) > 0 {
		data, err := registryJSON(pl.FlakeRegistry)
		if err != nil {
			return nil, fmt.Errorf("pack: %w", err)
		}
		if err := out.w.AddFile(bundle.RegistryName, data); err != nil {
			return nil, fmt.Errorf("pack: %w", err)
		}
	}
	p.progress().Phase(PhaseClose, 0, 0)
	tool := opts.Tool
	if tool == "" {
		tool = "nix-airgap"
	}
	header := bundle.ManifestHeader{
		Tool: tool, Created: time.Now().UTC().Truncate(time.Second), Mode: pl.Mode, Derivations: pl.Derivations,
		Targets: manifestTargets(pl.Targets),
	}
	// Each base, with the paths of it that the targets need.
	var leftOut []storepath.Path
	for _, it := range pl.Items {
		if known.Has(it.Path) {
			leftOut = append(leftOut, it.Path)
		}
	}
	header.Bases = known.For(out.w.Manifest(header).Paths, leftOut, same)
	if opts.SBOM {
		// The SBOM describes the bundle's paths; it becomes one of its
		// files, which the signed manifest covers.
		data, err := sbom.CycloneDX(inventory.FromManifest(opts.Out, out.w.Manifest(header)))
		if err != nil {
			return nil, fmt.Errorf("pack: %w", err)
		}
		if err := out.w.AddFile(sbom.FileName, data); err != nil {
			return nil, fmt.Errorf("pack: %w", err)
		}
	}
	if err := out.w.Close(ctx, header); err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	if err := out.commit(); err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	return out.w.Written(), nil
}

// readBack fills in the bundle's id, its size on the medium, and the
// paths' file sizes from the manifest.
func (r *Result) readBack(out *output) error {
	for _, e := range r.Manifest.Paths {
		r.FileBytes += e.FileSize
	}
	// The id, read back from the writer, not the disk, as parsing it
	// again would hold a channel-sized manifest twice.
	r.ID = bundle.ID(out.w.ManifestData())
	switch {
	case out.counter != nil:
		r.BundleBytes = uint64(out.counter.n.Load())
		return nil
	case out.dir == "":
		return r.readVolumes(out.w.Volumes())
	}
	// The manifest has the exact file sizes.
	size := make(map[string]uint64, len(r.Manifest.Paths))
	for _, e := range r.Manifest.Paths {
		size[e.Path.Hash] = e.FileSize
	}
	for i := range r.Paths {
		r.Paths[i].FileSize = size[r.Paths[i].Path.Hash]
	}
	// Every file, as verify counts them: on a small closure the
	// narinfos and manifest outweigh the NARs.
	n, err := bundle.DirBytes(out.dir)
	if err != nil {
		return fmt.Errorf("pack: %w", err)
	}
	r.BundleBytes = n
	return nil
}

// readVolumes fills in the volumes and their size on the medium.
func (r *Result) readVolumes(vols []string) error {
	if len(vols) == 0 {
		return errors.New("pack: the bundle's volumes: none written")
	}
	r.Volumes = vols
	for _, v := range vols {
		fi, err := os.Stat(v)
		if err != nil {
			return fmt.Errorf("pack: %w", err)
		}
		r.BundleBytes += uint64(fi.Size())
	}
	return nil
}

func manifestTargets(rts []plan.ResolvedTarget) []bundle.Target {
	var out []bundle.Target
	for _, rt := range rts {
		t := bundle.Target{Spec: rt.Spec.Text, DrvPath: rt.DrvPath, Outputs: map[string]storepath.Path{}}
		for name, p := range rt.Outputs {
			t.Outputs[name] = p
		}
		if rt.Path != (storepath.Path{}) && len(t.Outputs) == 0 {
			t.Outputs["out"] = rt.Path
		}
		out = append(out, t)
	}
	return out
}

// registryJSON writes a flake registry of entries.
func registryJSON(entries []plan.RegistryEntry) ([]byte, error) {
	var reg flakeregistry.Registry
	for _, e := range entries {
		f, err := json.Marshal(struct {
			From map[string]any `json:"from"`
			To   map[string]any `json:"to"`
		}{e.From.Attrs, e.To.Attrs})
		if err != nil {
			return nil, fmt.Errorf("flake registry: %w", err)
		}
		reg.Flakes = append(reg.Flakes, f)
	}
	return reg.Marshal()
}

// output is the bundle being written and what commits it.
type output struct {
	w       *bundle.Writer
	dir     string           // directory form
	file    *atomicfile.File // a .tar file
	counter *countingWriter  // tar form; a volume set has neither dir nor counter
	done    bool
}

// openOutput opens the bundle for the paths items. A tar file goes on
// from what a killed pack into it left, as far as that holds items.
func (p *Packer) openOutput(ctx context.Context, opts Options, dir storepath.Dir, items []*plan.Item) (*output, error) {
	wopts := bundle.WriterOptions{
		Compression: opts.Compression, Key: opts.Key, TempDir: opts.TempDir, Log: p.Log,
		Codec: compression.WriterOptions{Level: opts.Level, XZProgram: opts.XZProgram},
	}
	switch {
	case opts.VolumeSize > 0:
		w, err := bundle.NewVolumeWriter(opts.Out, opts.VolumeSize, dir, wopts)
		if err != nil {
			return nil, err
		}
		return &output{w: w}, nil
	case opts.Out == "-":
		if opts.Stdout == nil {
			return nil, errors.New("output -: no stdout")
		}
		cw := &countingWriter{w: opts.Stdout}
		w, err := bundle.NewTarWriter(cw, dir, wopts)
		if err != nil {
			return nil, err
		}
		return &output{w: w, counter: cw}, nil
	case strings.HasSuffix(opts.Out, ".tar"):
		f, resumed, err := atomicfile.Resume(opts.Out, 0o644)
		if err != nil {
			return nil, err
		}
		var prefix *bundle.TarPrefix
		if resumed {
			flat := make(map[storepath.Path]bool, len(items))
			for _, it := range items {
				flat[it.Path] = isFlat(itemCA(it))
			}
			want := func(p storepath.Path) (bool, bool) {
				f, ok := flat[p]
				return f, ok
			}
			if prefix, err = bundle.ScanTar(ctx, f.File, dir, wopts, want, p.progress()); err != nil {
				// Interrupted, it is as the killed pack left it; a file
				// that cannot be read is no start to go on from.
				if ctx.Err() != nil {
					f.Keep()
				} else {
					f.Abort()
				}
				return nil, err
			}
		}
		cw := &countingWriter{w: f}
		cw.n.Store(prefix.Size())
		w, err := bundle.ResumeTarWriter(cw, prefix, dir, wopts)
		if err != nil {
			if resumed {
				f.Keep() // still a start for the next pack
			} else {
				f.Abort()
			}
			return nil, err
		}
		return &output{w: w, file: f, counter: cw}, nil
	}
	w, err := bundle.NewDirWriter(opts.Out, dir, wopts)
	if err != nil {
		return nil, err
	}
	return &output{w: w, dir: opts.Out}, nil
}

func (o *output) commit() error {
	o.done = true
	if o.file != nil {
		return o.file.Commit()
	}
	return nil
}

// abort drops the tar form's spool. A half-written tar file, directory or
// volume set's spool stays: none has a manifest, and the next pack into
// the same output goes on from what it holds.
func (o *output) abort() {
	if o.done {
		return
	}
	o.w.Abort()
	if o.file != nil {
		o.file.Keep()
	}
}

type countingWriter struct {
	w io.Writer
	n atomic.Int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}
