package nixcli

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// FuzzBuildLog feeds nix-store's internal-json stderr to the build log.
// However the stream is cut into writes, and whether its lines end in
// "\n" or "\r\n", the log tells the same activities and build lines and
// ends with the same Tail; it keeps at most LogLines lines of a build and
// 100 lines that are not JSON, and Tail shows every error message.
func FuzzBuildLog(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, cut uint16) {
		if len(data) >= stderrMax {
			return // a longer line is cut where the writes fall
		}
		whole, wholeTrace := fuzzBuildLog(t, data)
		at := int(cut) % (len(data) + 1)
		split, splitTrace := fuzzBuildLog(t, data[:at], data[at:])
		crlf, crlfTrace := fuzzBuildLog(t, bytes.ReplaceAll(data, []byte("\n"), []byte("\r\n")))
		tail := whole.Tail()
		for what, got := range map[string][]byte{"cut at " + fmt.Sprint(at): split.Tail(), "with \\r\\n": crlf.Tail()} {
			if !bytes.Equal(got, tail) {
				t.Fatalf("Tail %s:\n%s\nwhole:\n%s", what, got, tail)
			}
		}
		if !slices.Equal(splitTrace, wholeTrace) || !slices.Equal(crlfTrace, wholeTrace) {
			t.Fatalf("callbacks differ:\nwhole %q\ncut at %d %q\nwith \\r\\n %q", wholeTrace, at, splitTrace, crlfTrace)
		}
		if len(whole.plain) > 100 {
			t.Fatalf("%d plain lines kept", len(whole.plain))
		}
		for _, a := range whole.builds {
			if len(a.tail) > whole.opts.LogLines {
				t.Fatalf("build %s kept %d lines", a.name, len(a.tail))
			}
		}
		for _, msg := range whole.errors {
			if !bytes.Contains(tail, []byte(strings.TrimPrefix(msg, "error:"))) {
				t.Fatalf("Tail lacks error %q:\n%s", msg, tail)
			}
		}
	})
}

// fuzzBuildLog writes each of writes to a new build log of store
// /nix/store and returns it, with what its callbacks were told.
func fuzzBuildLog(t *testing.T, writes ...[]byte) (*buildLog, []string) {
	return testBuildLog(t, "/nix/store", writes...)
}

// recordedBuildLog is testBuildLog of a recording in testdata/nix-VERSION
// (testdata/README.md), made in store /tmp/nixcli-realise/store.
func recordedBuildLog(t *testing.T, version, name string) (*buildLog, []string) {
	data, err := os.ReadFile(filepath.Join("testdata", "nix-"+version, name))
	if err != nil {
		t.Fatal(err)
	}
	return testBuildLog(t, "/tmp/nixcli-realise/store", data)
}

// testBuildLog is fuzzBuildLog in store dir.
func testBuildLog(t *testing.T, dir storepath.Dir, writes ...[]byte) (*buildLog, []string) {
	var trace []string
	opts := RealiseOptions{
		Activity: func(names []string) { trace = append(trace, "activity "+strings.Join(names, ",")) },
		BuildLog: func(name, line string) { trace = append(trace, "log "+name+"> "+line) },
		Work:     func(build, fetch int) { trace = append(trace, fmt.Sprint("work ", build, " ", fetch)) },
		LogLines: 3,
	}
	l := &buildLog{opts: opts, log: slog.New(slog.DiscardHandler), ctx: context.Background(), dir: dir, acts: map[int64]*activity{}}
	for _, w := range writes {
		if n, err := l.Write(w); n != len(w) || err != nil {
			t.Fatalf("Write of %d bytes = %d, %v", len(w), n, err)
		}
	}
	return l, trace
}

// TestBuildLogRecorded reads the internal-json stderr that nix-store
// --realise, as Realise runs it, wrote under each Nix of the matrix
// (testdata/README.md) for a build that fails after printing and one that
// would succeed but is never started, and wants the same story from each:
// the two derivations Nix will build counted first, the failing build
// named while it runs, every line of it passed on, and a Tail with the
// error and that build's last lines, though Nix's last message names
// both builds.
func TestBuildLogRecorded(t *testing.T) {
	const dir = "/tmp/nixcli-realise/store"
	for _, v := range []string{"2.8", "2.26", "2.34"} {
		l, trace := recordedBuildLog(t, v, "realise-internal-json.txt")
		tail := string(l.Tail())
		for _, want := range []string{"error:", "the last 3 log lines of bad-2.0:\n> bad line 11\n> bad line 12\n> to stderr\n", "nix-store --read-log " + dir + "/"} {
			if !strings.Contains(tail, want) {
				t.Errorf("Nix %s: Tail lacks %q:\n%s", v, want, tail)
			}
		}
		if strings.Count(tail, "log lines of") != 1 {
			t.Errorf("Nix %s: Tail shows another build's lines:\n%s", v, tail)
		}
		// Nix says what it will do first, as nix-build prints it.
		if len(trace) == 0 || trace[0] != "work 2 0" {
			t.Errorf("Nix %s: first callback %q, want work 2 0: the 2 derivations Nix said it would build", v, trace[:min(1, len(trace))])
		}
		for _, want := range []string{"activity bad-2.0", "log bad-2.0> bad line 1", "log bad-2.0> to stderr"} {
			if !slices.Contains(trace, want) {
				t.Errorf("Nix %s: callbacks lack %q: %q", v, want, trace)
			}
		}
		if len(trace) == 0 || trace[len(trace)-1] != "activity " {
			t.Errorf("Nix %s: last callback %q, want no activity", v, trace[len(trace)-1:])
		}
	}
}

// TestBuildLogRecordedSubstitute reads the recordings of Nix 2.8, 2.26
// and 2.34 (testdata/README.md) realising the same two derivations when
// good-1.0's output is in a binary cache: Nix says first that it will
// build one and fetch one, the fetch is an activity named by the path,
// and the Tail holds only bad-2.0's failure.
func TestBuildLogRecordedSubstitute(t *testing.T) {
	for _, v := range []string{"2.8", "2.26", "2.34"} {
		l, trace := recordedBuildLog(t, v, "realise-substitute-internal-json.txt")
		if len(trace) == 0 || trace[0] != "work 1 1" {
			t.Errorf("Nix %s: first callback %q, want work 1 1: one derivation to build, one path to fetch", v, trace[:min(1, len(trace))])
		}
		// An activity may be listed with others after it: "activity a,b".
		heard := func(want string) bool {
			return slices.ContainsFunc(trace, func(s string) bool { return s == want || strings.HasPrefix(s, want+",") })
		}
		for _, want := range []string{"activity good-1.0", "activity bad-2.0", "log bad-2.0> to stderr"} {
			if !heard(want) {
				t.Errorf("Nix %s: callbacks lack %q: %q", v, want, trace)
			}
		}
		tail := string(l.Tail())
		if !strings.Contains(tail, "the last 3 log lines of bad-2.0:\n> bad line 11\n> bad line 12\n> to stderr\n") || strings.Contains(tail, "good") {
			t.Errorf("Nix %s: Tail is not bad-2.0's failure alone:\n%s", v, tail)
		}
	}
}

// TestBuildLogWork: what Nix says it will do reaches Work once, before
// the first build starts or when Nix exits, counted as Nix counts it.
func TestBuildLogWork(t *testing.T) {
	msg := func(s string) string { return `@nix {"action":"msg","level":3,"msg":"` + s + `"}` + "\n" }
	const start = `@nix {"action":"start","fields":["/nix/store/dfjsqv7az0k41vyvi7jx81hn3wg7137v-hello-1.drv","",1,1],"id":7,"level":3,"text":"","type":105}` + "\n"
	for _, tc := range []struct {
		name, log string
		want      []string
	}{
		{"build and fetch", msg("these 12 derivations will be built:") + msg("  /nix/store/dfjsqv7az0k41vyvi7jx81hn3wg7137v-hello-1.drv") +
			msg("these 3 paths will be fetched (0.50 MiB download, 2.10 MiB unpacked):") + start, []string{"work 12 3", "activity hello-1"}},
		{"one of each", msg("this derivation will be built:") + msg("this path will be fetched (0.01 MiB download, 0.05 MiB unpacked):") + start,
			[]string{"work 1 1", "activity hello-1"}},
		{"fetch only, told at exit", msg("these 2 paths will be fetched (0.01 MiB download, 0.05 MiB unpacked):"), []string{"work 0 2"}},
		{"nothing to do", start, []string{"activity hello-1"}},
	} {
		var trace []string
		l := &buildLog{
			opts: RealiseOptions{
				Activity: func(names []string) {
					if len(names) > 0 {
						trace = append(trace, "activity "+strings.Join(names, ","))
					}
				},
				Work: func(build, fetch int) { trace = append(trace, fmt.Sprint("work ", build, " ", fetch)) },
			},
			log: slog.New(slog.DiscardHandler), ctx: context.Background(), dir: "/nix/store", acts: map[int64]*activity{},
		}
		l.Write([]byte(tc.log))
		l.tellWork() // as Realise does when Nix exits
		if !slices.Equal(trace, tc.want) {
			t.Errorf("%s: callbacks %q, want %q", tc.name, trace, tc.want)
		}
	}
}
