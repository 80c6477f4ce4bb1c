package pack_test

import (
	"context"
	"log/slog"
	"os"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/cli"
)

// asMain makes the test binary act as nix-airgap itself, so that a test
// can run (and kill) the real command line in a child process without a
// Go toolchain, as in the Nix matrix's chroots.
const asMain = "NIX_AIRGAP_PACK_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMain) == "1" {
		err := cli.Run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)
		os.Exit(cli.ExitCode(err))
	}
	os.Exit(m.Run())
}

// testLogger logs to the test's output.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func openDir(t testing.TB, dir string) *cache.Cache {
	t.Helper()
	d, err := cache.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}
