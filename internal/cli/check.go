package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/check"
	"github.com/nix-airgap/nix-airgap/internal/nixcli"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

func checkCommand(e *env) *cobra.Command {
	var (
		tf       targetFlags
		against  []string
		useLocal bool
		asJSON   bool
	)
	cmd := &cobra.Command{
		Use:   "check " + targetUsage + " --against SOURCE... [--against-local-store] [--json]",
		Short: "Tell whether targets can be substituted or built offline from given sources",
		Long: "check evaluates the targets locally, walks their whole build closure and puts\n" +
			"every output in one class: available (substitutable from a SOURCE), buildable\n" +
			"(missing, but every input is available or buildable), or blocked. Blocked\n" +
			"paths are shown as a tree down to their root causes, such as a fixed-output\n" +
			"derivation no SOURCE has, named with its URLs and hash.\n\n" +
			"A SOURCE (--against, repeatable) is a binary cache URL, a cache or bundle\n" +
			"directory, an s3:// bucket as import takes it, or a bundle tar. check opens no\n" +
			"other connection, and does not check signatures: verify does that. Targets are\n" +
			"as for plan (nix-airgap help plan).\n\n" +
			detailsLine("check") + "\n\n" +
			exitHelp(ExitCorrupt, ExitMissing, ExitBlocked, ExitNixFailed, ExitUnavailable),
		Example: "  nix-airgap check .#nixosConfigurations.gateway --against http://cache.site:8080\n" +
			"  nix-airgap check .#nixosConfigurations.gateway --against /media/usb/bundle-1 --against /media/usb/bundle-2",
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := tf.parse(cmd, args); err != nil {
				return err
			}
			if len(against) == 0 && !useLocal {
				return usageError{errors.New("check: give --against SOURCE or --against-local-store")}
			}
			ctx := cmd.Context()
			runner := tf.runner(e.log)
			dir, targets, err := tf.targetSpecs(ctx, runner)
			if err != nil {
				return fmt.Errorf("check: %w", err)
			}
			var sources []check.Source
			for _, a := range against {
				var client *http.Client
				if cache.IsHTTP(a) {
					if client, err = tf.httpClient(ctx, runner, a); err != nil {
						return err
					}
				}
				src, err := check.OpenSource(ctx, a, dir, client)
				if err != nil {
					return tf.withCredentialsHint(err)
				}
				defer src.Close()
				sources = append(sources, src)
			}
			start := time.Now()
			prog := statusLine(e, "check")
			defer prog.Clear()
			// Evaluate with plan, in runtime mode and with no upstream:
			// that resolves the targets and touches only the local store.
			planner := &plan.Planner{Nix: runner, StoreDir: dir, Jobs: tf.jobs, Log: e.log}
			pl, err := planner.Plan(ctx, targets, plan.Options{Mode: role.ModeRuntime})
			if err != nil {
				return fmt.Errorf("check: %w", err)
			}
			cts, err := withDerivers(ctx, runner, check.TargetsFromPlan(pl))
			if err != nil {
				return fmt.Errorf("check: %w", err)
			}
			c := &check.Checker{StoreDir: dir, Sources: sources, Local: runner, UseLocal: useLocal, Jobs: tf.jobs, Log: e.log}
			res, err := c.Check(ctx, cts)
			prog.Clear()
			if err != nil {
				return tf.withCredentialsHint(err)
			}
			e.log.Info("checked", "paths", len(res.Paths), "duration", time.Since(start).Round(time.Millisecond))
			if asJSON {
				if err := writeJSON(e.stdout, res); err != nil {
					return fmt.Errorf("check: %w", err)
				}
			} else if err := res.WriteText(e.stdout); err != nil {
				return fmt.Errorf("check: %w", err)
			}
			return res.Err()
		},
	}
	fs := cmd.Flags()
	tf.registerTargets(fs, "run `N` narinfo lookups and .drv reads at once (default 16)")
	fs.Var(listFlag{&against, false, "SOURCE"}, "against", "binary cache URL, cache or bundle directory, s3:// bucket, or bundle tar to check against (repeatable)")
	fs.BoolVar(&useLocal, "against-local-store", false, "count paths valid in the local store as available")
	fs.BoolVar(&asJSON, "json", false, "print every path with its class as JSON")
	return cmd
}

// withDerivers gives each target that is a plain output path its deriver,
// when the path is valid locally and its .drv is too, so that its build
// closure is checked and not only the path itself.
func withDerivers(ctx context.Context, runner *nixcli.Runner, ts []check.Target) ([]check.Target, error) {
	var paths []storepath.Path
	for _, t := range ts {
		if t.DrvPath == (storepath.Path{}) && !t.Path.IsDerivation() {
			paths = append(paths, t.Path)
		}
	}
	if len(paths) == 0 {
		return ts, nil
	}
	invalid, err := runner.InvalidPaths(ctx, paths...)
	if err != nil {
		return nil, err
	}
	bad := setOf(invalid)
	valid := slices.DeleteFunc(paths, func(p storepath.Path) bool { return bad[p] })
	if len(valid) == 0 {
		return ts, nil
	}
	infos, err := runner.PathInfo(ctx, valid...)
	if err != nil {
		return nil, err
	}
	derivers := map[storepath.Path]storepath.Path{}
	var drvs []storepath.Path
	for _, in := range infos {
		if in.Deriver != (storepath.Path{}) {
			derivers[in.Path] = in.Deriver
			drvs = append(drvs, in.Deriver)
		}
	}
	if len(drvs) > 0 {
		invalidDrvs, err := runner.InvalidPaths(ctx, drvs...)
		if err != nil {
			return nil, err
		}
		badDrv := setOf(invalidDrvs)
		for p, d := range derivers {
			if badDrv[d] {
				delete(derivers, p)
			}
		}
	}
	for i := range ts {
		if d, ok := derivers[ts[i].Path]; ok && ts[i].DrvPath == (storepath.Path{}) {
			ts[i].DrvPath = d
		}
	}
	return ts, nil
}

func setOf(ps []storepath.Path) map[storepath.Path]bool {
	m := make(map[storepath.Path]bool, len(ps))
	for _, p := range ps {
		m[p] = true
	}
	return m
}
