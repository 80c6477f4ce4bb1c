package progress

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/nixtest"
)

func run(r *Reporter) {
	r.Phase("plan", 0, 0)
	r.Phase("copy", 2, 3_000_000)
	r.Step("", "", 1_000_000)
	r.Step("/s/aaa-x", "store", 0)
	r.Step("", "", 2_000_000)
	r.Step("/s/bbb-y", "http://up", 0)
	r.Event(map[string]any{"event": "done", "paths": 2})
	r.Close()
}

func TestFormats(t *testing.T) {
	tests := []struct {
		format Format
		want   string
	}{
		{Lines, ""}, // quick: nothing before the command's own summary
		{JSON, `{"bytes":0,"event":"phase","paths":0,"phase":"plan"}` + "\n" +
			`{"bytes":3000000,"event":"phase","paths":2,"phase":"copy"}` + "\n" +
			`{"bytes":3000000,"bytesDone":1000000,"done":1,"event":"path","path":"/s/aaa-x","paths":2,"phase":"copy","source":"store"}` + "\n" +
			`{"bytes":3000000,"bytesDone":3000000,"done":2,"event":"path","path":"/s/bbb-y","paths":2,"phase":"copy","source":"http://up"}` + "\n" +
			`{"event":"done","paths":2}` + "\n"},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		run(New(&b, tt.format))
		if diff := cmp.Diff(tt.want, b.String()); diff != "" {
			t.Errorf("format %d (-want +got):\n%s", tt.format, diff)
		}
	}
}

// fakeClock makes r's clock one the test moves with advance, under r's
// lock, as r's ticker reads it.
func fakeClock(r *Reporter) (advance func(time.Duration)) {
	clock := time.Unix(1000, 0)
	r.mu.Lock()
	r.now = func() time.Time { return clock }
	r.mu.Unlock()
	return func(d time.Duration) {
		r.mu.Lock()
		clock = clock.Add(d)
		r.mu.Unlock()
	}
}

// draw redraws r's status line now, not at its next tick.
func draw(r *Reporter) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.drawLocked()
}

func lastStatus(s string) string { return s[strings.LastIndex(s, "\r\033[K")+4:] }

func TestTerminalStatus(t *testing.T) {
	var b nixtest.SyncBuffer // the ticker draws on it too
	r := New(&b, Terminal)
	advance := fakeClock(r)
	r.Phase("copy", 40, 120_000_000)
	advance(4 * time.Second)
	for range 12 {
		r.Step("/s/p", "store", 0)
	}
	r.Step("", "", 30_000_000)
	r.Activity([]string{"hello-2.12", "gcc-13", "glibc-2.39"})
	draw(r)
	if got, want := lastStatus(b.String()), "copy 12/40 paths, 28.6 MiB/114.4 MiB, 7.2 MiB/s, ETA 12s (4s): hello-2.12, gcc-13 and 1 more"; got != want {
		t.Errorf("status line = %q, want %q", got, want)
	}
	r.Close()
	if got, want := lastStatus(b.String()), "copy 12/40 paths, 28.6 MiB/114.4 MiB, 7.2 MiB/s, ETA 12s (4s)\n"; got != want {
		t.Errorf("final status line = %q, want %q", got, want)
	}
}

// TestNoEarlyETA: no ETA until the rate is measured over enough time and
// bytes. A first ETA from the first few bytes was "8h9m11s".
func TestNoEarlyETA(t *testing.T) {
	tests := []struct {
		elapsed time.Duration
		done    int64
		wantETA bool
	}{
		{time.Second, 50_000_000, false},      // too soon
		{10 * time.Second, 1_000_000, false},  // too few bytes of 100 MB
		{10 * time.Second, 2_000_000, true},   // enough of both
		{3 * time.Second, 100_000_000, false}, // done: nothing to wait for
	}
	for _, tt := range tests {
		r := New(io.Discard, Lines)
		advance := fakeClock(r)
		r.Phase("copy", 1, 100_000_000)
		advance(tt.elapsed)
		r.Step("", "", tt.done)
		r.mu.Lock()
		s := r.statusLocked()
		r.mu.Unlock()
		r.Close()
		if strings.Contains(s, "ETA") != tt.wantETA {
			t.Errorf("after %s and %d bytes: %q, want ETA %v", tt.elapsed, tt.done, s, tt.wantETA)
		}
	}
}

// TestLinesWithinPaths: without a terminal, bytes moving within one big
// path still give a line every so often, and no line while nothing moves.
func TestLinesWithinPaths(t *testing.T) {
	var b nixtest.SyncBuffer
	r := Options{Every: 20 * time.Millisecond}.New(&b, Lines)
	r.Phase("copy", 1, 10<<30)
	for range 3 {
		r.Step("", "", 1<<30)
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // nothing moves: no more lines
	r.Close()
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 4 || lines[0] != "copy: 1 path, 10.0 GiB" || !strings.HasPrefix(lines[3], "copy 0/1 path, 3.0 GiB/10.0 GiB, ") {
		t.Errorf("lines:\n%s\nwant the phase and one line after each step", b.String())
	}
}

// TestLinesRateLimited: without a terminal, a job of many paths writes a
// status line now and then, not a line per path: re-importing a
// 100,000-path bundle wrote 100,000 "(already there)" lines.
func TestLinesRateLimited(t *testing.T) {
	var b nixtest.SyncBuffer
	r := Options{Every: 50 * time.Millisecond}.New(&b, Lines)
	start := time.Now()
	r.Phase("import", 100_000, 0)
	for i := range 100_000 {
		r.Step(fmt.Sprintf("/s/%d-x", i), "already there", 0)
		if i%20_000 == 0 {
			time.Sleep(60 * time.Millisecond)
		}
	}
	time.Sleep(150 * time.Millisecond)
	r.Close()
	// One line each Every at most, plus the totals and the last: the
	// bound follows the time the loop took, which -race on a loaded
	// machine stretches.
	most := 3 + int(time.Since(start)/(50*time.Millisecond))
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) < 3 || len(lines) > most || lines[0] != "import: 100000 paths" || !strings.HasPrefix(lines[len(lines)-1], "import 100000/100000 paths (") {
		t.Errorf("lines:\n%s\nwant the phase's totals, then a status line now and then, the last at 100000/100000", b.String())
	}
	if strings.Contains(b.String(), "already there") {
		t.Errorf("lines name paths:\n%s", b.String())
	}
}

// TestLinesQuietPhase: without a terminal, a phase nothing happens in
// writes nothing: verify of a 3-byte tar that is no bundle wrote "verify:
// 3 B" before its error. One that takes a while says so once.
func TestLinesQuietPhase(t *testing.T) {
	var b nixtest.SyncBuffer
	r := Options{Every: time.Hour}.New(&b, Lines)
	r.Phase("verify", 0, 3)
	r.Phase("close", 0, 0)
	r.Close()
	if b.String() != "" {
		t.Errorf("quiet phases wrote %q, want nothing", b.String())
	}

	var slow nixtest.SyncBuffer
	r = Options{Every: 20 * time.Millisecond}.New(&slow, Lines)
	r.Phase("plan", 0, 0)
	time.Sleep(200 * time.Millisecond)
	r.Close()
	if lines := strings.Split(strings.TrimSpace(slow.String()), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "plan (") {
		t.Errorf("a slow quiet phase wrote %q, want one status line", slow.String())
	}
}

// TestTermKeepsLinesApart: a log line written while a status line shows
// clears it first, and the status line comes back below.
func TestTermKeepsLinesApart(t *testing.T) {
	var b bytes.Buffer
	term := NewTerm(&b, true)
	term.setStatus("copy 1/2 paths")
	io.WriteString(term, "warning: something\n")
	term.setStatus("copy 2/2 paths")
	term.endStatus()
	io.WriteString(term, "done\n")
	want := "\r\033[Kcopy 1/2 paths" + "\r\033[Kwarning: something\ncopy 1/2 paths" + "\r\033[Kcopy 2/2 paths\n" + "done\n"
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("terminal bytes (-want +got):\n%s", diff)
	}
	b.Reset()
	r := New(term, Terminal)
	r.Phase("plan", 0, 0)
	r.Clear()
	if got := b.String(); !strings.HasSuffix(got, "\r\033[K") || strings.Contains(got, "\n") {
		t.Errorf("a cleared status line left %q", got)
	}
	var plain bytes.Buffer
	term = NewTerm(&plain, false)
	term.setStatus("copy 1/2 paths")
	io.WriteString(term, "warning: something\n")
	if plain.String() != "warning: something\n" {
		t.Errorf("not a terminal: got %q, want the log line alone", plain.String())
	}
}

func TestPlural(t *testing.T) {
	for n, want := range map[int]string{0: "0 paths", 1: "1 path", 2: "2 paths"} {
		if got := Plural(n, "path"); got != want {
			t.Errorf("Plural(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestIEC(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 30: "5.0 GiB", 1 << 60: "1.0 EiB"} {
		if got := IEC(n); got != want {
			t.Errorf("IEC(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestWork: a realise phase asked for 1 path, for which Nix builds 3
// derivations and fetches 1 path, counts what Nix does, as nix-build
// does, in each format; the phase's paths stay in JSON's phase event.
func TestWork(t *testing.T) {
	realise := func(r *Reporter) {
		r.Phase("realise", 1, 0)
		r.Work(3, 1)
		r.Activity([]string{"dep-a"})
	}
	var lines bytes.Buffer
	r := New(&lines, Lines)
	realise(r)
	r.Close()
	if got, want := lines.String(), "realise: 3 derivations to build, 1 path to fetch\nrealise: dep-a\n"; got != want {
		t.Errorf("Lines = %q, want %q", got, want)
	}
	var js bytes.Buffer
	realise(New(&js, JSON))
	New(&js, JSON).Event(map[string]string{"url": "https://example.org/f?a=1&b=<2>"})
	want := `{"bytes":0,"event":"phase","paths":1,"phase":"realise"}` + "\n" +
		`{"event":"work","phase":"realise","toBuild":3,"toFetch":1}` + "\n" +
		`{"event":"activity","names":["dep-a"],"phase":"realise"}` + "\n" +
		`{"url":"https://example.org/f?a=1&b=<2>"}` + "\n"
	if diff := cmp.Diff(want, js.String()); diff != "" {
		t.Errorf("JSON (-want +got):\n%s", diff)
	}
	var term bytes.Buffer
	r = New(&term, Terminal)
	fakeClock(r)
	realise(r)
	r.Close()
	// Closing draws the last status line, without what Nix works on.
	if got, want := lastStatus(term.String()), "realise 3 derivations to build, 1 path to fetch (0s)\n"; got != want {
		t.Errorf("status line = %q, want %q", got, want)
	}
	// A phase Nix says nothing of counts its paths.
	lines.Reset()
	r = New(&lines, Lines)
	r.Phase("realise", 1, 0)
	r.Activity([]string{"top"})
	r.Close()
	if got, want := lines.String(), "realise: 1 path\nrealise: top\n"; got != want {
		t.Errorf("Lines without Work = %q, want %q", got, want)
	}
}

// TestBuilds: Nix's count of builds replaces Work's count in the status
// line, which shows the build that printed last as nix build does, with
// its phase and line, cut to the terminal; the Lines format writes a line
// per finished build, JSON a "builds" event.
func TestBuilds(t *testing.T) {
	realise := func(r *Reporter) {
		r.Phase("realise", 1, 0)
		r.Work(2, 1)
		r.Builds(0, 2, 0, nil)
		r.Activity([]string{"lib-1.0"})
		r.BuildPhase("lib-1.0", "buildPhase")
		r.BuildLine("lib-1.0", "cc -O2\t-c lib.c")
		r.Builds(1, 2, 0, []string{"lib-1.0"})
		r.Activity([]string{"app-2.0", "glibc-2.39"})
		r.BuildPhase("app-2.0", "buildPhase")
		r.BuildLine("app-2.0", "cc -O2 -o app main.c -llib")
	}
	var lines bytes.Buffer
	r := New(&lines, Lines)
	realise(r)
	r.Builds(2, 2, 0, []string{"app-2.0"})
	r.Close()
	want := "realise: 2 derivations to build, 1 path to fetch\nrealise: lib-1.0\nrealise: [1/2 built] lib-1.0\n" +
		"realise: app-2.0\nrealise: glibc-2.39\nrealise: [2/2 built] app-2.0\n"
	if got := lines.String(); got != want {
		t.Errorf("Lines = %q, want %q", got, want)
	}

	var js bytes.Buffer
	r = New(&js, JSON)
	r.Phase("realise", 1, 0)
	r.Builds(1, 3, 1, []string{"bad-2.0", "lib-1.0"})
	wantJSON := `{"bytes":0,"event":"phase","paths":1,"phase":"realise"}` + "\n" +
		`{"done":1,"event":"builds","failed":1,"finished":["bad-2.0","lib-1.0"],"phase":"realise","total":3}` + "\n"
	if diff := cmp.Diff(wantJSON, js.String()); diff != "" {
		t.Errorf("JSON (-want +got):\n%s", diff)
	}

	for _, tc := range []struct {
		width int
		want  string
	}{
		{0, "realise [1/2 built], 1 path to fetch (0s): app-2.0 (buildPhase) and 1 more: cc -O2 -o app main.c -llib"},
		{50, "realise [1/2 built], 1 path to fetch (0s): app-2…"},
	} {
		var b bytes.Buffer
		term := NewTerm(&b, true)
		term.width = tc.width
		r = New(term, Terminal)
		fakeClock(r)
		realise(r)
		draw(r)
		if got := lastStatus(b.String()); got != tc.want {
			t.Errorf("width %d: status line = %q, want %q", tc.width, got, tc.want)
		}
		r.Close()
	}
	// The line shown is the last one's, of the build that printed it.
	var b bytes.Buffer
	r = New(NewTerm(&b, true), Terminal)
	fakeClock(r)
	r.Phase("realise", 1, 0)
	r.Builds(0, 1, 0, nil)
	r.Activity([]string{"lib-1.0"})
	r.BuildLine("lib-1.0", "checking\tfor cc\x1b")
	draw(r)
	if got, want := lastStatus(b.String()), "realise [0/1 built] (0s): lib-1.0: checking for cc "; got != want {
		t.Errorf("status line = %q, want %q", got, want)
	}
	r.Close()
}

func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		s     string
		width int
		want  string
	}{
		{"hello", 0, "hello"},
		{"hello", 5, "hello"},
		{"hello", 4, "hel…"},
		{"héllo wörld", 6, "héllo…"},
		{"a\tb\rc", -1, "a b c"},
		{"hello", 1, "…"},
	} {
		if got := truncate(tc.s, tc.width); got != tc.want {
			t.Errorf("truncate(%q, %d) = %q, want %q", tc.s, tc.width, got, tc.want)
		}
	}
}

// TestCopies: Nix's count of paths copied from substituters and bytes
// downloaded, as nixcli sums it from Nix 2.8–2.34's internal-json log of
// three paths substituted from an HTTP cache
// (nixcli/testdata/nix-*/realise-http-substitute-internal-json.txt), shows
// as nix build shows it: on the status line with the builds' count, in a
// line per path copied, and as JSON "copies" events when the count of
// paths changes, not for every byte.
func TestCopies(t *testing.T) {
	const mib = 1 << 20
	steps := []CopyCount{
		{Downloaded: 1201, DownloadTotal: 1201}, // the narinfos, before Nix says what it will fetch
		{Total: 3, CopyTotal: 6291808, Downloaded: 1201, DownloadTotal: 6293009},
		{Total: 3, Copied: 2 * mib, CopyTotal: 6291808, Downloaded: 2*mib + 1201, DownloadTotal: 6293009},
		{Done: 1, Total: 3, Copied: 6291568, CopyTotal: 6291808, Downloaded: 6292769, DownloadTotal: 6293009},
		{Done: 3, Total: 3, Copied: 6291808, CopyTotal: 6291808, Downloaded: 6293025, DownloadTotal: 6293025},
	}
	for _, tc := range []struct {
		name   string
		format Format
		builds bool
		want   string
	}{
		{"lines", Lines, false, "realise: 3 paths to fetch\nrealise: big-1.0\nrealise: [1/3 copied (6.0 MiB/6.0 MiB), 6.0 MiB DL]\n" +
			"realise: [3/3 copied (6.0 MiB/6.0 MiB), 6.0 MiB DL]\n"},
		{"json", JSON, false, `{"bytes":0,"event":"phase","paths":3,"phase":"realise"}` + "\n" +
			`{"event":"work","phase":"realise","toBuild":0,"toFetch":3}` + "\n" +
			`{"event":"activity","names":["big-1.0"],"phase":"realise"}` + "\n" +
			`{"bytesCopied":0,"bytesDownloaded":1201,"bytesToCopy":6291808,"bytesToDownload":6293009,"done":0,"event":"copies","failed":0,"phase":"realise","total":3}` + "\n" +
			`{"bytesCopied":6291568,"bytesDownloaded":6292769,"bytesToCopy":6291808,"bytesToDownload":6293009,"done":1,"event":"copies","failed":0,"phase":"realise","total":3}` + "\n" +
			`{"bytesCopied":6291808,"bytesDownloaded":6293025,"bytesToCopy":6291808,"bytesToDownload":6293025,"done":3,"event":"copies","failed":0,"phase":"realise","total":3}` + "\n"},
		{"terminal", Terminal, false, "realise [3/3 copied (6.0 MiB/6.0 MiB), 6.0 MiB DL] (0s)\n"},
		{"terminal with builds", Terminal, true, "realise [1/2 built, 3/3 copied (6.0 MiB/6.0 MiB), 6.0 MiB DL] (0s)\n"},
	} {
		var b bytes.Buffer
		r := New(&b, tc.format)
		fakeClock(r)
		r.Phase("realise", 3, 0)
		if tc.builds {
			r.Work(2, 3)
			r.Builds(1, 2, 0, []string{"lib-1.0"})
		} else {
			r.Work(0, 3)
		}
		r.Activity([]string{"big-1.0"})
		for _, c := range steps {
			r.Copies(c)
		}
		r.Close()
		got := b.String()
		if tc.format == Terminal {
			got = lastStatus(got)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
	// While bytes move, the status line shows them; before Nix counts
	// paths, what it said it will do.
	var b bytes.Buffer
	r := New(NewTerm(&b, true), Terminal)
	fakeClock(r)
	r.Phase("realise", 3, 0)
	r.Work(0, 3)
	r.Copies(steps[0])
	draw(r)
	if got, want := lastStatus(b.String()), "realise 3 paths to fetch (0s)"; got != want {
		t.Errorf("status line before the count = %q, want %q", got, want)
	}
	r.Activity([]string{"big-1.0"})
	r.Copies(steps[2])
	draw(r)
	if got, want := lastStatus(b.String()), "realise [0/3 copied (2.0 MiB/6.0 MiB), 2.0 MiB DL] (0s): big-1.0"; got != want {
		t.Errorf("status line while copying = %q, want %q", got, want)
	}
	r.Close()
}

// TestLinesWithinDownload: without a terminal, a long download of Nix's
// gives the status line every so often, as bytes within a path do, and
// none while nothing moves.
func TestLinesWithinDownload(t *testing.T) {
	var b nixtest.SyncBuffer
	r := Options{Every: 20 * time.Millisecond}.New(&b, Lines)
	r.Phase("realise", 1, 0)
	r.Work(0, 1)
	for i := range 3 {
		r.Copies(CopyCount{Total: 1, Copied: int64(i+1) << 20, CopyTotal: 10 << 20, Downloaded: int64(i+1) << 20, DownloadTotal: 10 << 20})
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	r.Close()
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 4 || lines[0] != "realise: 1 path to fetch" || !strings.HasPrefix(lines[3], "realise [0/1 copied (3.0 MiB/10.0 MiB), 3.0 MiB DL] (") {
		t.Errorf("lines:\n%s\nwant what Nix will do and one line after each step", b.String())
	}
}
