// Package nixcli is the one place in nix-airgap that runs the nix
// programs. It is a thin adapter: each call runs one command, parses its
// output into Go types, and turns a failure into an *ExitError that shows
// Nix's own message.
//
// It works with Nix 2.8 and with newer Nix, Lix and Determinate Nix. The
// detected version picks the command (nix show-derivation or nix
// derivation show, nix show-config or nix config show); the parsers accept
// every JSON shape those versions print, whatever the version, and
// normalise them into one set of structs.
package nixcli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// ErrUnexpectedOutput reports output of a nix program that nixcli cannot
// parse.
var ErrUnexpectedOutput = errors.New("unexpected output from nix")

// ErrInvalidPath reports a store path that is not valid (not present) in
// the store.
var ErrInvalidPath = errors.New("store path is not valid")

// ErrUnsupported reports a Nix feature nixcli does not handle, such as
// dynamic derivation outputs.
var ErrUnsupported = errors.New("unsupported by nixcli")

// ErrLockNotWritten is Nix's refusal to write a flake's new or changed
// lock file where it cannot, as for a registry (flake:ID) or remote
// reference: an *ExitError whose message says so is it, for errors.Is.
var ErrLockNotWritten = errors.New("nix did not write the flake's lock file")

// stderrMax bounds how much of a program's stderr is kept for its error.
const stderrMax = 64 << 10

// cancelGrace is how long a program has to exit after SIGINT (which Nix
// handles by cleaning up) before it is killed.
const cancelGrace = 5 * time.Second

// experimentalFeatures is passed to every nix (not nix-store or
// nix-instantiate) call, so the new CLI works on a stock nix.conf.
const experimentalFeatures = "nix-command flakes"

// Runner runs the nix programs. The zero value is ready to use. A Runner
// caches the Nix version and store dir on first use, so it must not be
// copied after first use; it is safe for concurrent use.
type Runner struct {
	// Env is the programs' complete environment; nil means os.Environ().
	Env []string
	// Dir is the programs' working directory; "" means the current one.
	Dir string
	// Log gets a debug record per command; nil discards them.
	Log *slog.Logger
	// Nix, NixStore and NixInstantiate are the programs to run; "" means
	// "nix", "nix-store" and "nix-instantiate" from PATH.
	Nix, NixStore, NixInstantiate string
	// KnownStoreDir is the store dir output paths are parsed in; ""
	// means asking Nix (see Runner.StoreDir).
	KnownStoreDir storepath.Dir
	// Store is the Nix store the programs use (their --store); "" means
	// Nix's own choice.
	Store string
	// EvalArgs go to the programs that evaluate Nix expressions
	// (Instantiate, FindFile, DerivationPaths), after their other
	// arguments: -I PATH and --show-trace, as nix-build takes them.
	EvalArgs []string

	// What is asked once per Runner, each under its own lock so that
	// they can be asked at once.
	versionMu  sync.Mutex
	version    *Version
	storeDirMu sync.Mutex
	storeDir   storepath.Dir
	configMu   sync.Mutex
	config     *Config
}

// ExitError is a nix program that failed. Its message is Nix's own error
// text, so users see an evaluation or build error as nix-build shows it
// (naming the derivation or expression): the command line nix-airgap ran
// and its exit status are in the debug log (--log-level debug).
type ExitError struct {
	Cmd    []string // program and arguments
	Stderr []byte   // the last 64 KiB of stderr
	Err    error    // usually an *exec.ExitError
	// network: Nix failed only for want of a server's answer (ErrNetwork).
	network bool
}

func (e *ExitError) Error() string {
	if m := e.NixMessage(); m != "" {
		return strings.TrimPrefix(m, "error: ")
	}
	// Nix said nothing: name the program and what it was run on.
	subject := e.Cmd[:1]
	if i := slices.Index(e.Cmd, "--"); i > 0 {
		subject = append(subject[:1:1], e.Cmd[i+1:]...)
	}
	return fmt.Sprintf("%s: %v", shortCommand(subject), e.Err)
}

func (e *ExitError) Unwrap() error { return e.Err }

// Is reports whether e is ErrLockNotWritten: every Nix from 2.8 to 2.34
// says "cannot write modified lock file of flake 'REF' (use
// '--no-write-lock-file' to ignore)"; or ErrNetwork.
func (e *ExitError) Is(target error) bool {
	switch target {
	case ErrLockNotWritten:
		return strings.Contains(e.NixMessage(), "cannot write modified lock file of flake")
	case ErrNetwork:
		return e.network
	}
	return false
}

var ansiEscape = regexp.MustCompile("\x1b\\[[0-9;]*[A-Za-z]")

// NixMessage is the part of stderr Nix meant as the error: from the first
// line starting "error:" to the end, or failing that the last few lines.
func (e *ExitError) NixMessage() string {
	s := ansiEscape.ReplaceAllString(string(e.Stderr), "")
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	start := max(0, len(lines)-5)
	for i, l := range lines {
		if strings.HasPrefix(l, "error:") {
			start = i
			break
		}
	}
	const maxLines = 50
	if len(lines)-start > maxLines {
		lines = append(lines[start:start+maxLines-1], "…")
		start = 0
	}
	return strings.TrimSpace(strings.Join(lines[start:], "\n"))
}

// shortCommand renders a command for a message, eliding long path lists.
func shortCommand(cmd []string) string {
	const maxArgs = 8
	if len(cmd) > maxArgs {
		return fmt.Sprintf("%s … (%d more args)", strings.Join(cmd[:maxArgs], " "), len(cmd)-maxArgs)
	}
	return strings.Join(cmd, " ")
}

func (r *Runner) logger() *slog.Logger {
	if r.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Log
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func (r *Runner) nix() string            { return orDefault(r.Nix, "nix") }
func (r *Runner) nixStore() string       { return orDefault(r.NixStore, "nix-store") }
func (r *Runner) nixInstantiate() string { return orDefault(r.NixInstantiate, "nix-instantiate") }

// nixArgs prefixes a new-CLI subcommand with the experimental features it
// needs.
func nixArgs(args ...string) []string {
	return append([]string{"--extra-experimental-features", experimentalFeatures}, args...)
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	buf []byte
}

func (t *tailBuffer) Tail() []byte { return t.buf }

// NetworkFailed reports whether the innermost of Nix's errors is a
// network failure.
func (t *tailBuffer) NetworkFailed() bool {
	return isNetworkError(lastErrorLine(ansiEscape.ReplaceAllString(string(t.buf), "")))
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

// stream runs prog with args and hands its stdout to read while it runs.
// Whatever read leaves is drained. A failed program's *ExitError wins
// over read's error, which is usually a symptom of the failure.
func (r *Runner) stream(ctx context.Context, prog string, args []string, read func(io.Reader) error) error {
	return r.streamStderr(ctx, prog, args, &tailBuffer{max: stderrMax}, read)
}

// stderrSink takes a program's stderr and gives the part an *ExitError
// shows, and whether the program failed for want of network (ErrNetwork).
type stderrSink interface {
	io.Writer
	Tail() []byte
	NetworkFailed() bool
}

// streamStderr is stream with stderr going to a sink of the caller's.
func (r *Runner) streamStderr(ctx context.Context, prog string, args []string, stderr stderrSink, read func(io.Reader) error) error {
	if r.Store != "" {
		args = append([]string{"--store", r.Store}, args...)
	}
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Env = r.Env
	cmd.Dir = r.Dir
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = cancelGrace
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("run %s: %w", prog, err)
	}
	full := append([]string{prog}, args...)
	log := r.logger()
	log.DebugContext(ctx, "run nix", "cmd", shortCommand(full))
	start := time.Now()
	if err := cmd.Start(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return fmt.Errorf("run %s: %w: this needs Nix on PATH (on Debian or Ubuntu: apt-get install nix-bin)", prog, err)
		}
		return fmt.Errorf("run %s: %w", prog, err)
	}
	readErr := read(stdout)
	_, _ = io.Copy(io.Discard, stdout)
	waitErr := cmd.Wait()
	log.DebugContext(ctx, "ran nix", "cmd", shortCommand(full), "duration", time.Since(start), "err", waitErr)
	if waitErr != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", shortCommand(full), context.Cause(ctx))
		}
		return &ExitError{Cmd: full, Stderr: stderr.Tail(), Err: waitErr, network: stderr.NetworkFailed()}
	}
	if readErr != nil {
		return fmt.Errorf("%s: %w", shortCommand(full), readErr)
	}
	return nil
}

// output runs prog and returns its whole stdout, for small outputs.
func (r *Runner) output(ctx context.Context, prog string, args ...string) ([]byte, error) {
	var out []byte
	err := r.stream(ctx, prog, args, func(rd io.Reader) error {
		var err error
		out, err = io.ReadAll(rd)
		return err
	})
	return out, err
}

// lines runs prog and calls fn for each non-empty line of stdout, without
// holding the whole output.
func (r *Runner) lines(ctx context.Context, prog string, args []string, fn func(string) error) error {
	return r.stream(ctx, prog, args, scanLines(fn))
}

// scanLines reads lines, calling fn for each that is not blank.
func scanLines(fn func(string) error) func(io.Reader) error {
	return func(rd io.Reader) error {
		sc := bufio.NewScanner(rd)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" {
				continue
			}
			if err := fn(line); err != nil {
				return err
			}
		}
		return sc.Err()
	}
}

// Version returns the version of r's nix program, running nix --version
// once per Runner.
func (r *Runner) Version(ctx context.Context) (Version, error) {
	r.versionMu.Lock()
	defer r.versionMu.Unlock()
	if r.version != nil {
		return *r.version, nil
	}
	out, err := r.output(ctx, r.nix(), "--version")
	if err != nil {
		return Version{}, err
	}
	v, err := ParseVersion(string(bytes.TrimSpace(out)))
	if err != nil {
		return Version{}, err
	}
	r.version = &v
	return v, nil
}
