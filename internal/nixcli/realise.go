package nixcli

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// RealiseOptions say what to hear while Nix realises paths. The zero
// value hears nothing but still gives a failed build's last log lines in
// its error.
type RealiseOptions struct {
	// Activity, when set, gets the names of what Nix is building or
	// substituting ("hello-2.12"), whenever that changes; none when idle.
	Activity func(names []string)
	// BuildLog, when set, gets every line a builder prints, with the
	// build's name, as nix build --print-build-logs shows "hello> line".
	BuildLog func(name, line string)
	// BuildPhase, when set, gets the phase a build enters, as nixpkgs'
	// stdenv tells Nix ("buildPhase"), and nix build shows "building
	// hello-2.12 (buildPhase)".
	BuildPhase func(name, phase string)
	// Builds, when set, gets Nix's count of derivations built, as nix
	// build's "[3/7 built]", whenever it changes.
	Builds func(BuildCount)
	// Copies, when set, gets Nix's count of paths copied from
	// substituters and bytes downloaded, as nix build's "[1/3 copied
	// (2.0/6.0 MiB), 2.0 MiB DL]", whenever it changes: often, as bytes
	// arrive.
	Copies func(CopyCount)
	// Work, when set, gets what Nix says it will do before it starts,
	// as nix-build's "these 3 derivations will be built" and "these 2
	// paths will be fetched" do: how many of each. Not called when Nix
	// has nothing to do.
	Work func(build, fetch int)
	// LogLines is how many of a failed build's last log lines its error
	// shows; 0 means 10, as nix-build's log-lines did until Nix 2.19, and
	// a negative number none, for a caller that has shown every line
	// (nix build -L's error does not repeat them either).
	LogLines int
}

// BuildCount is how far Nix is with the derivations it builds.
type BuildCount struct {
	// Done derivations built of Total; Failed failed. Total is what Nix
	// said it would build, or Nix's own count of builds expected if that
	// is more (or Nix said nothing).
	Done, Total, Failed int
	// Finished are the builds that finished since the last count, by
	// name ("hello-2.12"). Nix counts builds, not which one finished:
	// it is the one whose activity stopped, else the one Nix started
	// first, which is exact unless Nix runs several builds at once.
	Finished []string
}

// Realise builds or substitutes paths (nix-store --realise) and returns
// what Nix printed: the outputs of each .drv, and other paths as given.
//
// Nix reports its progress as --log-format internal-json, the structured
// log every Nix since 2.3 writes the same way (nix-output-monitor reads
// it too), rather than its human stderr, whose wording changes between
// versions: an activity starts and stops for each build and substitution,
// and each builder line is a result of its build. From it Realise tells
// opts what is being built, and an *ExitError carries Nix's error message
// followed by the last log lines of each build that failed, as nix build
// shows them.
func (r *Runner) Realise(ctx context.Context, opts RealiseOptions, paths ...storepath.Path) ([]storepath.Path, error) {
	if len(paths) == 0 {
		return nil, nil
	}
	dir, err := r.StoreDir(ctx)
	if err != nil {
		return nil, err
	}
	lg := &buildLog{opts: opts, log: r.logger(), ctx: ctx, dir: dir, acts: map[int64]*activity{}}
	if lg.opts.LogLines == 0 {
		lg.opts.LogLines = 10
	}
	var out []storepath.Path
	args := append([]string{"--realise", "--log-format", "internal-json", "--"}, pathStrings(paths)...)
	err = r.streamStderr(ctx, r.nixStore(), args, lg, scanLines(func(line string) error {
		p, err := dir.Parse(line)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrUnexpectedOutput, err)
		}
		out = append(out, p)
		return nil
	}))
	lg.mu.Lock()
	lg.tellWork()
	lg.mu.Unlock()
	return out, err
}

// Activity types and result types of Nix's internal-json log
// (libutil/logging.hh), the same from Nix 2.3 to 2.34.
const (
	actBuilds         = 104 // all builds; its progress counts them
	actBuild          = 105
	actSubstitute     = 108
	resBuildLogLine   = 101
	resSetPhase       = 104
	resProgress       = 105 // done, expected, running, failed
	lvlError, lvlWarn = 0, 1
	lvlInfo           = 3
)

// logEvent is one "@nix {...}" line.
type logEvent struct {
	Action string            `json:"action"`
	ID     int64             `json:"id"`
	Level  int               `json:"level"`
	Type   int               `json:"type"`
	Text   string            `json:"text"`
	Msg    string            `json:"msg"`
	Fields []json.RawMessage `json:"fields"`
}

func (e *logEvent) field(i int) string {
	if i >= len(e.Fields) {
		return ""
	}
	var s string
	json.Unmarshal(e.Fields[i], &s)
	return s
}

// number is field i as a count, 0 if it is none.
func (e *logEvent) number(i int) int {
	n := e.int64(i)
	if n > math.MaxUint32 {
		return 0 // no count of paths or builds is that large
	}
	return int(n)
}

// activity is a build or substitution in progress.
type activity struct {
	name     string // "hello-2.12"
	drv      string // the .drv path, for a build
	tail     []string
	lastErr  string // the last log line that starts "error:"
	start    int    // order started
	finished bool   // a build Nix counted as done or failed
	stopped  bool   // a build whose activity stopped
}

// progress is an actBuilds activity's count.
type progress struct{ done, expected, failed int }

// buildLog reads nix-store's internal-json stderr. It is the command's
// stderr, so exec calls Write from one goroutine; mu guards what the
// caller reads after Wait.
type buildLog struct {
	opts RealiseOptions
	log  *slog.Logger
	ctx  context.Context
	dir  storepath.Dir

	mu      sync.Mutex
	partial []byte
	acts    map[int64]*activity
	started int
	builds  []*activity // every build, in the order started
	errors  []string    // Nix's error messages, ANSI escapes removed
	plain   []string    // lines that are not JSON, kept for the error
	// work is what Nix said it will do: derivations to build, paths to
	// fetch; listed once Nix said it, workPending until it is told.
	work                [2]int
	listed, workPending bool
	// counts are the actBuilds activities running, counted is the sum
	// of those stopped, told the count last told.
	counts  map[int64]progress
	counted progress
	told    BuildCount
	copies  copyLog
	// unfinished are builds not yet counted finished, in start order;
	// stopped those of them whose activity stopped.
	unfinished, stopped []*activity
}

func (l *buildLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.line(string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
	if len(l.partial) > stderrMax {
		l.partial = l.partial[:0]
	}
	return len(p), nil
}

func (l *buildLog) line(s string) {
	s = strings.TrimRight(s, "\r")
	js, ok := strings.CutPrefix(s, "@nix ")
	var e logEvent
	if !ok || json.Unmarshal([]byte(js), &e) != nil {
		if addRootWarning(s) {
			return
		}
		l.plain = append(l.plain, s)
		if len(l.plain) > 100 {
			l.plain = l.plain[1:]
		}
		l.log.WarnContext(l.ctx, "nix-store: "+s)
		return
	}
	switch e.Action {
	case "msg":
		msg := strings.TrimSpace(ansiEscape.ReplaceAllString(e.Msg, ""))
		switch {
		case e.Level <= lvlError:
			l.errors = append(l.errors, msg)
		case e.Level == lvlWarn && !addRootWarning(msg):
			l.log.WarnContext(l.ctx, strings.TrimPrefix(msg, "warning: "))
		case e.Level <= lvlInfo:
			if m := missingHeader.FindStringSubmatch(msg); m != nil {
				n, _ := strconv.Atoi(cmp.Or(m[1], "1"))
				l.work[strings.Count(m[2], "fetched")], l.listed, l.workPending = n, true, true
			}
			l.log.InfoContext(l.ctx, msg)
		default:
			l.log.DebugContext(l.ctx, msg)
		}
	case "start":
		l.tellWork() // Nix lists what it will do, then starts
		if l.copies.start(e.ID, e.Type) {
			return
		}
		var a *activity
		switch e.Type {
		case actBuilds:
			if l.counts == nil {
				l.counts = map[int64]progress{}
			}
			l.counts[e.ID] = progress{}
			return
		case actBuild:
			drv := e.field(0)
			a = &activity{name: strings.TrimSuffix(nameOf(drv), ".drv"), drv: drv}
			l.builds = append(l.builds, a)
			l.unfinished = append(l.unfinished, a)
		case actSubstitute:
			a = &activity{name: nameOf(e.field(0))}
		default:
			return
		}
		l.started++
		a.start = l.started
		l.acts[e.ID] = a
		l.log.DebugContext(l.ctx, strings.TrimSpace(ansiEscape.ReplaceAllString(e.Text, "")))
		l.activity()
	case "stop":
		l.copies.stop(e.ID)
		l.tellCopies()
		if p, ok := l.counts[e.ID]; ok {
			delete(l.counts, e.ID)
			l.counted.done += p.done
			l.counted.failed += p.failed
			l.counted.expected += p.done + p.failed
		}
		if a, ok := l.acts[e.ID]; ok {
			delete(l.acts, e.ID)
			if a.drv != "" && !a.finished && !a.stopped {
				a.stopped = true
				l.stopped = append(l.stopped, a)
			}
			l.activity()
		}
	case "result":
		if l.copies.result(&e) {
			l.tellCopies()
			return
		}
		if _, ok := l.counts[e.ID]; ok && e.Type == resProgress {
			l.counts[e.ID] = progress{done: e.number(0), expected: e.number(1), failed: e.number(3)}
			l.count()
			return
		}
		if a := l.acts[e.ID]; a != nil {
			l.buildResult(a, &e)
		}
	}
}

// buildResult takes a result of build a: the phase it enters, or a line
// its builder printed.
func (l *buildLog) buildResult(a *activity, e *logEvent) {
	if e.Type == resSetPhase && a.drv != "" && l.opts.BuildPhase != nil {
		l.opts.BuildPhase(a.name, e.field(0))
	}
	if e.Type != resBuildLogLine {
		return
	}
	text := ansiEscape.ReplaceAllString(e.field(0), "")
	if t := strings.TrimSpace(text); strings.HasPrefix(t, "error:") {
		a.lastErr = t
	}
	if l.opts.LogLines > 0 {
		a.tail = append(a.tail, text)
		if len(a.tail) > l.opts.LogLines {
			a.tail = a.tail[1:]
		}
	}
	if l.opts.BuildLog != nil {
		l.opts.BuildLog(a.name, text)
	}
}

// addRootWarning reports whether s is nix-store's warning that what it
// realised has no GC root: callers copy it at once, and the warning would
// only alarm.
// missingHeader matches the headers of Nix's list of what it will do
// (printMissing, the same from Nix 2.3 to 2.34): "these 3 derivations will
// be built:", "this path will be fetched (0.01 MiB download, …):".
var missingHeader = regexp.MustCompile(`^(?:these (\d+)|this) (?:derivations?|paths?) will be (built|fetched)`)

// tellWork passes on what Nix said it will do, once.
func (l *buildLog) tellWork() {
	if l.workPending && l.opts.Work != nil {
		l.opts.Work(l.work[0], l.work[1])
	}
	l.workPending = false
}

func addRootWarning(s string) bool { return strings.Contains(s, "you did not specify '--add-root'") }

// count tells opts Nix's count of builds, when it changed, and which
// builds it counted.
func (l *buildLog) count() {
	sum := l.counted
	for _, p := range l.counts {
		sum.done += p.done
		sum.expected += p.expected
		sum.failed += p.failed
	}
	c := BuildCount{Done: sum.done, Failed: sum.failed}
	// Nix's own count of builds expected may grow past what it said it
	// would build (2.34 counts some twice) or shrink after a failure
	// (2.8), and counts derivations it substitutes (2.8): what it said
	// wins, none if it said it will only fetch, unless it builds more.
	c.Total = max(sum.expected, c.Done+c.Failed)
	if w := l.work[0]; l.listed && w >= c.Done+c.Failed {
		c.Total = w
	}
	if c.Done == l.told.Done && c.Total == l.told.Total && c.Failed == l.told.Failed {
		return
	}
	for n := c.Done + c.Failed - l.told.Done - l.told.Failed; n > 0; n-- {
		a := l.nextFinished()
		if a == nil {
			break
		}
		a.finished = true
		c.Finished = append(c.Finished, a.name)
	}
	l.told = c
	if l.opts.Builds != nil {
		l.opts.Builds(c)
	}
	if len(c.Finished) > 0 {
		l.activity()
	}
}

// tellCopies tells opts Nix's count of copies, when it changed.
func (l *buildLog) tellCopies() {
	if l.opts.Copies == nil {
		return
	}
	c := l.copies.count()
	// As for builds: Nix's count of paths to copy may start above what
	// it said it would fetch; what it said wins, unless it copies more.
	if w := l.work[1]; l.listed && w >= c.Done+c.Failed {
		c.Total = w
	}
	if c != l.copies.told {
		l.copies.told = c
		l.opts.Copies(c)
	}
}

// nextFinished is the build Nix most likely finished: the first whose
// activity stopped, else the first started of those it has not counted.
func (l *buildLog) nextFinished() *activity {
	for len(l.stopped) > 0 {
		a := l.stopped[0]
		l.stopped = l.stopped[1:]
		if !a.finished {
			return a
		}
	}
	for len(l.unfinished) > 0 {
		a := l.unfinished[0]
		l.unfinished = l.unfinished[1:]
		if !a.finished {
			return a
		}
	}
	return nil
}

// activity tells opts what is in progress now: not the builds Nix
// counted as finished, whose activities Nix 2.8 stops only at its exit.
func (l *buildLog) activity() {
	if l.opts.Activity == nil {
		return
	}
	acts := slices.SortedFunc(func(yield func(*activity) bool) {
		for _, a := range l.acts {
			if a.finished {
				continue
			}
			if !yield(a) {
				return
			}
		}
	}, func(a, b *activity) int { return a.start - b.start })
	names := make([]string, len(acts))
	for i, a := range acts {
		names[i] = a.name
	}
	l.opts.Activity(names)
}

// nameOf is the name part of a store path string, or the string itself.
func nameOf(p string) string {
	base := p[strings.LastIndexByte(p, '/')+1:]
	if _, name, ok := strings.Cut(base, "-"); ok {
		return name
	}
	return base
}

// Tail is what an *ExitError shows: Nix's error messages, then the last
// log lines of each build that failed.
func (l *buildLog) Tail() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, s := range l.plain {
		b.WriteString(s + "\n")
	}
	failed := map[string]bool{}
	for _, msg := range l.errors {
		if strings.TrimSpace(strings.TrimPrefix(msg, "error:")) == "" {
			continue
		}
		if !strings.HasPrefix(msg, "error:") {
			msg = "error: " + msg
		}
		b.WriteString(msg + "\n")
		// A message naming one derivation is about its failure; one
		// naming several sums up a failed nix-store (Nix 2.8's "build
		// of A, B failed"), some of which may have built.
		if drvs := l.drvsIn(msg); len(drvs) == 1 {
			failed[drvs[0]] = true
		}
	}
	for _, a := range l.builds {
		if !failed[a.drv] || len(a.tail) == 0 {
			continue
		}
		if len(a.tail) == 1 {
			fmt.Fprintf(&b, "the last log line of %s:\n", a.name)
		} else {
			fmt.Fprintf(&b, "the last %d log lines of %s:\n", len(a.tail), a.name)
		}
		for _, t := range a.tail {
			b.WriteString("> " + t + "\n")
		}
		fmt.Fprintf(&b, "(nix-store --read-log %s shows the whole log)\n", a.drv)
		failed[a.drv] = false // once, even if built twice
	}
	return []byte(b.String())
}

// drvsIn lists the derivations msg names, once each.
func (l *buildLog) drvsIn(msg string) []string {
	drvRE := regexp.MustCompile(regexp.QuoteMeta(string(l.dir)) + `/[0-9a-z]{32}-[^'"\s]+\.drv`)
	return slices.Compact(drvRE.FindAllString(msg, -1))
}

// NetworkFailed reports whether Nix failed for want of network and for
// nothing else: each of its errors is a network failure (a substitution,
// say), names a build whose own last error was one (builtin:fetchurl
// logs its download's failure, then fails), or names a derivation that
// never started building here (one whose dependency failed) or several
// (2.8's "build of A, B failed" sums up the others).
func (l *buildLog) NetworkFailed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	network := false
	for _, msg := range l.errors {
		if strings.TrimSpace(strings.TrimPrefix(msg, "error:")) == "" {
			continue
		}
		if isNetworkError(msg) {
			network = true
			continue
		}
		drvs := l.drvsIn(msg)
		if len(drvs) > 1 {
			continue
		}
		if len(drvs) == 0 {
			return false
		}
		var build *activity // the last build of it
		for _, a := range l.builds {
			if a.drv == drvs[0] {
				build = a
			}
		}
		switch {
		case build == nil:
		case isNetworkError(build.lastErr):
			network = true
		default:
			return false
		}
	}
	return network
}
