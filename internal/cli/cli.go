// Package cli is nix-airgap's command line: it parses flags, sets up
// logging, runs the command and maps its error to an exit code.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/nix-airgap/nix-airgap/docs"
	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/progress"
	"github.com/nix-airgap/nix-airgap/internal/storage"
)

// env is what every command gets from Run.
type env struct {
	stdout, stderr io.Writer
	log            *slog.Logger
}

// Run runs nix-airgap with args (without the program name). It prints the
// error, if any, to stderr and returns it for ExitCode.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	// Everything written to stderr goes through one Term, so that log
	// lines and a progress status line never write over each other.
	term := progress.NewTerm(stderr, isTerminal(stderr))
	e := &env{stdout: stdout, stderr: term}
	var (
		logFormat string
		started   bool // set once flags parsed; an error before that is a usage error
	)
	root := &cobra.Command{
		Use:   "nix-airgap",
		Short: "Carry what Nix needs across an airgap, and serve it there",
		Long: "nix-airgap packs everything chosen Nix targets need into one signed bundle on\n" +
			"a connected machine, and verifies, imports and serves it to stock Nix inside an\n" +
			"airgap.\n\n" +
			keyHelp + "\n\n" + logHelp + "\n\n" +
			"Details: nix-airgap help COMMAND --details (docs/commands.md), and\n" +
			"docs/guide.md for the life of an airgap.",
		Example: "  nix-airgap pack .#nixosConfigurations.gateway --secret-key ~/keys/site.sec --out /media/usb/bundle-1  # online\n" +
			"  nix-airgap import /media/usb/bundle-1 --cache /srv/nix-cache --public-key ~/keys/site.pub           # offline\n" +
			"  nix-airgap serve /srv/nix-cache --listen 0.0.0.0:8080 --secret-key ~/keys/cache.sec                 # offline",
		SilenceErrors: true,
		SilenceUsage:  true,
		Version:       toolVersion(),
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if err := checkS3URLs(cmd, args); err != nil {
				return usageError{err}
			}
			// The command's own --log-level (serve's), else the global one.
			level := cmd.Flags().Lookup("log-level").Value.String()
			log, err := newLogger(term, level, logFormat)
			if err != nil {
				return usageError{err}
			}
			e.log = log
			started = true
			return nil
		},
	}
	root.PersistentFlags().String("log-level", "warn", logLevelUsage+"; serve's is info")
	root.PersistentFlags().StringVar(&logFormat, "log-format", "text", "log `FORMAT`: text, for people, or json")
	root.SetFlagErrorFunc(flagError)
	root.SetArgs(joinNixArgs(args))
	root.SetOut(stdout)
	root.SetErr(term)
	root.AddCommand(keygenCommand(e))
	root.AddCommand(demoCommand(e))
	root.AddCommand(serveCommand(e))
	root.AddCommand(clientConfigCommand(e))
	root.AddCommand(planCommand(e))
	root.AddCommand(packCommand(e))
	root.AddCommand(verifyCommand(e))
	root.AddCommand(importCommand(e))
	root.AddCommand(gcCommand(e))
	root.AddCommand(checkCommand(e))
	root.AddCommand(showCommand(e))
	root.AddCommand(diffCommand(e))
	root.AddCommand(&cobra.Command{Use: "exit-codes", Short: "The exit codes and what each means", Long: exitCodeTable()})
	root.AddCommand(&cobra.Command{Use: "keys", Short: "How every command takes keys", Long: keysTopic})
	root.AddCommand(inventoryCommand(e))
	root.SetHelpCommand(helpCommand(root))

	cmd, err := root.ExecuteContextC(ctx)
	if err != nil && !started {
		err = usageError{err}
	}
	if err != nil {
		printError(term, cmd, err)
	}
	return err
}

// helpCommand is `nix-airgap help [COMMAND]`: as cobra's, except that an
// unknown command or topic is a usage error naming the one meant, where
// cobra's printed the whole usage and exited 0. With --details it prints
// the command's section of docs/commands.md, which the binary carries.
func helpCommand(root *cobra.Command) *cobra.Command {
	var details bool
	cmd := &cobra.Command{
		Use:   "help [COMMAND] [--details]",
		Short: "Help about any command",
		Long: "help prints a command's help, as COMMAND --help does. With --details it prints\n" +
			"the command's section of docs/commands.md, which the binary carries, or all\n" +
			"of it without a command: the details --help leaves out.",
		ValidArgsFunction: func(_ *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
			var names []string
			if cmd, _, err := root.Find(args); err == nil {
				for _, c := range cmd.Commands() {
					if (c.IsAvailableCommand() || c.IsAdditionalHelpTopicCommand()) && strings.HasPrefix(c.Name(), prefix) {
						names = append(names, c.Name())
					}
				}
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if details {
				return printDetails(cmd.OutOrStdout(), args)
			}
			cmd, rest, err := root.Find(args)
			if err != nil || len(rest) > 0 || len(args) > 0 && cmd == root {
				msg := fmt.Sprintf("no command or topic %q", strings.Join(args, " "))
				if s := root.SuggestionsFor(args[0]); len(s) > 0 && s[0] != args[0] {
					msg += fmt.Sprintf(" (did you mean %s?)", s[0])
				}
				return usageError{errors.New(msg)}
			}
			// As cobra does before it runs cmd, so that `help` lists the
			// flags `--help` does (root's --version among them).
			cmd.InitDefaultHelpFlag()
			cmd.InitDefaultVersionFlag()
			return cmd.Help()
		},
	}
	cmd.Flags().BoolVar(&details, "details", false, "print the command's section of docs/commands.md, or all of it without a command")
	return cmd
}

// printDetails prints the section of docs/commands.md that args name, or
// the whole file if they name none.
func printDetails(w io.Writer, args []string) error {
	if len(args) == 0 {
		_, err := io.WriteString(w, docs.Commands())
		return err
	}
	name := strings.Join(args, " ")
	text, ok := docs.CommandSection(name)
	if !ok {
		return usageError{fmt.Errorf("--details: docs/commands.md has no section %q; it has %s", name, strings.Join(docs.CommandSections(), ", "))}
	}
	_, err := io.WriteString(w, text)
	return err
}

// detailsLine is the last line of a command's help: where its details are,
// in the binary and in the repository.
func detailsLine(name string) string {
	return "Details: nix-airgap help " + name + " --details (docs/commands.md)"
}

// checkS3URLs parses every s3:// URL among the arguments and flag values
// before the command starts, so that a misspelt setting is a bad command
// line, and credentials put in one are refused without being repeated.
func checkS3URLs(cmd *cobra.Command, args []string) error {
	values := slices.Clone(args)
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if sv, ok := f.Value.(interface{ GetSlice() []string }); ok {
			values = append(values, sv.GetSlice()...)
		} else {
			values = append(values, f.Value.String())
		}
	})
	for _, v := range values {
		if strings.HasPrefix(v, "s3://") {
			if _, err := storage.ParseS3URL(v); err != nil {
				return err
			}
		}
	}
	return nil
}

// printError prints err as "nix-airgap: CMD: problem". A usage error also
// says where to read how the command is used, as Nix's do.
func printError(w io.Writer, cmd *cobra.Command, err error) {
	fmt.Fprintf(w, "nix-airgap: %s\n", errorText(cmd, err))
	if errors.As(err, new(usageError)) || errors.Is(err, storage.ErrBadLocation) {
		fmt.Fprintf(w, "Try '%s --help' for more information.\n", cmd.CommandPath())
	}
}

// errorText is err as cmd's failure says it: "op subject: problem", and
// what to do about it.
func errorText(cmd *cobra.Command, err error) string {
	msg := err.Error()
	if errors.Is(err, context.Canceled) && cmd.HasParent() {
		// SIGINT or SIGTERM: say that, of the command and its subject
		// ("import B: interrupted"), not what was cut off where.
		subject := cmd.Name()
		if first, _, ok := strings.Cut(msg, ": "); ok && strings.HasPrefix(first, cmd.Name()+" ") {
			subject = first
		}
		msg = subject + ": interrupted"
		if cmd.Name() == "pack" {
			msg += "; run the same pack again to go on from what it wrote"
		}
	}
	if errors.Is(err, syscall.ENOSPC) {
		msg += "\nThe disk is full (ENOSPC): free space on it, or write elsewhere"
		if cmd.Name() == "pack" {
			msg += "; run the same pack again to go on from what it wrote"
		}
	}
	if ExitCode(err) == ExitUnavailable {
		msg += "\n" + unavailableHint(err)
	}
	if listen := cmd.Flags().Lookup("listen"); listen != nil && errors.Is(err, syscall.EADDRINUSE) {
		msg += fmt.Sprintf("\nAnother server listens on %s (one more %s?): stop it, or choose another address with --listen", listen.Value, cmd.Name())
	}
	if ce := new(credentialsError); errors.As(err, &ce) {
		msg += "\n" + ce.hint()
	}
	usage := errors.As(err, new(usageError))
	switch {
	case !usage && cmd.HasParent() && !strings.HasPrefix(msg, cmd.Name()):
		// "op subject: problem", the op the command run.
		msg = cmd.Name() + ": " + msg
	case usage && cmd.HasParent() && !strings.HasPrefix(msg, cmd.Name()+":"):
		msg = cmd.Name() + ": " + msg
	}
	return msg
}

// logLevelUsage is --log-level's usage. A command that logs at another
// level by default (serve) adds its own --log-level with that default, so
// that its help shows the default it has.
const logLevelUsage = "log `LEVEL`: debug, info, warn or error"

const logHelp = "Logs go to stderr at warn and above (serve: info), as lines for people;\n" +
	"--log-level info or debug says more, --log-format json writes JSON lines."

// releaseVersion and releaseCommit are set by release builds, with
//
//	go build -ldflags "-X github.com/nix-airgap/nix-airgap/internal/cli.releaseVersion=v1.2.3 \
//	  -X github.com/nix-airgap/nix-airgap/internal/cli.releaseCommit=$(git rev-parse HEAD)"
//
// and by scripts/demo.sh, whose go build cannot stamp a git worktree. They
// override what the Go toolchain recorded.
var releaseVersion, releaseCommit string

// toolVersion is nix-airgap's version and the commit it was built from, as
// --version shows it and every bundle's manifest records it in "tool":
// "v1.2.3 (commit 0123…)". Without a release stamp the version is the Go
// toolchain's (from a git clone built with -buildvcs), and a build that
// recorded no commit says so. A releaseCommit ending in "-dirty" was
// built with uncommitted changes.
func toolVersion() string {
	v, commit := releaseVersion, releaseCommit
	commit, modified := strings.CutSuffix(commit, "-dirty")
	if info, ok := debug.ReadBuildInfo(); ok {
		if v == "" && info.Main.Version != "(devel)" {
			v = info.Main.Version
		}
		for _, s := range info.Settings {
			switch {
			case releaseCommit != "":
			case s.Key == "vcs.revision":
				commit = s.Value
			case s.Key == "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if v == "" {
		v = "devel"
	}
	switch {
	case commit == "":
		return v + " (no commit recorded)"
	case modified:
		return v + " (commit " + commit + ", with uncommitted changes)"
	}
	return v + " (commit " + commit + ")"
}

// exactArgs wants n arguments, and says which when it gets others.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) == n:
			return nil
		case n == 0:
			return usageError{fmt.Errorf("takes no arguments, but was given %q%s", args[0], cacheArgHint(cmd, args))}
		}
		return usageError{fmt.Errorf("wants %s, but was given %s", argsUsage(cmd), progress.Plural(len(args), "argument"))}
	}
}

// cacheArgHint is the hint for args, given to cmd without its --cache:
// when the last may be the cache (an s3:// URL, a long-lived cache, or,
// after import's bundle, a directory that is not there yet), it says
// that cmd takes it as --cache.
func cacheArgHint(cmd *cobra.Command, args []string) string {
	f := cmd.Flags().Lookup("cache")
	if f == nil || f.Changed || len(args) == 0 || cmd.Name() == "import" && len(args) < 2 {
		return ""
	}
	arg := args[len(args)-1]
	shape, err := bundle.Identify(arg)
	if strings.HasPrefix(arg, "s3://") || shape == bundle.ShapeCache || errors.Is(err, fs.ErrNotExist) && cmd.Name() == "import" {
		return fmt.Sprintf(" (nix-airgap %s takes the cache as --cache %s)", cmd.Name(), bundle.ShellWord(arg))
	}
	return ""
}

// minArgs wants at least n arguments.
func minArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usageError{fmt.Errorf("wants %s, but was given %s", argsUsage(cmd), progress.Plural(len(args), "argument"))}
		}
		return nil
	}
}

// argsUsage is the arguments part of a command's usage line: "OLD NEW"
// of "diff OLD NEW".
func argsUsage(cmd *cobra.Command) string {
	var words []string
	for _, w := range strings.Fields(cmd.Use)[1:] {
		if strings.HasPrefix(w, "-") || strings.HasPrefix(w, "[") {
			break
		}
		words = append(words, w)
	}
	return strings.Join(words, " ")
}
