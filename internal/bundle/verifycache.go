package bundle

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/storage"
)

// isCache reports whether dir is a long-lived cache rather than a bundle:
// a binary cache with nix-airgap/ (which import makes first) and no
// manifest.json. A directory with neither is a bundle whose manifest is
// missing, such as one an interrupted pack left, and verifies as such.
func isCache(dir string) bool {
	_, errM := os.Stat(filepath.Join(dir, ManifestName))
	_, errI := os.Stat(filepath.Join(dir, CacheInfo))
	fi, errR := os.Stat(filepath.Join(dir, recordRoot))
	return errors.Is(errM, fs.ErrNotExist) && errI == nil && errR == nil && fi.IsDir()
}

// cacheAt verifies the long-lived cache at location, a directory or an
// object store URL.
func (c *checker) cacheAt(location string) error {
	b, err := storage.Open(c.ctx, location)
	if err != nil {
		return fmt.Errorf("verify %s: %w", location, err)
	}
	defer b.Close()
	return c.cache(b)
}

// cache verifies a long-lived cache (§6): every bundle record's
// signature, every narinfo's signature (or content address), every NAR
// file against its narinfo, and that every reference has a narinfo. Files
// no narinfo names are not problems there: an interrupted import may leave
// NAR files whose narinfos it had not written yet.
func (c *checker) cache(b storage.Backend) error {
	d, err := cache.OpenBackend(c.ctx, b)
	if err != nil {
		c.problem(CacheInfo, KindCorrupt, "%v", err)
		return nil
	}
	defer d.Close()

	var recs []storage.Info
	for info, err := range b.List(c.ctx, RecordDir) {
		if err != nil {
			c.problem(RecordDir, KindCorrupt, "%v", err)
			continue
		}
		if !info.Dir && strings.HasSuffix(info.Name, ".json") {
			recs = append(recs, info)
		}
	}
	var infos []*narinfo.NarInfo
	have := map[string]bool{}
	for ni, err := range d.NarInfos(c.ctx) {
		if err != nil {
			name := "narinfo"
			if ne := (*cache.NarInfoError)(nil); errors.As(err, &ne) {
				name = ne.File
			}
			c.problem(name, KindCorrupt, "%v", err)
			continue
		}
		infos = append(infos, ni)
		have[ni.StorePath.Hash] = true
	}
	c.report.Paths = len(infos)
	var total int64
	for _, ni := range infos {
		total += int64(ni.FileSize)
	}
	for _, rec := range recs {
		total += rec.Size
	}
	c.opts.Progress.Phase(PhaseVerify, len(infos), total)
	for _, rec := range recs {
		rel := rec.Name
		data, _, err := storage.ReadFile(c.ctx, b, rel, MaxManifestSize)
		if err != nil {
			c.problem(rel, KindCorrupt, "%v", err)
			continue
		}
		c.addBytes(int64(len(data)))
		c.opts.Progress.Step("", "", int64(len(data)))
		if want := RecordName(ID(data)); path.Base(rel) != want {
			c.problem(rel, KindCorrupt, "content has id %s, so the record should be named %s", ID(data), want)
		}
		sig, _, _ := storage.ReadFile(c.ctx, b, rel+".sig", MaxManifestSize)
		if pk, err := VerifySignatures(data, sig, c.opts.Keys); err != nil {
			if c.opts.AllowUnsigned && !errors.Is(err, ErrCorrupt) {
				c.warn("%s: %v", rel, err)
			} else {
				c.problem(rel+".sig", KindUntrusted, "%v", err)
			}
		} else if c.report.Signer == "" {
			c.report.Signer = pk.Name
		}
		c.report.Files++
	}

	g, ctx := errgroup.WithContext(c.ctx)
	g.SetLimit(c.opts.Jobs)
	for _, ni := range infos {
		if ctx.Err() != nil {
			break
		}
		name := cache.NarInfoFile(ni.StorePath.Hash)
		if !c.opts.AllowUnsigned && !ni.Verify(c.opts.Keys) && !ni.IsContentAddressed() {
			c.problem(name, KindUntrusted, "%s is not signed by a trusted key", ni.StorePath)
		}
		for _, r := range ni.References {
			if !have[r.Hash] {
				c.problem(name, KindMissing, "reference %s has no narinfo in the cache", r.Base())
			}
		}
		g.Go(func() error {
			c.checkCacheNAR(ctx, d, ni)
			return nil
		})
	}
	g.Wait()
	if c.report.Paths == 0 && len(recs) == 0 {
		c.warn("%s: an empty cache", b)
	}
	return c.ctx.Err()
}

// checkCacheNAR checks one narinfo's NAR file as Nix will on substitution.
func (c *checker) checkCacheNAR(ctx context.Context, d *cache.Cache, ni *narinfo.NarInfo) {
	f, err := d.Open(ctx, ni.URL)
	if err != nil {
		kind := KindCorrupt
		if errors.Is(err, cache.ErrNotFound) {
			kind = KindMissing
		}
		c.problem(ni.URL, kind, "file of %s: %v", ni.StorePath, err)
		return
	}
	defer f.Close()
	if err := cache.CheckNAR(cache.ContextReader(ctx, f), ni); err != nil {
		c.problem(ni.URL, KindCorrupt, "%v", err)
	}
	c.addBytes(int64(ni.FileSize))
	c.opts.Progress.Step(ni.URL, "", int64(ni.FileSize))
}
