// Package cli is nix-airgap's command line: it parses flags, sets up
// logging, runs the command and maps its error to an exit code.
package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// env is what every command gets from Run.
type env struct {
	stdout, stderr io.Writer
	log            *slog.Logger
}

// Run runs nix-airgap with args (without the program name). It prints the
// error, if any, to stderr and returns it for ExitCode.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	e := &env{stdout: stdout, stderr: stderr}
	var (
		logLevel  string
		logFormat string
		started   bool // set once flags parsed; an error before that is a usage error
	)
	root := &cobra.Command{
		Use:           "nix-airgap",
		Short:         "Carry what Nix needs across an airgap, and serve it there",
		Long:          "nix-airgap packs everything chosen Nix targets need into one signed bundle on a\nconnected machine, and verifies, imports and serves it to stock Nix inside an airgap.",
		SilenceErrors: true,
		SilenceUsage:  true,
		Version:       version(),
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(stderr, logLevel, logFormat)
			if err != nil {
				return usageError{err}
			}
			e.log = log
			started = true
			return nil
		},
	}
	root.PersistentFlags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().StringVar(&logFormat, "log-format", "text", "log format: text or json")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.SetArgs(joinNixArgs(args))
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(keygenCommand(e))
	root.AddCommand(demoCommand(e))
	root.AddCommand(serveCommand(e))
	root.AddCommand(clientConfigCommand(e))
	root.AddCommand(planCommand(e))
	root.AddCommand(packCommand(e))
	root.AddCommand(verifyCommand(e))
	root.AddCommand(importCommand(e))
	root.AddCommand(checkCommand(e))
	root.AddCommand(showCommand(e))
	root.AddCommand(diffCommand(e))

	err := root.ExecuteContext(ctx)
	if err != nil && !started {
		err = usageError{err}
	}
	if err != nil {
		fmt.Fprintf(stderr, "nix-airgap: %v\n", err)
	}
	return err
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// version is the module version stamped by the Go toolchain, plus the VCS
// revision when built from a checkout.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := info.Main.Version
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " (" + s.Value[:12] + ")"
		}
	}
	return v
}

// exactArgs is cobra.ExactArgs returning a usage error.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(n)(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}
