package nixcli

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
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
	actBuild          = 105
	actSubstitute     = 108
	resBuildLogLine   = 101
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

// activity is a build or substitution in progress.
type activity struct {
	name  string // "hello-2.12"
	drv   string // the .drv path, for a build
	tail  []string
	start int // order started
}

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
	// fetch; workPending until it is told.
	work        [2]int
	workPending bool
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
				l.work[strings.Count(m[2], "fetched")], l.workPending = n, true
			}
			l.log.InfoContext(l.ctx, msg)
		default:
			l.log.DebugContext(l.ctx, msg)
		}
	case "start":
		l.tellWork() // Nix lists what it will do, then starts
		var a *activity
		switch e.Type {
		case actBuild:
			drv := e.field(0)
			a = &activity{name: strings.TrimSuffix(nameOf(drv), ".drv"), drv: drv}
			l.builds = append(l.builds, a)
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
		if _, ok := l.acts[e.ID]; ok {
			delete(l.acts, e.ID)
			l.activity()
		}
	case "result":
		a := l.acts[e.ID]
		if a == nil || e.Type != resBuildLogLine {
			return
		}
		text := ansiEscape.ReplaceAllString(e.field(0), "")
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

// activity tells opts what is in progress now.
func (l *buildLog) activity() {
	if l.opts.Activity == nil {
		return
	}
	acts := slices.SortedFunc(func(yield func(*activity) bool) {
		for _, a := range l.acts {
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
	drvRE := regexp.MustCompile(regexp.QuoteMeta(string(l.dir)) + `/[0-9a-z]{32}-[^'"\s]+\.drv`)
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
		if drvs := slices.Compact(drvRE.FindAllString(msg, -1)); len(drvs) == 1 {
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
