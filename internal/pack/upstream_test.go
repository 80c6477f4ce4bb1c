package pack_test

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/pack"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/signing"
)

// TestUpstream packs the world's runtime closure when the toplevel and
// hello are gone from the store but on an upstream cache made by nix copy
// and signed by its own key: those are copied verbatim, signatures kept,
// the rest dumped from the store. A corrupt NAR and a failing server make
// pack try the next upstream, and with no other upstream, build.
func TestUpstream(t *testing.T) {
	f := newFixture(t)
	hello := f.outs["hello"]
	upKey, upPub, err := signing.Generate("upstream-test-1")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "up.sec")
	if err := os.WriteFile(keyFile, []byte(upKey.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	up := filepath.Join(t.TempDir(), "up")
	f.n.Run(t, "nix", "copy", "--to", "file://"+up+"?secret-key="+keyFile, f.top)
	// Upstream lacks the libraries; the store lacks what upstream has.
	for _, p := range []string{f.outs["libgreet"], f.outs["libbase"]} {
		if err := os.Remove(filepath.Join(up, hashPart(p)+".narinfo")); err != nil {
			t.Fatal(err)
		}
	}
	f.n.Run(t, "nix-store", "--delete", f.top, hello)

	upDir := openDir(t, up)
	upInfo := map[string]*narinfo.NarInfo{}
	for _, p := range []string{f.top, hello} {
		ni, err := upDir.NarInfo(t.Context(), hashPart(p))
		if err != nil {
			t.Fatal(err)
		}
		upInfo[p] = ni
	}
	good := httptest.NewServer(http.FileServer(http.Dir(up)))
	t.Cleanup(good.Close)
	// The bad upstream serves the same narinfos, a corrupt NAR for the
	// toplevel and a server error for hello's.
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch strings.TrimPrefix(r.URL.Path, "/") {
		case upInfo[f.top].URL:
			b, err := os.ReadFile(filepath.Join(up, upInfo[f.top].URL))
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			b[len(b)/2] ^= 0xff
			w.Write(b)
		case upInfo[hello].URL:
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		default:
			http.FileServer(http.Dir(up)).ServeHTTP(w, r)
		}
	}))
	t.Cleanup(bad.Close)

	open := func(url string) plan.Upstream {
		h, err := cache.OpenHTTP(t.Context(), url, nil)
		if err != nil {
			t.Fatal(err)
		}
		return plan.Upstream{URL: url, Cache: cache.WithRetry(h, 2, time.Millisecond)}
	}
	packer := func(urls ...string) (*pack.Packer, *nixtest.SyncBuffer) {
		p := *f.packer
		pl := *p.Planner
		pl.TrustedKeys = signing.NewKeyring(upPub)
		pl.Upstreams = nil
		for _, u := range urls {
			pl.Upstreams = append(pl.Upstreams, open(u))
		}
		p.Planner = &pl
		var logs nixtest.SyncBuffer
		p.Log = slog.New(slog.NewTextHandler(&logs, nil))
		return &p, &logs
	}
	runtime := plan.Options{Mode: role.ModeRuntime}
	// packChecked packs with upstreams urls and checks where each path
	// came from and the origins the manifest records, naming key for an
	// upstream's.
	packChecked := func(t *testing.T, want map[string]string, key string, urls ...string) (out string, logs *nixtest.SyncBuffer) {
		t.Helper()
		p, logs := packer(urls...)
		out = filepath.Join(t.TempDir(), "b")
		res, err := p.Pack(t.Context(), f.targets(t), pack.Options{Options: runtime, Out: out, Key: &f.key})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, resultSources(res)); diff != "" {
			t.Errorf("sources (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(origins(want, key), manifestOrigins(f.verify(t, out).Manifest)); diff != "" {
			t.Errorf("manifest origins (-want +got):\n%s", diff)
		}
		return out, logs
	}
	wantSources := map[string]string{
		f.top: good.URL, hello: good.URL,
		f.outs["libgreet"]: pack.SourceStore, f.outs["libbase"]: pack.SourceStore,
	}

	t.Run("verbatim", func(t *testing.T) {
		out, _ := packChecked(t, wantSources, "upstream-test-1", good.URL)
		b := openDir(t, out)
		for _, path := range []string{f.top, hello} {
			ni, err := b.NarInfo(t.Context(), hashPart(path))
			if err != nil {
				t.Fatal(err)
			}
			want := upInfo[path]
			if !ni.Verify(signing.NewKeyring(upPub)) || !ni.Verify(signing.NewKeyring(f.key.Public())) {
				t.Errorf("%s: narinfo signatures %v, want valid ones by the upstream and bundle keys", path, ni.Sigs)
			}
			if !ni.FileHash.Equal(want.FileHash) || ni.FileSize != want.FileSize || ni.Compression != want.Compression {
				t.Errorf("%s: file %s %d %s, upstream's is %s %d %s", path, ni.FileHash, ni.FileSize, ni.Compression, want.FileHash, want.FileSize, want.Compression)
			}
			got, err := os.ReadFile(filepath.Join(out, ni.URL))
			if err != nil {
				t.Fatal(err)
			}
			orig, err := os.ReadFile(filepath.Join(up, want.URL))
			if err != nil || !bytes.Equal(got, orig) {
				t.Errorf("%s: NAR file differs from upstream's (%v)", path, err)
			}
		}
		// Nothing was realised: the store still lacks the copied paths.
		if _, err := os.Stat(f.top); err == nil {
			t.Errorf("%s appeared in the store", f.top)
		}
	})

	t.Run("next upstream", func(t *testing.T) {
		_, logs := packChecked(t, wantSources, "upstream-test-1", bad.URL, good.URL)
		if got := strings.Count(logs.String(), "upstream copy failed, trying the next source"); got != 2 || !strings.Contains(logs.String(), bad.URL) {
			t.Errorf("logged %d failed copies, want 2 naming %s:\n%s", got, bad.URL, logs)
		}
	})

	t.Run("build", func(t *testing.T) {
		want := map[string]string{
			f.top: pack.SourceBuild, hello: pack.SourceBuild,
			f.outs["libgreet"]: pack.SourceStore, f.outs["libbase"]: pack.SourceStore,
		}
		packChecked(t, want, "", bad.URL)
	})
}

// origins spells pack sources as manifestOrigins does: an upstream URL
// becomes "upstream URL KEY".
func origins(sources map[string]string, key string) map[string]string {
	out := map[string]string{}
	for p, src := range sources {
		if src != pack.SourceStore && src != pack.SourceBuild {
			src = "upstream " + src + " " + key
		}
		out[p] = src
	}
	return out
}

// manifestOrigins spells each path's origin "FROM[ URL KEYS]".
func manifestOrigins(m *bundle.Manifest) map[string]string {
	out := map[string]string{}
	for _, e := range m.Paths {
		s := "none"
		if o := e.Origin; o != nil {
			s = o.From
			if o.From == bundle.FromUpstream {
				s += " " + o.URL + " " + strings.Join(o.Keys, ",")
			}
		}
		out[e.Path.String()] = s
	}
	return out
}

func hashPart(p string) string {
	return strings.SplitN(filepath.Base(p), "-", 2)[0]
}
