// synth-upstream writes a synthetic upstream binary cache the size of a
// channel, for measuring plan, pack, import and serve at scale
// (bench/plan-channel.sh):
//
//	synth-upstream DIR N
//
// DIR/cache gets N small store paths of /nix/store in 40 layers, each
// referring to one to four paths of the layer below, with narinfos signed
// by a fresh key (DIR/channel.pub); DIR/store-paths lists them all
// (cachetest.WriteChannel, which the CI test TestChannel uses too).
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"github.com/nix-airgap/nix-airgap/internal/cache/cachetest"
)

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
	if _, err := cachetest.WriteChannel(context.Background(), os.Args[1], "/nix/store", n); err != nil {
		fmt.Fprintln(os.Stderr, "synth-upstream:", err)
		os.Exit(1)
	}
}
