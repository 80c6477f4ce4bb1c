package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/check"
	"github.com/nix-airgap/nix-airgap/internal/flakeregistry"
	"github.com/nix-airgap/nix-airgap/internal/gc"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/pack"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Exit codes. ExitCodes says what each means; the README's table is
// checked against it. 1 to 8 want something fixed first; 75, a store or
// cache that did not answer, wants only another try later, so that a script or a
// systemd unit (RestartForceExitStatus=75) can tell the two apart. 75 is
// sysexits.h's EX_TEMPFAIL, which systemd shows as TEMPFAIL.
const (
	ExitOK          = 0   // success
	ExitFailure     = 1   // any failure without a more specific code
	ExitUsage       = 2   // bad command line: unknown command or flag, missing argument, a key that cannot be read, a bad gc --roots file or --auth-file, a pack --out in use, a pack --volume-size too small, a bundle or cache of another store dir
	ExitUntrusted   = 3   // a bundle or cache is unsigned, or not signed by a trusted key
	ExitCorrupt     = 4   // a file's size or hash is wrong, a file is unexpected, or it is no bundle or cache at all
	ExitMissing     = 5   // a file or bucket, an empty directory, an unfinished bundle's manifest, a store path or a referenced path is missing
	ExitBlocked     = 6   // check: something the targets need can be neither substituted nor built offline
	ExitNixFailed   = 7   // a nix program failed: an evaluation or build error, shown as Nix said it
	ExitNotBuilt    = 8   // --no-build, and some paths are neither in the store nor upstream
	ExitUnavailable = 75  // an object store, binary cache or channel's server did not answer (storage.ErrUnavailable), or Nix's download did not (nixcli.ErrNetwork): try again later
	ExitInterrupted = 130 // stopped by SIGINT or SIGTERM
)

// ExitCodeDoc is one row of the exit-code table. Short is what a
// command's help says of the code, in a line; Meaning is the whole of it.
type ExitCodeDoc struct {
	Code    int
	Short   string
	Meaning string
}

// ExitCodes is the one table of exit codes and their meanings: `nix-airgap
// help exit-codes` prints it, each command's help lists its rows' Short, and
// the README's copy is tested against it.
func ExitCodes() []ExitCodeDoc {
	return []ExitCodeDoc{
		{ExitOK, "success", "success"},
		{ExitFailure, "failure", "failure without a more specific code"},
		{ExitUsage, "bad command line", "bad command line: unknown command or flag, missing argument, a key argument that cannot be read as a key, a cache or bundle location of a scheme the command does not read (`http://` where a directory or `s3://` belongs), a `gc --roots` file that lists no store path or has a line that is not one, an `--auth-file` that cannot be read or holds no credentials, a `pack --out` that holds a bundle or file pack would replace, a `pack --volume-size` too small for the bundle, bundles or caches of another store dir than the one they are used with (`diff` of two store dirs, `import` into a cache of another, `verify --against` or `check --against` one)"},
		{ExitUntrusted, "unsigned, or not signed by a trusted key", "a bundle or cache is unsigned, or not signed by a trusted key"},
		{ExitCorrupt, "corrupt: a wrong size or hash, or not a bundle or cache at all", "corruption: a file's size or hash is wrong, a file is unexpected, or it is not a bundle or cache at all (a file or directory of other things, a bundle where a cache belongs or the reverse, a cache inventory where neither belongs)"},
		{ExitMissing, "missing: a file, bucket, unfinished bundle or store path", "missing pieces: a file or bucket, an empty directory, the manifest of a bundle whose pack did not finish, a store path, or a path a delta refers to"},
		{ExitBlocked, "blocked: needed, but neither substitutable nor buildable offline", "`check`: something the targets need can be neither substituted nor built offline"},
		{ExitNixFailed, "a nix program failed: an evaluation or build error", "a nix program failed (an evaluation or build error, shown as Nix said it)"},
		{ExitNotBuilt, "--no-build, and paths are neither in the store nor upstream", "`--no-build`, and some paths are neither in the store nor upstream"},
		{ExitUnavailable, "a store or server did not answer: try again later", "an object store, binary cache or channel's server did not answer, or a download of Nix's did not (a substituter, a fixed-output or evaluation-time fetch): the connection refused or cut, a timeout, a name that does not resolve, a 502, 503 or 504; or a bucket's lock could not be refreshed for four minutes and was given up; nothing to fix, try again later"},
		{ExitInterrupted, "interrupted", "interrupted by SIGINT or SIGTERM"},
	}
}

// exitCodeTable is the text of `nix-airgap help exit-codes`.
func exitCodeTable() string {
	var b strings.Builder
	b.WriteString("nix-airgap exits with one of these codes:\n\n")
	for _, c := range ExitCodes() {
		fmt.Fprintf(&b, "  %3d  %s\n", c.Code, strings.ReplaceAll(c.Meaning, "`", ""))
	}
	b.WriteString("\nEach command's help lists the codes it returns besides 0, 1, 2 and 130.")
	return b.String()
}

// exitHelp is the paragraph of a command's help that lists the codes it
// returns besides those every command may, a line each: help exit-codes
// says the whole of each.
func exitHelp(codes ...int) string {
	if len(codes) == 0 {
		return "Exit codes: 0, 1, 2 and 130 (see nix-airgap help exit-codes)."
	}
	var b strings.Builder
	b.WriteString("Exit codes besides 0, 1, 2 and 130 (see nix-airgap help exit-codes):")
	for _, c := range ExitCodes() {
		if slices.Contains(codes, c.Code) {
			// Right-aligned as in exitCodeTable, so that 75's meaning
			// starts where 4's does.
			fmt.Fprintf(&b, "\n  %3d  %s", c.Code, c.Short)
		}
	}
	return b.String()
}

// unavailableHint is the line that follows the error of a command whose
// store, binary cache or channel's server did not answer
// (ExitUnavailable): what to look at before trying again.
func unavailableHint(err error) string {
	switch {
	case errors.Is(err, nixcli.ErrNetwork):
		return "Nix could not download what it names: check this machine's network and that the server answers, then run the same command again"
	case errors.As(err, new(*pack.ChannelError)):
		return "The channel's server did not answer: check that it runs and that the URL's host and port are right, then run the same command again"
	case errors.As(err, new(*cache.NetError)) || errors.As(err, new(*cache.StatusError)):
		return "The binary cache did not answer: check that its server runs and that the URL's host and port are right, then run the same command again"
	}
	return "The object store did not answer: check that it runs and that the URL's endpoint is right, then run the same command again"
}

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
	case errors.As(err, &usage), errors.Is(err, storage.ErrBadLocation), errors.Is(err, storepath.ErrWrongDir):
		return ExitUsage
	case errors.Is(err, context.Canceled):
		return ExitInterrupted
	case errors.Is(err, storage.ErrUnavailable), errors.Is(err, nixcli.ErrNetwork):
		return ExitUnavailable
	case errors.Is(err, bundle.ErrUntrusted):
		return ExitUntrusted
	case errors.Is(err, bundle.ErrCorrupt), errors.Is(err, cache.ErrCorrupt), errors.Is(err, pack.ErrStoreCorrupt), errors.Is(err, gc.ErrDamaged),
		errors.Is(err, bundle.ErrNotBundle), errors.Is(err, bundle.ErrNotCache), errors.Is(err, check.ErrBadSource),
		errors.Is(err, flakeregistry.ErrInvalid):
		return ExitCorrupt
	case errors.Is(err, bundle.ErrMissing), errors.Is(err, cache.ErrNotFound), errors.Is(err, gc.ErrNoRoots):
		return ExitMissing
	case errors.Is(err, check.ErrBlocked):
		return ExitBlocked
	case errors.Is(err, plan.ErrMissing):
		return ExitNotBuilt
	case errors.As(err, new(*nixcli.ExitError)):
		return ExitNixFailed
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, nixcli.ErrInvalidPath), errors.Is(err, storage.ErrNoBucket):
		return ExitMissing
	}
	return ExitFailure
}
