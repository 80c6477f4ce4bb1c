package server_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/nix-airgap/nix-airgap/internal/server"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Serve a cache directory, signing every narinfo with the site's key, until
// SIGTERM.
func Example() {
	key, err := signing.LoadSecretKey("/etc/nix-airgap/site.sec")
	if err != nil {
		log.Fatal(err)
	}
	s, err := server.New(server.Config{Dirs: []string{"/srv/nix-cache"}, Key: &key})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	ln, err := net.Listen("tcp", ":8080")
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := s.Serve(ctx, ln); err != nil {
		log.Fatal(err)
	}
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
