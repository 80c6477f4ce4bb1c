package cli

import (
	"context"
	"errors"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/check"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/pack"
	"github.com/nix-airgap/nix-airgap/internal/plan"
)

// Exit codes. The README's table mirrors this one; keep them in step.
const (
	ExitOK          = 0   // success
	ExitFailure     = 1   // any failure without a more specific code
	ExitUsage       = 2   // bad command line: unknown command or flag, missing argument
	ExitUntrusted   = 3   // a bundle or cache is unsigned, or not signed by a trusted key
	ExitCorrupt     = 4   // a file's size or hash is wrong, or a file is unexpected
	ExitMissing     = 5   // a file, a referenced path or a base bundle is missing
	ExitBlocked     = 6   // check: something the targets need can be neither substituted nor built offline
	ExitNixFailed   = 7   // a nix program failed: an evaluation or build error, shown as Nix said it
	ExitNotBuilt    = 8   // --no-build, and some paths are neither in the store nor upstream
	ExitInterrupted = 130 // stopped by SIGINT or SIGTERM
)

// usageError marks an error in the command line itself.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// ExitCode maps an error returned by Run to the process exit code.
func ExitCode(err error) int {
	var usage usageError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &usage):
		return ExitUsage
	case errors.Is(err, context.Canceled):
		return ExitInterrupted
	case errors.Is(err, bundle.ErrUntrusted):
		return ExitUntrusted
	case errors.Is(err, bundle.ErrCorrupt), errors.Is(err, cache.ErrCorrupt), errors.Is(err, pack.ErrStoreCorrupt):
		return ExitCorrupt
	case errors.Is(err, bundle.ErrMissing), errors.Is(err, cache.ErrNotFound):
		return ExitMissing
	case errors.Is(err, check.ErrBlocked):
		return ExitBlocked
	case errors.Is(err, plan.ErrMissing):
		return ExitNotBuilt
	case errors.As(err, new(*nixcli.ExitError)):
		return ExitNixFailed
	}
	return ExitFailure
}
