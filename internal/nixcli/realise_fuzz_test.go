package nixcli

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
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

// fuzzBuildLog writes each of writes to a new build log and returns it,
// with what its callbacks were told.
func fuzzBuildLog(t *testing.T, writes ...[]byte) (*buildLog, []string) {
	var trace []string
	opts := RealiseOptions{
		Activity: func(names []string) { trace = append(trace, "activity "+strings.Join(names, ",")) },
		BuildLog: func(name, line string) { trace = append(trace, "log "+name+"> "+line) },
		LogLines: 3,
	}
	l := &buildLog{opts: opts, log: slog.New(slog.DiscardHandler), ctx: context.Background(), dir: "/nix/store", acts: map[int64]*activity{}}
	for _, w := range writes {
		if n, err := l.Write(w); n != len(w) || err != nil {
			t.Fatalf("Write of %d bytes = %d, %v", len(w), n, err)
		}
	}
	return l, trace
}
