// Package progress shows a long job's progress: a live status line on a
// terminal (phase, paths and bytes done of total, rate, ETA), the same
// status as a line every so often when the output is not a terminal, or one
// JSON object per line for scripts.
//
// A Reporter is driven through Phase and Step, the methods internal/pack's
// Progress interface asks for, and is safe for concurrent use. Without a
// terminal it writes a line at most every Options.Every while paths or
// bytes move, within a long path too, and none while nothing does: a log
// of a 100,000-path job stays readable, and a long path is never minutes
// of silence.
//
// A Term is the output a status line shares with everything else: each
// line written through it first clears the status line, which is then
// redrawn below, so that log lines and the status line never write over
// each other.
package progress

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// Format is how a Reporter writes.
type Format int

const (
	// Lines writes the status line now and then (see Options.Every), a
	// line for each build or download Nix starts (Activity), and a
	// phase's totals before its first line. A phase nothing is written
	// in, such as one that fails at once, writes nothing, unless it takes
	// a while.
	Lines Format = iota
	// Terminal redraws one status line a few times a second.
	Terminal
	// JSON writes one JSON object per line: {"event":"phase",...} and
	// {"event":"path",...}.
	JSON
)

// IsTerminal reports whether f is a terminal: not merely a character
// device, as /dev/null is too ("pack --out - >/dev/null" is no terminal).
func IsTerminal(f *os.File) bool { return isTerminal(f) }

// Term is an output shared by a live status line and other lines. On a
// terminal, a write ending in a newline first clears the status line and
// then redraws it below what was written; elsewhere, and with no status
// line, writes pass through. It is safe for concurrent use.
type Term struct {
	mu     sync.Mutex
	w      io.Writer
	tty    bool
	width  int    // the terminal's columns; 0: ask it (termWidth)
	status string // the status line on screen, "" for none
	hidden bool   // a write without a final newline is on the line
}

// NewTerm returns a Term writing to w; tty says whether w is a terminal,
// where a status line can be redrawn.
func NewTerm(w io.Writer, tty bool) *Term { return &Term{w: w, tty: tty} }

// IsTerminal reports whether t writes to a terminal.
func (t *Term) IsTerminal() bool { return t.tty }

func (t *Term) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.status == "" || !t.tty {
		return t.w.Write(p)
	}
	var b bytes.Buffer
	if !t.hidden {
		b.WriteString("\r\033[K")
	}
	b.Write(p)
	t.hidden = !bytes.HasSuffix(p, []byte("\n"))
	if !t.hidden {
		b.WriteString(t.status)
	}
	if _, err := t.w.Write(b.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}

// setStatus shows s as the status line, replacing the one shown.
func (t *Term) setStatus(s string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.tty {
		return
	}
	// A status line wider than the terminal would wrap, and "\r" would
	// then redraw only its last row.
	s = truncate(s, cmp.Or(t.width, termWidth(t.w))-1)
	t.status = s
	if !t.hidden {
		fmt.Fprintf(t.w, "\r\033[K%s", s)
	}
}

// clearStatus erases the status line.
func (t *Term) clearStatus() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.status != "" && !t.hidden {
		io.WriteString(t.w, "\r\033[K")
	}
	t.status, t.hidden = "", false
}

// endStatus leaves the status line on the screen as an ordinary line.
func (t *Term) endStatus() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.status != "" && !t.hidden {
		fmt.Fprintln(t.w)
	}
	t.status, t.hidden = "", false
}

// Reporter writes progress to w. The zero value is not usable: use New.
type Reporter struct {
	w      io.Writer
	term   *Term // for Terminal
	format Format
	now    func() time.Time
	every  time.Duration // Options.Every, or its default

	mu               sync.Mutex
	phase            string
	paths, donePaths int
	bytes, doneBytes int64
	phaseStart       time.Time
	activity         []string // what Nix works on now
	work             string   // what Nix said it will do, counted (Work)
	fetch            int      // paths Nix said it will fetch (Work)
	built            [3]int   // Nix's builds done, of total, failed (Builds)
	copies           CopyCount
	focus, line      string // the build that printed last, and its line
	buildPhases      map[string]string
	announced        map[string]bool // activities written as lines
	lastLine         time.Time       // Lines: when the last line was written
	quiet            bool            // Lines: nothing written in this phase yet
	linedBytes       int64           // Lines: doneBytes then
	linedPaths       int             // Lines: donePaths then
	linedDL          int64           // Lines: copies.Downloaded then
	stop, stopped    chan struct{}
	closeOnce        sync.Once
}

// Options configure a Reporter. The zero value is the default.
type Options struct {
	// Every is how often, at most, the Lines format writes the status
	// line while paths or bytes move (and once for a phase that is slow
	// to start); 0 means every 10 seconds. Neither Nix nor restic writes
	// periodic progress without a terminal (Nix logs a line per path
	// copied or built, restic nothing unless RESTIC_PROGRESS_FPS is set);
	// 10 seconds is rustic's default log interval, and keeps a
	// multi-hour job's log to some hundreds of lines an hour.
	Every time.Duration
}

// New returns a Reporter with the default Options.
func New(w io.Writer, format Format) *Reporter { return Options{}.New(w, format) }

// New returns a Reporter writing format to w. A Terminal reporter redraws
// its line every 200ms until Close, through w if it is a *Term (give it
// the Term everything else on the terminal goes through).
func (o Options) New(w io.Writer, format Format) *Reporter {
	every := o.Every
	if every <= 0 {
		every = 10 * time.Second
	}
	r := &Reporter{w: w, format: format, now: time.Now, every: every, stop: make(chan struct{}), stopped: make(chan struct{}), buildPhases: map[string]string{}}
	switch format {
	case Terminal:
		if t, ok := w.(*Term); ok && t.tty {
			r.term = t
		} else {
			r.term = NewTerm(w, true)
		}
		go r.tick(200 * time.Millisecond)
	case Lines:
		go r.tick(min(every, time.Second))
	default:
		close(r.stopped)
	}
	return r
}

func (r *Reporter) tick(every time.Duration) {
	defer close(r.stopped)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.mu.Lock()
			switch {
			case r.phase == "":
			case r.format == Terminal:
				r.drawLocked()
			case r.quiet && r.now().Sub(r.phaseStart) >= r.every:
				// A phase long at work says so once, as a log
				// reader waiting on a slow evaluation would ask.
				r.lineLocked(r.statusLocked() + "\n")
			case (r.doneBytes != r.linedBytes || r.donePaths != r.linedPaths || r.copies.Downloaded != r.linedDL) && r.now().Sub(r.lastLine) >= r.every:
				r.lineLocked(r.statusLocked() + "\n")
			}
			r.mu.Unlock()
		}
	}
}

// lineLocked writes a line of the Lines format, after the phase's totals
// if it is the phase's first.
func (r *Reporter) lineLocked(s string) {
	if r.quiet {
		r.quiet = false
		if t := cmp.Or(r.work, totals(r.paths, r.bytes)); t != "" {
			fmt.Fprintf(r.w, "%s: %s\n", r.phase, t)
		}
	}
	io.WriteString(r.w, s)
	r.lastLine, r.linedBytes, r.linedPaths, r.linedDL = r.now(), r.doneBytes, r.donePaths, r.copies.Downloaded
}

// Phase starts a phase expecting paths paths and bytes bytes (0 when
// unknown).
func (r *Reporter) Phase(name string, paths int, bytes int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.phase, r.paths, r.bytes = name, paths, bytes
	r.donePaths, r.doneBytes = 0, 0
	r.phaseStart = r.now()
	r.activity, r.announced, r.work, r.fetch = nil, map[string]bool{}, "", 0
	r.built, r.focus, r.line, r.buildPhases = [3]int{}, "", "", map[string]string{}
	r.copies, r.linedDL = CopyCount{}, 0
	switch r.format {
	case Lines:
		// The totals wait for the phase's first line: alone, a line such
		// as "verify: 3 B" before an error says nothing.
		r.quiet, r.lastLine, r.linedBytes, r.linedPaths = true, r.now(), 0, 0
	case JSON:
		r.jsonLocked(map[string]any{"event": "phase", "phase": name, "paths": paths, "bytes": bytes})
	case Terminal:
		r.drawLocked()
	}
}

// Step records bytes more bytes done and, when path is not "", that path
// finished from source. Only the JSON format lists paths.
func (r *Reporter) Step(path, source string, bytes int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.doneBytes += bytes
	if path == "" {
		return
	}
	r.donePaths++
	if r.format == JSON {
		r.jsonLocked(map[string]any{
			"event": "path", "phase": r.phase, "path": path, "source": source,
			"done": r.donePaths, "paths": r.paths, "bytesDone": r.doneBytes, "bytes": r.bytes,
		})
	}
}

// Activity records what is in progress within the phase, such as the
// derivations Nix is building: the status line shows it, the Lines
// format writes a line for each name once, JSON an "activity" event.
func (r *Reporter) Activity(names []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.activity = append(r.activity[:0], names...)
	for n := range r.buildPhases {
		if !slices.Contains(names, n) {
			delete(r.buildPhases, n) // kept for the builds at work only
		}
	}
	switch r.format {
	case Lines:
		for _, n := range names {
			if !r.announced[n] {
				r.announced[n] = true
				r.lineLocked(fmt.Sprintf("%s: %s\n", r.phase, n))
			}
		}
	case JSON:
		r.jsonLocked(map[string]any{"event": "activity", "phase": r.phase, "names": names})
	case Terminal:
		r.drawLocked()
	}
}

// Work records what Nix says the phase will do, as nix-build says it
// before it starts: build derivations, fetch paths. It counts the phase's
// work in place of its paths, which are what was asked for: the totals
// line and the status line say "3 derivations to build, 1 path to fetch";
// JSON writes a "work" event with toBuild and toFetch.
func (r *Reporter) Work(build, fetch int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var parts []string
	if build > 0 {
		parts = append(parts, Plural(build, "derivation")+" to build")
	}
	if fetch > 0 {
		parts = append(parts, Plural(fetch, "path")+" to fetch")
	}
	r.work, r.fetch = strings.Join(parts, ", "), fetch
	switch r.format {
	case JSON:
		r.jsonLocked(map[string]any{"event": "work", "phase": r.phase, "toBuild": build, "toFetch": fetch})
	case Terminal:
		r.drawLocked()
	}
}

// Builds records Nix's count of builds, as nix build shows "[1/2
// built]": done of total, failed, and the builds that finished since the
// last count. The status line shows the count in place of Work's; the
// Lines format writes a line for each finished build, JSON a "builds"
// event.
func (r *Reporter) Builds(done, total, failed int, finished []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.built = [3]int{done, total, failed}
	switch r.format {
	case Lines:
		for _, n := range finished {
			r.lineLocked(fmt.Sprintf("%s: %s %s\n", r.phase, r.countsLocked(), n))
		}
	case JSON:
		r.jsonLocked(map[string]any{"event": "builds", "phase": r.phase, "done": done, "total": total, "failed": failed, "finished": append([]string{}, finished...)})
	case Terminal:
		r.drawLocked()
	}
}

// BuildPhase records the phase build name entered ("buildPhase"), which
// the status line shows after its name.
func (r *Reporter) BuildPhase(name, phase string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.format == Terminal {
		r.buildPhases[name] = phase
		r.focus = name
	}
}

// BuildLine records a line build name printed: the status line shows the
// latest, as nix build does, until the next redraw.
func (r *Reporter) BuildLine(name, line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.format == Terminal {
		r.focus, r.line = name, line
	}
}

// CopyCount is how far Nix is with the paths it copies from substituters
// and with its downloads: paths Done of Total, Failed; NAR bytes Copied
// of CopyTotal; bytes Downloaded of DownloadTotal. Its fields are
// nixcli.CopyCount's, so that one converts to the other.
type CopyCount struct {
	Done, Total, Failed       int
	Copied, CopyTotal         int64
	Downloaded, DownloadTotal int64
}

// Copies records Nix's count of paths copied from substituters and bytes
// downloaded, as nix build shows "[1/3 copied (2.0 MiB/6.0 MiB), 2.0 MiB
// DL]": the status line shows it after the count of builds. Bytes move
// often, so the Lines format writes the count when a path is copied (or
// fails), and JSON a "copies" event when the count of paths changes.
func (r *Reporter) Copies(c CopyCount) {
	r.mu.Lock()
	defer r.mu.Unlock()
	prev := r.copies
	r.copies = c
	switch {
	case r.format == Lines && (c.Done != prev.Done || c.Failed != prev.Failed):
		r.lineLocked(fmt.Sprintf("%s: %s\n", r.phase, r.countsLocked()))
	case r.format == JSON && (c.Done != prev.Done || c.Failed != prev.Failed || c.Total != prev.Total):
		r.jsonLocked(map[string]any{"event": "copies", "phase": r.phase, "done": c.Done, "total": c.Total, "failed": c.Failed,
			"bytesCopied": c.Copied, "bytesToCopy": c.CopyTotal, "bytesDownloaded": c.Downloaded, "bytesToDownload": c.DownloadTotal})
	}
}

// countsLocked is Nix's counts as nix build shows them: "[1/2 built]",
// "[1/3 built, 1 failed, 2/3 copied (4.0 MiB/6.0 MiB), 4.0 MiB DL]"; ""
// before Nix counted anything.
func (r *Reporter) countsLocked() string {
	var parts []string
	if r.built[1] > 0 {
		parts = append(parts, fmt.Sprintf("%d/%d built", r.built[0], r.built[1]))
		if r.built[2] > 0 {
			parts = append(parts, fmt.Sprintf("%d failed", r.built[2]))
		}
	}
	if c := r.copies; c.Total > 0 {
		s := fmt.Sprintf("%d/%d copied", c.Done, c.Total)
		if c.CopyTotal > 0 {
			s += fmt.Sprintf(" (%s/%s)", IEC(uint64(c.Copied)), IEC(uint64(c.CopyTotal)))
		}
		parts = append(parts, s)
		if c.Failed > 0 {
			parts = append(parts, fmt.Sprintf("%d failed to copy", c.Failed))
		}
	}
	if r.copies.Downloaded > 0 {
		parts = append(parts, IEC(uint64(r.copies.Downloaded))+" DL")
	}
	if len(parts) == 0 {
		return ""
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// Event writes v as one JSON line in the JSON format, and nothing
// otherwise: for a job's final summary.
func (r *Reporter) Event(v any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.format == JSON {
		r.jsonLocked(v)
	}
}

// Close stops redrawing and leaves the last status line on the terminal.
func (r *Reporter) Close() { r.close(false) }

// Clear stops redrawing and erases the status line: for a status that
// only said the job was still at work.
func (r *Reporter) Clear() { r.close(true) }

func (r *Reporter) close(erase bool) {
	r.closeOnce.Do(func() {
		close(r.stop)
		<-r.stopped
		r.mu.Lock()
		defer r.mu.Unlock()
		switch {
		case r.format != Terminal || r.phase == "":
		case erase:
			r.term.clearStatus()
		default:
			r.activity = nil
			r.drawLocked()
			r.term.endStatus()
		}
	})
}

// jsonLocked writes v as one line, with '&', '<' and '>' as they are, as
// every other --json output does: URLs stay readable.
func (r *Reporter) jsonLocked(v any) {
	enc := json.NewEncoder(r.w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

// drawLocked redraws the status line: "copy 12/40 paths, 34.5 MiB/120.0
// MiB, 12.3 MiB/s, ETA 7s (3s)".
func (r *Reporter) drawLocked() {
	r.term.setStatus(r.statusLocked())
}

// The ETA waits until the rate has been measured for this long and over
// this share of the bytes: the first seconds of a copy (plans, small
// paths, a compressor warming up) say little about the rest.
const (
	etaAfter = 3 * time.Second
	etaShare = 0.02
)

func (r *Reporter) statusLocked() string {
	s := r.phase
	if r.built[1] > 0 || r.copies.Total > 0 {
		s += " " + r.countsLocked()
		if r.fetch > 0 && r.copies.Total == 0 {
			s += ", " + Plural(r.fetch, "path") + " to fetch"
		}
	} else if r.work != "" {
		s += " " + r.work
	} else if r.paths > 0 {
		s += fmt.Sprintf(" %d/%s", r.donePaths, Plural(r.paths, "path"))
	}
	elapsed := r.now().Sub(r.phaseStart)
	if r.bytes > 0 || r.doneBytes > 0 {
		s += ", " + IEC(uint64(r.doneBytes))
		if r.bytes > 0 {
			s += "/" + IEC(uint64(r.bytes))
		}
		if elapsed > 0 {
			rate := float64(r.doneBytes) / elapsed.Seconds()
			s += fmt.Sprintf(", %s/s", IEC(uint64(rate)))
			if r.bytes > r.doneBytes && rate > 0 && elapsed >= etaAfter && float64(r.doneBytes) >= etaShare*float64(r.bytes) {
				eta := time.Duration(float64(r.bytes-r.doneBytes) / rate * float64(time.Second))
				s += ", ETA " + eta.Round(time.Second).String()
			}
		}
	}
	s += fmt.Sprintf(" (%s)", elapsed.Round(time.Second))
	if slices.Contains(r.activity, r.focus) {
		// As nix build shows a build: its name, phase and last line.
		s += ": " + r.focus
		if p := r.buildPhases[r.focus]; p != "" {
			s += " (" + p + ")"
		}
		if len(r.activity) > 1 {
			s += fmt.Sprintf(" and %d more", len(r.activity)-1)
		}
		if r.line != "" {
			s += ": " + r.line
		}
	} else if len(r.activity) > 0 {
		const shown = 2
		s += ": " + strings.Join(r.activity[:min(shown, len(r.activity))], ", ")
		if len(r.activity) > shown {
			s += fmt.Sprintf(" and %d more", len(r.activity)-shown)
		}
	}
	return s
}

// truncate cuts s to width runes, ending it in "…", and makes each
// control character a space: a builder's line may hold tabs or escapes.
// A width below 1 leaves s as long as it is.
func truncate(s string, width int) string {
	var b strings.Builder
	n := 0
	for i, c := range s {
		if width > 0 && n == width-1 && utf8.RuneCountInString(s[i:]) > 1 {
			b.WriteRune('…')
			break
		}
		if unicode.IsControl(c) {
			c = ' '
		}
		b.WriteRune(c)
		n++
	}
	return b.String()
}

func totals(paths int, bytes int64) string {
	var parts []string
	if paths > 0 {
		parts = append(parts, Plural(paths, "path"))
	}
	if bytes > 0 {
		parts = append(parts, IEC(uint64(bytes)))
	}
	return strings.Join(parts, ", ")
}

// Plural spells n things: "1 path", "2 paths", "0 paths".
func Plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// IEC spells a byte count in the largest binary unit below it, with one
// decimal: 512 B, 1.5 KiB, 3.2 GiB.
func IEC(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Seconds is a duration whose JSON is seconds, a float: every command's
// --json spells durations so, for scripts and people alike.
type Seconds time.Duration

// MarshalJSON writes s in seconds.
func (s Seconds) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, time.Duration(s).Seconds(), 'f', -1, 64), nil
}
