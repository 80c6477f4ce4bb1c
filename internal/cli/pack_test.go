package cli_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cli"
	"github.com/nix-airgap/nix-airgap/internal/signing"
)

// TestPackCommand runs pack on the test world through the command line:
// --no-build refuses what is not built, listing it; --json gives path
// events and a summary; --out - writes a tar stream that verifies.
func TestPackCommand(t *testing.T) {
	w, tmp, keyFile, pubFile := newKeyedWorld(t, "cli-test-1")
	pub, err := signing.LoadPublicKey(pubFile)
	if err != nil {
		t.Fatal(err)
	}
	target := []string{"--file", w.File, "--attr", "toplevel", "--argstr", "variant", "cli", "--mode", "runtime"}
	top := w.OutPaths(t, w.Args("cli", "")...)["toplevel"]

	code, _, stderr := run(t, append([]string{"pack", "--no-build", "--out", filepath.Join(tmp, "nobuild")}, target...)...)
	if code != cli.ExitNotBuilt || !strings.Contains(stderr, "neither in the store nor on an upstream cache") || !strings.Contains(stderr, top) {
		t.Errorf("pack --no-build of an unbuilt toplevel: exit %d, stderr:\n%s\nwant a failure naming %s", code, stderr, top)
	}
	if _, err := os.Stat(filepath.Join(tmp, "nobuild", bundle.ManifestName)); err == nil {
		t.Error("pack --no-build failed but wrote a manifest")
	}

	// An evaluation error shows Nix's own message.
	code, _, stderr = run(t, "pack", "--file", w.File, "--attr", "nope", "--out", filepath.Join(tmp, "evalerr"))
	if code != cli.ExitNixFailed || !strings.Contains(stderr, "attribute 'nope'") {
		t.Errorf("pack --attr nope: exit %d, stderr:\n%s\nwant exit %d with Nix's message", code, stderr, cli.ExitNixFailed)
	}

	out := filepath.Join(tmp, "b")
	code, stdout, stderr := run(t, append([]string{"pack", "--json", "--key", keyFile, "--out", out}, target...)...)
	if code != 0 {
		t.Fatalf("pack --json: exit %d\n%s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	var pathEvents int
	var work []string
	for _, l := range lines[:len(lines)-1] {
		var ev struct {
			Event, Phase, Path, Source string
			ToBuild, ToFetch           int
		}
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("pack --json: line %q: %v", l, err)
		}
		if ev.Event == "work" {
			work = append(work, fmt.Sprintf("%s %d %d", ev.Phase, ev.ToBuild, ev.ToFetch))
		}
		if ev.Event == "path" && ev.Phase == "copy" && (ev.Source == "store" || ev.Source == "build" && ev.Path == top) {
			pathEvents++
		}
	}
	var sum struct {
		Event       string
		Paths       int
		Built       int
		BundleBytes uint64
		Signed      bool
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &sum); err != nil {
		t.Fatal(err)
	}
	checkJSONScheme(t, "pack", lines[len(lines)-1])
	want := len(w.RuntimeAttrs())
	if sum.Event != "done" || sum.Paths != want || pathEvents != want || sum.Built != 1 || !sum.Signed || sum.BundleBytes == 0 {
		t.Errorf("pack --json: %d path events, summary %+v; want %d paths, 1 built, signed", pathEvents, sum, want)
	}
	// pack asked Nix for the 1 path; Nix said it would build it and the
	// world's build-time derivations.
	if len(work) != 1 || !strings.HasPrefix(work[0], "realise ") || work[0] == "realise 0 0" || work[0] == "realise 1 0" {
		t.Errorf("pack --json: work events %q, want one of the realise phase, with the derivations Nix builds for the 1 path", work)
	}
	t.Logf("work: %q", work)
	if _, err := bundle.Verify(t.Context(), out, bundle.VerifyOptions{Keys: signing.NewKeyring(pub)}); err != nil {
		t.Errorf("verify: %v", err)
	}

	code, stdout, stderr = run(t, append([]string{"pack", "--out", "-"}, target...)...)
	if code != 0 {
		t.Fatalf("pack --out -: exit %d\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "unsigned") || !strings.Contains(stderr, "packed 4 paths") {
		t.Errorf("pack without --key: stderr lacks the warning or the summary:\n%s", stderr)
	}
	rep, err := bundle.Verify(t.Context(), "-", bundle.VerifyOptions{AllowUnsigned: true, Stdin: bytes.NewReader([]byte(stdout))})
	if err != nil || len(rep.Manifest.Paths) != want {
		t.Errorf("verify the tar stream: %v", err)
	}

	// --check checks the bundle just written.
	checked := filepath.Join(tmp, "checked")
	code, _, stderr = run(t, append([]string{"pack", "--check", "--key", keyFile, "--out", checked}, target...)...)
	if code != 0 || !strings.Contains(stderr, "everything the targets need is in it") {
		t.Errorf("pack --check: exit %d, stderr:\n%s\nwant success and the check's verdict", code, stderr)
	}
	if code, _, _ = run(t, append([]string{"pack", "--check", "--out", "-"}, target...)...); code != cli.ExitUsage {
		t.Errorf("pack --check --out -: exit %d, want %d", code, cli.ExitUsage)
	}
}

// TestBadBaseFirst: a --since base pack or plan cannot use is told before
// any Nix or network work: with no nix on PATH and a substituter that
// counts its requests, the error names the base, no request came, and it
// took well under a second.
func TestBadBaseFirst(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		http.NotFound(w, r)
	}))
	defer srv.Close()
	t.Setenv("PATH", t.TempDir()) // any nix run fails: "nix" not found
	tmp := t.TempDir()
	text := filepath.Join(tmp, "notes.txt")
	if err := os.WriteFile(text, []byte("not a bundle\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	target := "/nix/store/0c9mczn41dk6sd2q2w3k4q3z5sqd8jyk-hello.txt"
	for _, tc := range []struct {
		base string
		code int
		says string
	}{
		{filepath.Join(tmp, "missing"), cli.ExitMissing, "no such file or directory"},
		{text, cli.ExitCorrupt, "not a tar stream"},
	} {
		for _, args := range [][]string{
			{"pack", target, "--out", filepath.Join(tmp, "out"), "--no-progress"},
			{"plan", target},
		} {
			start := time.Now()
			code, _, stderr := run(t, append(args, "--since", tc.base, "--substituters", srv.URL)...)
			took := time.Since(start)
			if code != tc.code || !strings.HasPrefix(stderr, "nix-airgap: "+args[0]+": --since: base "+tc.base+": ") || !strings.Contains(stderr, tc.says) {
				t.Errorf("%s --since %s: exit %d, want %d and the base's problem, %q\n%s", args[0], tc.base, code, tc.code, tc.says, stderr)
			}
			if n := requests.Load(); n != 0 || took > time.Second {
				t.Errorf("%s --since %s: %d substituter requests, %v; want none, at once", args[0], tc.base, n, took)
			}
		}
	}
}

// TestPackBuildLogs packs a target whose build fails after printing:
// without -L the error ends with the build's last lines, as nix-build's
// does; with -L every line is shown once, as it comes, and the error
// does not repeat them, as nix build -L's does not.
func TestPackBuildLogs(t *testing.T) {
	_, tmp, _ := newPlanTest(t)
	file := busyboxDrv(t, tmp, "bad", "echo first line; echo second line >&2; exit 3")
	for _, tc := range []struct {
		flags []string
		want  int // times each log line shows
		tail  bool
	}{
		{nil, 1, true},
		{[]string{"-L"}, 1, false},
		{[]string{"--print-build-logs"}, 1, false},
	} {
		args := append([]string{"pack", "--file", file, "--out", filepath.Join(tmp, "out")}, tc.flags...)
		code, _, stderr := run(t, args...)
		if code != cli.ExitNixFailed || !strings.Contains(stderr, "bad-1.0") {
			t.Errorf("%q: exit %d, stderr:\n%s\nwant exit %d naming bad-1.0", tc.flags, code, stderr, cli.ExitNixFailed)
		}
		for _, line := range []string{"first line", "second line"} {
			if got := strings.Count(stderr, line); got != tc.want {
				t.Errorf("%q: %q shows %d times in stderr, want %d:\n%s", tc.flags, line, got, tc.want, stderr)
			}
		}
		if got := strings.Contains(stderr, "log lines of bad-1.0"); got != tc.tail {
			t.Errorf("%q: the error has the last log lines: %v, want %v:\n%s", tc.flags, got, tc.tail, stderr)
		}
	}
}

// TestPackBuildProgress packs a target for which Nix builds two
// derivations, app-2.0 and lib-1.0 it needs, without a terminal: stderr
// gets a line per finished build with Nix's count, as nix build's "[1/2
// built]".
func TestPackBuildProgress(t *testing.T) {
	_, tmp, _ := newPlanTest(t)
	file := filepath.Join(tmp, "app.nix")
	expr := `let sh = name: env: script: derivation ({ inherit name; system = builtins.currentSystem; builder = "/bin/busybox"; args = [ "sh" "-c" script ]; } // env);
  lib = sh "lib-1.0" {} "echo cc -O2 -c lib.c; echo lib > $out";
in sh "app-2.0" { inherit lib; } "echo cc -o app; cat $lib > $out; echo $lib >> $out"`
	if err := os.WriteFile(file, []byte(expr), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := run(t, "pack", "--file", file, "--out", filepath.Join(tmp, "out"))
	if code != 0 {
		t.Fatalf("pack: exit %d\n%s", code, stderr)
	}
	for _, want := range []string{"realise: 2 derivations to build\n", "realise: [1/2 built] lib-1.0\n", "realise: [2/2 built] app-2.0\n"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("pack: stderr lacks %q:\n%s", want, stderr)
		}
	}
}

// TestPackJSONFailure: a pack --json whose build fails ends its events
// with an "error" event, where the events go: the error as stderr says
// it, and the exit code.
func TestPackJSONFailure(t *testing.T) {
	_, tmp, _ := newPlanTest(t)
	bad := busyboxDrv(t, tmp, "bad", "echo first line; exit 3")
	for _, out := range []string{filepath.Join(tmp, "bad"), "-"} {
		code, stdout, stderr := run(t, "pack", "--json", "--file", bad, "--out", out)
		events := stdout
		if out == "-" {
			events = stderr // with the tar stream on stdout
		}
		// The last event; stderr's error follows it with --out -.
		last := events[strings.LastIndex(events, "\n{")+1:]
		last, _, _ = strings.Cut(last, "\n")
		var ev struct {
			Event, Error string
			ExitCode     *int
			Seconds      *float64
		}
		if err := json.Unmarshal([]byte(last), &ev); err != nil {
			t.Fatalf("pack --json --out %s: last line %q: %v\n%s", out, last, err, events)
		}
		if code != cli.ExitNixFailed || ev.Event != "error" || ev.ExitCode == nil || *ev.ExitCode != code || ev.Seconds == nil ||
			!strings.HasPrefix(ev.Error, "pack: ") || !strings.Contains(ev.Error, "bad-1.0") || !strings.Contains(stderr, "nix-airgap: "+ev.Error+"\n") {
			t.Errorf("pack --json --out %s: exit %d, last event %s\nwant exit %d and an error event saying stderr's error:\n%s", out, code, last, cli.ExitNixFailed, stderr)
		}
		if out == "-" && strings.Contains(stdout, `"event"`) {
			t.Errorf("pack --json --out -: an event on stdout, in the tar stream")
		}
	}
}

// TestPackNetworkFailure packs a fixed-output fetch from a loopback port
// nothing listens on: Nix's download got no answer, so pack exits 75 with
// what to check, not 7 as for a build error.
func TestPackNetworkFailure(t *testing.T) {
	_, tmp, _ := newPlanTest(t)
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL + "/x.tar"
	srv.Close() // the port is closed now: connection refused
	file := filepath.Join(tmp, "fetch.nix")
	expr := fmt.Sprintf(`import <nix/fetchurl.nix> { url = %q; sha256 = "1111111111111111111111111111111111111111111111111111"; }`, url)
	if err := os.WriteFile(file, []byte(expr), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := run(t, "pack", "--file", file, "--out", filepath.Join(tmp, "out"))
	if code != cli.ExitUnavailable || !strings.Contains(stderr, "unable to download") || !strings.Contains(stderr, "run the same command again") {
		t.Errorf("pack: exit %d, stderr:\n%s\nwant exit %d, Nix's error and what to do", code, stderr, cli.ExitUnavailable)
	}
}
