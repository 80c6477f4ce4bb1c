// synth-upstream writes a synthetic upstream binary cache the size of a
// channel, for measuring plan and pack at scale (bench/plan-channel.sh):
//
//	synth-upstream DIR N
//
// DIR/cache gets N store paths in /nix/store, each a small NAR holding
// one file, with narinfos signed by a fresh key (DIR/upstream.pub) and
// references to one to four paths of the layer below, in 40 layers (wide
// and shallow, like a channel); DIR/store-paths.txt lists them all.
package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/nix-community/go-nix/pkg/nixbase32"
)

func nix32(b []byte) string { return nixbase32.EncodeToString(b) }

func str(w *bytes.Buffer, s []byte) {
	var l [8]byte
	binary.LittleEndian.PutUint64(l[:], uint64(len(s)))
	w.Write(l[:])
	w.Write(s)
	if p := len(s) % 8; p != 0 {
		w.Write(make([]byte, 8-p))
	}
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: synth-upstream DIR N")
		os.Exit(2)
	}
	n, err := strconv.Atoi(os.Args[2])
	if err != nil || n < 1 {
		fmt.Fprintln(os.Stderr, "synth-upstream: N must be a positive number")
		os.Exit(2)
	}
	top := os.Args[1]
	dir := filepath.Join(top, "cache")
	if err := os.MkdirAll(filepath.Join(dir, "nar"), 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "synth-upstream:", err)
		os.Exit(1)
	}
	os.WriteFile(filepath.Join(dir, "nix-cache-info"), []byte("StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n"), 0o644)
	pub, priv, _ := ed25519.GenerateKey(nil)
	os.WriteFile(filepath.Join(top, "upstream.pub"), []byte("upstream-1:"+base64.StdEncoding.EncodeToString(pub)+"\n"), 0o644)
	rng := rand.New(rand.NewPCG(7, 7))
	paths := make([]string, n)
	layer := make([]int, n)
	var list strings.Builder
	const layers = 40
	for i := range n {
		var h [20]byte
		for j := range h {
			h[j] = byte(rng.Uint32())
		}
		paths[i] = "/nix/store/" + nix32(h[:]) + "-pkg-" + strconv.Itoa(i)
		layer[i] = i * layers / n
	}
	for i := range n {
		var refs []string
		if layer[i] > 0 {
			lo := (layer[i] - 1) * n / layers
			hi := layer[i] * n / layers
			for range 1 + rng.IntN(4) {
				refs = append(refs, paths[lo+rng.IntN(hi-lo)])
			}
		}
		var nar bytes.Buffer
		for _, s := range []string{"nix-archive-1", "(", "type", "regular", "contents"} {
			str(&nar, []byte(s))
		}
		content := []byte(fmt.Sprintf("package %d\n%s\n", i, strings.Join(refs, "\n")))
		str(&nar, content)
		str(&nar, []byte(")"))
		sum := sha256.Sum256(nar.Bytes())
		url := "nar/" + nix32(sum[:]) + ".nar"
		if err := os.WriteFile(filepath.Join(dir, url), nar.Bytes(), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "synth-upstream:", err)
			os.Exit(1)
		}
		slices.Sort(refs)
		rs := slices.Compact(refs)
		narHash := "sha256:" + nix32(sum[:])
		fp := fmt.Sprintf("1;%s;%s;%d;%s", paths[i], narHash, nar.Len(), strings.Join(rs, ","))
		sig := base64.StdEncoding.EncodeToString(ed25519.Sign(priv, []byte(fp)))
		var bases []string
		for _, r := range rs {
			bases = append(bases, strings.TrimPrefix(r, "/nix/store/"))
		}
		ni := fmt.Sprintf("StorePath: %s\nURL: %s\nCompression: none\nFileHash: %s\nFileSize: %d\nNarHash: %s\nNarSize: %d\nReferences: %s\nSig: upstream-1:%s\n",
			paths[i], url, narHash, nar.Len(), narHash, nar.Len(), strings.Join(bases, " "), sig)
		os.WriteFile(filepath.Join(dir, strings.TrimPrefix(paths[i], "/nix/store/")[:32]+".narinfo"), []byte(ni), 0o644)
		list.WriteString(paths[i] + "\n")
	}
	os.WriteFile(filepath.Join(top, "store-paths.txt"), []byte(list.String()), 0o644)
}
