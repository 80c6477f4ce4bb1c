// Package cachetest makes binary caches for tests and benchmarks.
package cachetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/nar"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Layers is how deep a Channel's graph is: wide and shallow, as a
// channel's is.
const Layers = 40

// Channel is an upstream binary cache the size of a channel, written by
// WriteChannel.
type Channel struct {
	// Dir is the cache directory.
	Dir string
	// Paths are every store path in it, layer by layer, each after the
	// paths it refers to.
	Paths []storepath.Path
	// Key is the public key every narinfo is signed with.
	Key signing.PublicKey
	// PathsFile lists Paths one a line, as a channel's store-paths does,
	// and KeyFile holds Key: both for the command line.
	PathsFile, KeyFile string
}

// WriteChannel writes, under dir, a binary cache of n small store paths
// of storeDir in Layers layers: each path of a layer but the first refers
// to one to four paths of the layer below. A path is a text file naming
// its references, content-addressed as builtins.toFile would make it, so
// stock Nix can substitute it; its narinfo is uncompressed, carries no CA
// (as a channel's input-addressed paths do, so only the signature vouches
// for it) and is signed by a fresh key. The same n gives the same paths.
func WriteChannel(ctx context.Context, dir string, storeDir storepath.Dir, n int) (*Channel, error) {
	if n < 1 {
		return nil, fmt.Errorf("cachetest: a channel of %d paths", n)
	}
	sk, pk, err := signing.Generate("channel-1")
	if err != nil {
		return nil, err
	}
	ch := &Channel{
		Dir:       filepath.Join(dir, "cache"),
		Key:       pk,
		PathsFile: filepath.Join(dir, "store-paths"),
		KeyFile:   filepath.Join(dir, "channel.pub"),
	}
	c, err := cache.CreateBatchedDir(ch.Dir, storeDir, 40)
	if err != nil {
		return nil, err
	}
	err = ch.fill(ctx, c, sk, n)
	if cerr := c.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("cachetest: %w", err)
	}
	var list strings.Builder
	for _, p := range ch.Paths {
		list.WriteString(p.String() + "\n")
	}
	err = errors.Join(
		os.WriteFile(ch.PathsFile, []byte(list.String()), 0o644),
		os.WriteFile(ch.KeyFile, []byte(pk.String()+"\n"), 0o644))
	if err != nil {
		return nil, fmt.Errorf("cachetest: %w", err)
	}
	return ch, nil
}

func (ch *Channel) fill(ctx context.Context, c *cache.Cache, sk signing.SecretKey, n int) error {
	rng := rand.New(rand.NewPCG(uint64(n), 17))
	layer := func(i int) int { return i * Layers / n }
	var body, narBuf bytes.Buffer
	for i := range n {
		var refs []storepath.Path
		if l := layer(i); l > 0 {
			lo, hi := (l-1)*n/Layers, l*n/Layers
			for range 1 + rng.IntN(4) {
				refs = append(refs, ch.Paths[lo+rng.IntN(hi-lo)])
			}
			slices.SortFunc(refs, storepath.Compare)
			refs = slices.Compact(refs)
		}
		body.Reset()
		fmt.Fprintf(&body, "package %d of a synthetic channel\n", i)
		for _, r := range refs {
			body.WriteString(r.String() + "\n")
		}
		sum := sha256.Sum256(body.Bytes())
		h, err := storepath.NewHash(storepath.SHA256, sum[:])
		if err != nil {
			return err
		}
		p, err := c.StoreDir().MakeText(h, "pkg-"+strconv.Itoa(i), refs)
		if err != nil {
			return err
		}
		narBuf.Reset()
		w := nar.NewWriter(&narBuf)
		if err := w.WriteHeader(&nar.Header{Path: "/", Type: nar.TypeRegular, Size: int64(body.Len())}); err != nil {
			return err
		}
		if _, err := w.Write(body.Bytes()); err != nil {
			return err
		}
		if err := w.Close(); err != nil {
			return err
		}
		f, st, err := c.AddNAR(ctx, &narBuf, "none", compression.WriterOptions{}, cache.NarStats{})
		if err != nil {
			return err
		}
		ni := &narinfo.NarInfo{
			StorePath: p, URL: f.URL, Compression: "none",
			FileHash: f.Hash, FileSize: uint64(f.Size),
			NarHash: st.NarHash, NarSize: uint64(st.NarSize),
			References: refs,
		}
		ni.Sign(sk)
		if err := c.PutNarInfo(ctx, ni); err != nil {
			return err
		}
		ch.Paths = append(ch.Paths, p)
	}
	return c.Sync(ctx)
}
