package cli

import (
	"context"
	"errors"
)

// Exit codes. The README's table mirrors this one; keep them in step.
const (
	ExitOK          = 0   // success
	ExitFailure     = 1   // any failure without a more specific code
	ExitUsage       = 2   // bad command line: unknown command or flag, missing argument
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
	}
	return ExitFailure
}
