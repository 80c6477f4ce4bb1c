package pack

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/channel"
	"github.com/nix-airgap/nix-airgap/internal/compression"
	"github.com/nix-airgap/nix-airgap/internal/storage"
)

// Channel is a nixpkgs channel to carry (pack --channel NAME=SOURCE).
// Its targets are packed like any others (--file, --attr), so that its
// sources and build closure go along.
type Channel struct {
	// Name is the channel's name on the airgapped side: nix-channel
	// --add URL/channels/NAME NAME, and <NAME>.
	Name string
	// Source is a nixexprs tarball (a file, or an http(s) URL), a nixpkgs
	// directory, or a NIX_PATH lookup such as <nixpkgs>, which the local
	// Nix resolves.
	Source string
}

// ParseChannel parses NAME=SOURCE.
func ParseChannel(s string) (Channel, error) {
	name, src, ok := strings.Cut(s, "=")
	if !ok || src == "" {
		return Channel{}, fmt.Errorf("channel %q: want NAME=SOURCE (a nixexprs tarball or its URL, a nixpkgs directory, or <nixpkgs>)", s)
	}
	if err := channel.CheckName(name); err != nil {
		return Channel{}, err
	}
	return Channel{Name: name, Source: src}, nil
}

// ChannelError is a channel pack could not pack: its error tells a
// channel's server that did not answer from a binary cache's.
type ChannelError struct {
	Name string // as Channel's
	Err  error
}

func (e *ChannelError) Error() string { return fmt.Sprintf("pack: channel %s: %v", e.Name, e.Err) }
func (e *ChannelError) Unwrap() error { return e.Err }

// addChannels adds every channel of opts to w, each made in a temp file
// and checked as Nix will unpack it before it goes in, unless a base
// carries the very same tarball. It returns the channels left out, with
// their tarballs' sha256.
func (p *Packer) addChannels(ctx context.Context, w *bundle.Writer, opts Options, bases *bundle.Bases) (map[string][]byte, error) {
	same := map[string][]byte{}
	for _, c := range opts.Channels {
		sum, added, err := p.addChannel(ctx, w, c, opts, bases)
		if err != nil {
			return nil, &ChannelError{Name: c.Name, Err: err}
		}
		if !added {
			same[c.Name] = sum
		}
	}
	return same, nil
}

// checkChannels finds, before anything is planned or written, a channel
// whose local source is not there: a <NAME> the local Nix does not find,
// or a missing file or directory, which would otherwise fail the pack at
// its end, after every path was copied. A URL is fetched only then.
func (p *Packer) checkChannels(ctx context.Context, opts Options) error {
	for _, c := range opts.Channels {
		src, err := p.channelSource(ctx, c)
		if err == nil && !cache.IsHTTP(src) {
			_, err = os.Stat(src)
		}
		if err != nil {
			return &ChannelError{Name: c.Name, Err: err}
		}
	}
	return nil
}

// channelSource is c's source, with a <NAME> resolved by the local Nix.
func (p *Packer) channelSource(ctx context.Context, c Channel) (string, error) {
	if name, ok := strings.CutPrefix(c.Source, "<"); ok && strings.HasSuffix(name, ">") {
		return p.nix().FindFile(ctx, strings.TrimSuffix(name, ">"))
	}
	return c.Source, nil
}

// addChannel writes channel c's nixexprs tarball into w, checked, unless
// the bases carry the very same tarball: it returns the tarball's sha256
// and whether it added it. It is made in a temp file first, as its hash
// decides whether it goes in at all.
func (p *Packer) addChannel(ctx context.Context, w *bundle.Writer, c Channel, opts Options, bases *bundle.Bases) (sum []byte, added bool, err error) {
	src, err := p.channelSource(ctx, c)
	if err != nil {
		return nil, false, err
	}
	// The source as shown and recorded: a URL's password stays out.
	shown := storage.Redact(c.Source)
	p.log().Info("packing channel", "channel", c.Name, "source", shown, "from", storage.Redact(src))
	tmp, err := os.CreateTemp(opts.TempDir, "nix-airgap-channel-*.tar.xz")
	if err != nil {
		return nil, false, err
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	xz := compression.WriterOptions{XZProgram: opts.XZProgram}
	h := sha256.New()
	if err := writeChannel(ctx, p.HTTPClient, io.MultiWriter(tmp, h), src, c.Name, xz); err != nil {
		return nil, false, err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return nil, false, err
	}
	if _, err := channel.Check(tmp); err != nil {
		return nil, false, fmt.Errorf("%s: %w", shown, err)
	}
	sum = h.Sum(nil)
	if bases.HasChannel(c.Name, sum) {
		p.log().Info("leaving out a channel the bases carry as it is", "channel", c.Name)
		return sum, false, nil
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return nil, false, err
	}
	return sum, true, w.AddChannel(c.Name, shown, tmp)
}

// writeChannel writes the channel tarball of src (a URL, a tarball or a
// directory, whose tarball's top directory is named top) to w, fetching
// a URL with client (nil means cache.NewHTTPClient()).
func writeChannel(ctx context.Context, client *http.Client, w io.Writer, src, top string, xz compression.WriterOptions) error {
	if cache.IsHTTP(src) {
		if client == nil {
			client = cache.NewHTTPClient()
		}
		// As a binary cache's request: a server that does not answer,
		// or answers 502, 503 or 504, is unavailable (exit 75).
		resp, err := cache.Get(ctx, client, http.MethodGet, src)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return channel.FromTarball(w, resp.Body, xz)
	}
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return channel.FromDir(ctx, w, src, top, xz)
	}
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	return channel.FromTarball(w, f, xz)
}
