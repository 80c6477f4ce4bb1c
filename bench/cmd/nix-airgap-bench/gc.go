package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// The gc section: nix-airgap gc of a synthetic cache of gcPaths paths,
// two bundles' worth (a base and a delta), keeping the delta. The
// baseline is the physical limit: rm of the same files.
const (
	scGC = "gc of a cache of 100,000 paths, keeping the last of two bundles"

	toolGCDry    = "nix-airgap gc --dry-run"
	toolGC       = "nix-airgap gc"
	toolGCNoWait = "nix-airgap gc --grace 0s"
	toolRm       = "rm of the same files (xargs rm)"

	gcPaths = 100_000
)

// gcCache writes a long-lived cache as import would have made it from two
// bundles: a base of the older system (its own 40% of the paths and a
// shared 20%) and a runtime-mode delta carrying the newer system's own
// 40%, which refers to the shared part. Each part is layered as real
// closures are, wide and a few hundred deep at most (gcRefs), and the
// first layer of the own parts refers to the top of the shared part. The
// NARs are small files, as most of a real closure's are. It returns the
// files gc removes.
func gcCache(dir string, sk signing.SecretKey) ([]string, error) {
	storeDir := storepath.Dir("/nix/store")
	n := gcPaths
	parts := [][2]int{{0, n * 2 / 10}, {n * 2 / 10, n * 6 / 10}, {n * 6 / 10, n}} // shared, old, new
	paths := make([]storepath.Path, n)
	for i := range paths {
		sum := sha256.Sum256(binary.LittleEndian.AppendUint64(nil, uint64(i)))
		h, _ := storepath.NewHash(storepath.SHA256, sum[:])
		p, err := storeDir.Make("output:out", h, fmt.Sprintf("bench-gc-%d", i))
		if err != nil {
			return nil, err
		}
		paths[i] = p
	}
	for _, d := range []string{"nar", bundle.RecordDir} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	info := cache.CacheInfo{StoreDir: storeDir, WantMassQuery: true, Priority: 40}
	text, _ := info.MarshalText()
	if err := os.WriteFile(filepath.Join(dir, cache.CacheInfoFile), text, 0o644); err != nil {
		return nil, err
	}
	base := bundle.Manifest{Tool: "bench", Created: time.Unix(1700000000, 0).UTC(), StoreDir: storeDir, Mode: role.ModeRuntime}
	delta := base
	delta.Created = base.Created.Add(time.Hour)
	var removed []string
	for part, r := range parts {
		for i := r[0]; i < r[1]; i++ {
			refs := gcRefs(paths, r, i)
			if part > 0 && i-r[0] < gcWidth {
				refs = append(refs, paths[parts[0][1]-1])
			}
			e, files, err := gcPath(dir, paths[i], refs, sk)
			if err != nil {
				return nil, err
			}
			switch part {
			case 0:
				base.Paths = append(base.Paths, e)
			case 1:
				base.Paths = append(base.Paths, e)
				removed = append(removed, files...)
			case 2:
				delta.Paths = append(delta.Paths, e)
			}
		}
	}
	base.Targets = []bundle.Target{{Spec: "old", Outputs: map[string]storepath.Path{"out": paths[parts[1][1]-1]}}}
	delta.Targets = []bundle.Target{{Spec: "new", Outputs: map[string]storepath.Path{"out": paths[n-1]}}}
	for i, m := range []*bundle.Manifest{&base, &delta} {
		if i == 1 {
			delta.Bases = []bundle.Base{{ID: bundle.ID(mustMarshal(base)), Created: base.Created, Paths: len(base.Paths)}}
		}
		data, err := m.Marshal()
		if err != nil {
			return nil, err
		}
		rec := filepath.Join(dir, bundle.RecordDir, bundle.RecordName(bundle.ID(data)))
		if err := os.WriteFile(rec+".sig", bundle.Sign(data, sk), 0o644); err != nil {
			return nil, err
		}
		if err := os.WriteFile(rec, data, 0o644); err != nil {
			return nil, err
		}
		// Imported an hour apart.
		at := base.Created.Add(time.Duration(i) * time.Hour)
		if err := os.Chtimes(rec, at, at); err != nil {
			return nil, err
		}
	}
	return removed, nil
}

// gcWidth is the width of a part's layers: a part of 40,000 paths is 157
// layers deep, deeper than a NixOS system's closure.
const gcWidth = 256

// gcRefs gives the references of path i of the part r (a range of
// paths): a path of a layer refers to two of the layer before, so that
// each is referred to, and the part's top, its last path, to the gcWidth
// paths before it, as a system's top refers to its packages.
func gcRefs(paths []storepath.Path, r [2]int, i int) []storepath.Path {
	k := i - r[0]
	if i == r[1]-1 {
		return slices.Clone(paths[max(r[0], i-gcWidth):i])
	}
	if k < gcWidth {
		return nil
	}
	prev := r[0] + (k/gcWidth-1)*gcWidth
	return []storepath.Path{paths[prev+k%gcWidth], paths[prev+(k+1)%gcWidth]}
}

func mustMarshal(m bundle.Manifest) []byte {
	data, err := m.Marshal()
	if err != nil {
		panic(err)
	}
	return data
}

// gcPath writes one path's NAR file (uncompressed) and narinfo, and
// returns its manifest entry and the two files.
func gcPath(dir string, p storepath.Path, refs []storepath.Path, sk signing.SecretKey) (bundle.PathEntry, []string, error) {
	var buf strings.Builder
	nw := nar.NewWriter(&buf)
	content := []byte(strings.Repeat(p.Name+"\n", 8))
	nw.WriteHeader(&nar.Header{Path: "/", Type: nar.TypeRegular, Size: int64(len(content))})
	nw.Write(content)
	if err := nw.Close(); err != nil {
		return bundle.PathEntry{}, nil, err
	}
	data := []byte(buf.String())
	sum := sha256.Sum256(data)
	h, _ := storepath.NewHash(storepath.SHA256, sum[:])
	url := cache.NarURL(h, "")
	slices.SortFunc(refs, storepath.Compare)
	ni := &narinfo.NarInfo{StorePath: p, URL: url, Compression: "none", FileHash: h, FileSize: uint64(len(data)), NarHash: h, NarSize: uint64(len(data)), References: refs}
	ni.Sign(sk)
	text, err := ni.MarshalText()
	if err != nil {
		return bundle.PathEntry{}, nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, url), data, 0o644); err != nil {
		return bundle.PathEntry{}, nil, err
	}
	name := cache.NarInfoFile(p.Hash)
	if err := os.WriteFile(filepath.Join(dir, name), text, 0o644); err != nil {
		return bundle.PathEntry{}, nil, err
	}
	e := bundle.PathEntry{Path: p, NarHash: h, NarSize: ni.NarSize, URL: url, FileHash: h, FileSize: ni.FileSize, Compression: "none", References: refs, Roles: role.Runtime}
	return e, []string{name, url}, nil
}

func (b *bench) gc(ctx context.Context) error {
	pristine := filepath.Join(b.work, "gc-cache")
	list := filepath.Join(b.work, "gc-removed.list")
	if _, err := os.Stat(list); err != nil {
		sk, err := signing.ParseSecretKey(strings.TrimSpace(string(mustRead(b.key))))
		if err != nil {
			return err
		}
		removeAll(pristine)
		start := time.Now()
		removed, err := gcCache(pristine, sk)
		if err != nil {
			return err
		}
		if err := os.WriteFile(list, []byte(strings.Join(removed, "\n")+"\n"), 0o644); err != nil {
			return err
		}
		b.log.Info("gc: generated a cache", "paths", gcPaths, "seconds", time.Since(start).Seconds())
	}
	work := filepath.Join(b.work, "gc-run")
	fresh := func() error {
		removeAll(work)
		_, err := b.r.Run(ctx, nil, "", "cp", "-a", pristine, work)
		return err
	}
	tools := []struct {
		tool string
		argv []string
	}{
		{toolGCDry, []string{b.bin, "gc", "--cache", work, "--keep-bundles", "1", "--dry-run", "--no-progress"}},
		{toolGC, []string{b.bin, "gc", "--cache", work, "--keep-bundles", "1", "--no-progress"}},
		{toolGCNoWait, []string{b.bin, "gc", "--cache", work, "--keep-bundles", "1", "--no-progress", "--grace", "0s"}},
		{toolRm, []string{"bash", "-c", `cd "$1" && xargs rm < "$2"`, "rm", work, list}},
	}
	series := map[string]*Series{}
	for _, tl := range tools {
		cmd := strings.ReplaceAll(strings.Join(tl.argv, " "), b.work, "$WORK")
		series[tl.tool] = b.put(&Series{Scenario: scGC, Tool: tl.tool, Command: strings.ReplaceAll(cmd, b.bin, "nix-airgap")})
	}
	for i := range b.runs {
		for _, tl := range inTurn(tools, i) {
			if err := fresh(); err != nil {
				return err
			}
			if err := b.sample(ctx, series[tl.tool], nil, "", tl.argv...); err != nil {
				return err
			}
		}
	}
	return removeAll(work)
}

func mustRead(name string) []byte {
	data, _ := os.ReadFile(name)
	return data
}
