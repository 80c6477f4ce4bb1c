package server_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/server"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Serve a cache directory on a loopback port, signing every narinfo
// with the site's key, until the context ends; stock Nix then uses the URL
// as a substituter.
func Example() {
	root, err := os.MkdirTemp("", "server-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(root)
	if _, err := cache.CreateDir(root, "/nix/store", 0); err != nil {
		log.Fatal(err)
	}
	key, _, err := signing.Generate("site-1")
	if err != nil {
		log.Fatal(err)
	}
	s, err := server.New(server.Config{Dirs: []string{root}, Key: &key})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln) }()

	resp, err := http.Get("http://" + ln.Addr().String() + "/nix-cache-info")
	if err != nil {
		log.Fatal(err)
	}
	io.Copy(os.Stdout, resp.Body)
	resp.Body.Close()
	stop()
	fmt.Println("stopped:", <-served)
	// Output:
	// StoreDir: /nix/store
	// WantMassQuery: 1
	// Priority: 40
	// stopped: <nil>
}

func ExampleParseMirrorPath() {
	for _, p := range []string{
		"/sha256/ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
		"//sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=",
		"/nar/x.nar.xz",
	} {
		h, ok := server.ParseMirrorPath(p)
		fmt.Println(ok, h.Algo == storepath.SHA256 && ok)
	}
	// Output:
	// true true
	// true true
	// false false
}
