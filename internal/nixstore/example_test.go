package nixstore_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"os"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/nixstore"
	"github.com/nix-airgap/nix-airgap/internal/signing"
)

// A Store serves what an isolated Nix store holds (the example needs the
// nix programs): a narinfo signed by the site key, and the NAR its URL
// names, dumped on the fly.
func Example() {
	ctx := context.Background()
	root, err := os.MkdirTemp("", "nixstore-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(root)
	env, err := nixcli.IsolatedEnv(root, "", "")
	if err != nil {
		log.Fatal(err)
	}
	nix := &nixcli.Runner{Env: env}
	added, err := nix.EvalRaw(ctx, "--expr", `builtins.toFile "greeting" "hello"`)
	if err != nil {
		log.Fatal(err)
	}
	sk, pk, err := signing.Generate("site-1")
	if err != nil {
		log.Fatal(err)
	}

	st, err := nixstore.Open(ctx, nixstore.Options{Nix: nix, Key: &sk})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	p, err := st.Dir().Parse(added)
	if err != nil {
		log.Fatal(err)
	}
	body, err := st.NarInfo(ctx, p.Hash)
	if err != nil {
		log.Fatal(err)
	}
	ni, err := narinfo.Parse(bytes.NewReader(body), st.Dir())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ni.StorePath.Name, ni.Compression, ni.NarSize, "signed:", ni.Verify(signing.NewKeyring(pk)))
	name, _ := cache.NarFileName(ni.URL)
	nar, err := st.OpenNAR(ctx, name)
	if err != nil {
		log.Fatal(err)
	}
	var out bytes.Buffer
	if err := nar.Dump(&out); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("NAR sent as zstd, magic %x\n", out.Bytes()[:4])
	// Output:
	// greeting zstd 120 signed: true
	// NAR sent as zstd, magic 28b52ffd
}
