package server_test

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/server"
	"github.com/nix-airgap/nix-airgap/internal/storage/s3test"
)

// TestNarInfoStoreDown serves a bucket in front of a directory and then
// cuts the bucket's store off: a narinfo only the bucket may hold is a
// server error, which Nix retries and does not remember, not a miss,
// which a client remembers and answers by building; the directory still
// answers for what it holds.
func TestNarInfoStoreDown(t *testing.T) {
	s3 := s3test.Start(t)
	dir := filepath.Join(t.TempDir(), "cache")
	names := makeBenchCache(t, dir, 3, 64, 0)
	p := startProxy(t, s3.Endpoint)
	bucket := s3.Bucket(t)
	copyToBucket(t, dir, bucket)
	for _, n := range names.narinfos[:2] {
		if err := os.Remove(filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	viaProxy := strings.Replace(bucket, "endpoint="+s3.Endpoint, "endpoint="+p.addr, 1)
	_, base := testServer(t, server.Config{Dirs: []string{viaProxy, dir}, Log: slog.New(slog.DiscardHandler)})

	get := func(path string) int {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get(names.narinfos[0]); got != http.StatusOK {
		t.Fatalf("GET %s from the bucket: %d, want 200", names.narinfos[0], got)
	}
	p.close()
	for _, tt := range []struct {
		what, path string
		ok         bool
	}{
		{"a narinfo only the bucket has", names.narinfos[1], false},
		{"a narinfo the directory has", names.narinfos[2], true},
		{"a narinfo neither has", "/" + strings.Repeat("0", 32) + ".narinfo", false},
	} {
		got := get(tt.path)
		if tt.ok && got != http.StatusOK || !tt.ok && got < 500 {
			t.Errorf("GET %s (%s) with the bucket's store down: %d, want %s", tt.path, tt.what, got, map[bool]string{true: "200", false: "a 5xx"}[tt.ok])
		}
	}
}

// proxy forwards TCP connections to an address until closed, when it
// refuses new ones and cuts those open: a store gone down.
type proxy struct {
	addr  string
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func startProxy(t *testing.T, to string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: ln.Addr().String(), ln: ln}
	t.Cleanup(p.close)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", to)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
	return p
}

func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}
