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
// 100 lines that are not JSON, and Tail shows every error message;
// whether Nix failed for want of network does not depend on the cut.
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
		if n := whole.NetworkFailed(); split.NetworkFailed() != n || crlf.NetworkFailed() != n {
			t.Fatalf("NetworkFailed differs: whole %v, cut at %d %v, with \\r\\n %v", n, at, split.NetworkFailed(), crlf.NetworkFailed())
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
		Activity:   func(names []string) { trace = append(trace, "activity "+strings.Join(names, ",")) },
		BuildLog:   func(name, line string) { trace = append(trace, "log "+name+"> "+line) },
		Work:       func(build, fetch int) { trace = append(trace, fmt.Sprint("work ", build, " ", fetch)) },
		BuildPhase: func(name, phase string) { trace = append(trace, "phase "+name+" "+phase) },
		Builds:     func(c BuildCount) { trace = append(trace, traceCount(c)) },
		Copies:     func(c CopyCount) { trace = append(trace, fmt.Sprintf("copies %+v", c)) },
		LogLines:   3,
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

// traceCount spells c for a trace: "builds 1/2 lib-1.0", "builds 0/2 1
// failed bad-2.0".
func traceCount(c BuildCount) string {
	s := fmt.Sprintf("builds %d/%d", c.Done, c.Total)
	if c.Failed > 0 {
		s += fmt.Sprintf(" %d failed", c.Failed)
	}
	for _, f := range c.Finished {
		s += " " + f
	}
	return s
}

// TestBuildLogCount reads what each Nix of the matrix wrote while it
// built two derivations, lib-1.0 and app-2.0 that needs it, each telling
// its phases (testdata/README.md), and the failures of
// TestBuildLogRecorded: Nix's count of builds reaches Builds as nix build
// shows it, "[1/2 built]", naming the build that finished, though Nix
// 2.8 and 2.26 stop every build's activity only when they exit and 2.34
// counts some builds twice; a finished build is no longer an activity;
// the phases reach BuildPhase.
func TestBuildLogCount(t *testing.T) {
	for _, tc := range []struct {
		file   string
		counts []string
		others []string // further callbacks, in order among themselves
	}{
		{"realise-success-internal-json.txt",
			[]string{"builds 0/2", "builds 1/2 lib-1.0", "builds 2/2 app-2.0"},
			[]string{"work 2 0", "activity lib-1.0", "phase lib-1.0 configurePhase", "log lib-1.0> checking for cc", "phase lib-1.0 buildPhase",
				"log lib-1.0> cc -O2 -c lib.c", "phase lib-1.0 installPhase", "activity ", "activity app-2.0", "phase app-2.0 buildPhase",
				"log app-2.0> cc -O2 -o app main.c -llib", "activity "}},
		{"realise-internal-json.txt",
			[]string{"builds 0/2", "builds 0/2 1 failed bad-2.0"},
			[]string{"work 2 0", "activity bad-2.0", "activity "}},
	} {
		for _, v := range []string{"2.8", "2.26", "2.34"} {
			_, trace := recordedBuildLog(t, v, tc.file)
			var counts, others []string
			for _, s := range trace {
				if strings.HasPrefix(s, "builds ") {
					counts = append(counts, s)
				} else if slices.Contains(tc.others, s) {
					others = append(others, s)
				}
			}
			if !slices.Equal(counts, tc.counts) {
				t.Errorf("Nix %s, %s: counts %q, want %q", v, tc.file, counts, tc.counts)
			}
			if !slices.Equal(slices.Compact(others), tc.others) {
				t.Errorf("Nix %s, %s: callbacks %q, want %q in this order", v, tc.file, others, tc.others)
			}
		}
	}
}

// TestBuildLogCountEvents: the count holds up against what no recording
// shows: builds in parallel, a stop before the count, an unknown event,
// a count that is no number.
func TestBuildLogCountEvents(t *testing.T) {
	const (
		builds = `@nix {"action":"start","id":1,"type":104}` + "\n"
		work   = `@nix {"action":"msg","level":3,"msg":"these 3 derivations will be built:"}` + "\n"
	)
	start := func(id int, name string) string {
		return fmt.Sprintf(`@nix {"action":"start","fields":["/nix/store/dfjsqv7az0k41vyvi7jx81hn3wg7137v-%s.drv","",1,1],"id":%d,"type":105}`+"\n", name, id)
	}
	count := func(done, expected, running, failed int) string {
		return fmt.Sprintf(`@nix {"action":"result","fields":[%d,%d,%d,%d],"id":1,"type":105}`+"\n", done, expected, running, failed)
	}
	stop := func(id int) string { return fmt.Sprintf(`@nix {"action":"stop","id":%d}`+"\n", id) }
	for _, tc := range []struct {
		name, log string
		want      []string
	}{
		{"parallel, first started first done", builds + work + start(2, "a-1") + start(3, "b-1") + count(1, 3, 1, 0) + start(4, "c-1") + count(3, 3, 0, 0),
			[]string{"builds 1/3 a-1", "builds 3/3 b-1 c-1"}},
		{"a stop names the build", builds + work + start(2, "a-1") + start(3, "b-1") + stop(3) + count(1, 3, 1, 0),
			[]string{"builds 1/3 b-1"}},
		{"unknown events and fields", builds + work + `@nix {"action":"result","fields":["x",{}],"id":1,"type":105}` + "\n" +
			`@nix {"action":"frobnicate","id":1}` + "\n" + `@nix {"action":"result","fields":[],"id":9,"type":104}` + "\n" + start(2, "a-1") + count(1, 3, 0, 0),
			[]string{"builds 0/3", "builds 1/3 a-1"}}, // what is no count counts 0
		{"more built than said", builds + work + count(4, 5, 0, 0), []string{"builds 4/5"}},
		{"no count", work + start(2, "a-1") + stop(2), nil},
	} {
		_, trace := testBuildLog(t, "/nix/store", []byte(tc.log))
		var got []string
		for _, s := range trace {
			if strings.HasPrefix(s, "builds ") {
				got = append(got, s)
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: counts %q, want %q", tc.name, got, tc.want)
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

// TestBuildLogCopies reads what each Nix of the matrix wrote while it
// realised paths (testdata/README.md) and wants Nix's count of copies as
// nix build's progress bar sums it: three paths substituted from an HTTP
// cache (realise-http-substitute), counted one by one to 3/3, every byte
// of the cache's files downloaded (nix-cache-info, three narinfos and
// three NARs: 6,293,025 bytes), the NARs' bytes copied, all of them, of the paths Nix
// said it would fetch though its own count starts higher (0/0 while Nix
// downloads narinfos, before it says what it will fetch); one path from a
// file:// cache, which downloads nothing; and builds alone, which copy
// nothing and are told nothing.
func TestBuildLogCopies(t *testing.T) {
	for _, tc := range []struct {
		file, dir  string
		paths      []string // the distinct counts of paths, in order
		downloaded int64
		copies     bool
	}{
		{"realise-http-substitute-internal-json.txt", "/tmp/nixcli-dl/store", []string{"0/0", "0/3", "1/3", "2/3", "3/3"}, 6293025, true},
		{"realise-substitute-internal-json.txt", "/tmp/nixcli-realise/store", []string{"0/1", "1/1"}, 0, true},
		{"realise-success-internal-json.txt", "/tmp/nixcli-realise/store", nil, 0, false},
	} {
		for _, v := range []string{"2.8", "2.26", "2.34"} {
			data, err := os.ReadFile(filepath.Join("testdata", "nix-"+v, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			var counts []CopyCount
			var builds []BuildCount
			l := &buildLog{opts: RealiseOptions{Copies: func(c CopyCount) { counts = append(counts, c) }, Builds: func(c BuildCount) { builds = append(builds, c) }}, log: slog.New(slog.DiscardHandler),
				ctx: context.Background(), dir: storepath.Dir(tc.dir), acts: map[int64]*activity{}}
			l.Write(data)
			if !tc.copies {
				if len(counts) > 0 {
					t.Errorf("Nix %s, %s: told copies %+v, want none", v, tc.file, counts)
				}
				continue
			}
			var paths []string
			for i, c := range counts {
				if s := fmt.Sprintf("%d/%d", c.Done, c.Total); len(paths) == 0 || paths[len(paths)-1] != s {
					paths = append(paths, s)
				}
				if c.Failed != 0 || c.Copied > c.CopyTotal || c.Downloaded > c.DownloadTotal {
					t.Errorf("Nix %s, %s: count %+v: a failure, or more done than expected", v, tc.file, c)
				}
				if i > 0 && (c.Done < counts[i-1].Done || c.Downloaded < counts[i-1].Downloaded) {
					t.Errorf("Nix %s, %s: count went back from %+v to %+v", v, tc.file, counts[i-1], c)
				}
			}
			if !slices.Equal(paths, tc.paths) {
				t.Errorf("Nix %s, %s: paths counted %q, want %q", v, tc.file, paths, tc.paths)
			}
			if len(counts) == 0 {
				continue
			}
			last := counts[len(counts)-1]
			if last.Downloaded != tc.downloaded || last.DownloadTotal != tc.downloaded {
				t.Errorf("Nix %s, %s: downloaded %d of %d, want %d", v, tc.file, last.Downloaded, last.DownloadTotal, tc.downloaded)
			}
			// Nix 2.8 counts the derivations it substitutes as builds
			// expected; it said it would build none.
			if i := slices.IndexFunc(builds, func(c BuildCount) bool { return c.Total > 0 }); tc.downloaded > 0 && i >= 0 {
				t.Errorf("Nix %s, %s: told builds %+v, want none: Nix builds nothing", v, tc.file, builds[i])
			}
			// Nix 2.8 and 2.26 tell no progress of the two small copies.
			if tc.downloaded > 0 && (last.Copied < 6291568 || last.Copied != last.CopyTotal) {
				t.Errorf("Nix %s, %s: %d bytes copied of %d, want all, at least big-1.0's 6291568: %+v", v, tc.file, last.Copied, last.CopyTotal, last)
			}
		}
	}
}
