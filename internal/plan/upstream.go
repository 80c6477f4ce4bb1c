package plan

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Upstream is an upstream binary cache: the planner asks it for
// narinfos and pack copies NAR files from it. OpenUpstream opens one.
type Upstream struct {
	// URL names the cache in plans and messages.
	URL string
	// Cache answers narinfo queries, parsed in the planner's store dir (a
	// miss wraps cache.ErrNotFound or fs.ErrNotExist; any other error
	// fails the plan), and opens files for pack.
	Cache cache.Source
}

// OpenUpstream opens the binary cache at url (as cache.Open takes it,
// with client for HTTP; nil means cache.NewHTTPClient()) as an Upstream
// for a store in dir, retrying transient failures. It refuses a cache
// whose nix-cache-info names another store dir. The Upstream's URL has
// any password of url's redacted: plans and bundles record it.
func OpenUpstream(ctx context.Context, url string, dir storepath.Dir, client *http.Client) (Upstream, error) {
	src, err := cache.Open(ctx, url, client)
	url = storage.Redact(strings.TrimSuffix(url, "/"))
	if err != nil {
		return Upstream{}, err
	}
	if sd, ok := src.(interface{ StoreDir() storepath.Dir }); ok && sd.StoreDir() != dir {
		if c, ok := src.(io.Closer); ok {
			c.Close() // a directory's cache holds its root open
		}
		return Upstream{}, fmt.Errorf("open cache %s: %w: it is for store %s, not %s", url, storepath.ErrWrongDir, sd.StoreDir(), dir)
	}
	return Upstream{URL: url, Cache: cache.WithRetry(src, cache.RetryAttempts, cache.RetryBackoff)}, nil
}

// lookup asks the upstreams, in order, for each path, with Jobs lookups
// at a time. It returns the items found with a trusted narinfo.
func (r *resolver) lookup(ctx context.Context, paths []storepath.Path) (map[storepath.Path]*Item, error) {
	found := map[storepath.Path]*Item{}
	if len(r.p.Upstreams) == 0 || len(paths) == 0 {
		return found, nil
	}
	var mu sync.Mutex
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(r.p.jobs())
	for _, q := range paths {
		g.Go(func() error {
			if err := ctx.Err(); err != nil {
				return err
			}
			it, err := r.lookupOne(ctx, q)
			if it != nil {
				mu.Lock()
				found[q] = it
				mu.Unlock()
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return found, nil
}

func (r *resolver) lookupOne(ctx context.Context, q storepath.Path) (*Item, error) {
	for i, u := range r.p.Upstreams {
		ni, err := u.Cache.NarInfo(ctx, q.Hash)
		if errors.Is(err, cache.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("plan: upstream %s: %s: %w", u.URL, q, err)
		}
		if ni.StorePath != q {
			return nil, fmt.Errorf("plan: upstream %s: narinfo for %s describes %s: %w", u.URL, q, ni.StorePath, narinfo.ErrCorrupt)
		}
		if !ni.IsContentAddressed() && (r.p.TrustedKeys == nil || !ni.Verify(r.p.TrustedKeys)) {
			r.untrusted.Add(1)
			r.p.log().Debug("upstream narinfo not signed by a trusted key", "upstream", u.URL, "path", q)
			continue
		}
		size := ni.FileSize
		if size == 0 {
			size = ni.NarSize
		}
		return &Item{
			Path: q, Source: Source{Kind: FromUpstream, Upstream: i, URL: u.URL},
			NarHash: ni.NarHash, NarSize: ni.NarSize, FileSize: size,
			References: ni.References, Deriver: ni.Deriver, NarInfo: ni,
		}, nil
	}
	return nil, nil
}
