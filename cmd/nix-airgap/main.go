// Command nix-airgap packs what Nix targets need into signed bundles on a
// connected machine and serves them to stock Nix inside an airgap.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/nix-airgap/nix-airgap/internal/cli"
)

func main() {
	// pack and import stream gigabytes through buffers that would pile up
	// as garbage between collections: a soft limit keeps the resident set
	// near what is live. GOMEMLIMIT still overrides it.
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(cli.ExitCode(err))
}

// memoryLimit is the default soft memory limit, well above what any
// command keeps live.
const memoryLimit = 160 << 20

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return cli.Run(ctx, args, stdout, stderr)
}
