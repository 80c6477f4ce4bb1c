// Package progress shows a long job's progress: a live status line on a
// terminal (phase, paths and bytes done of total, rate, ETA), one line per
// step when the output is not a terminal, or one JSON object per line for
// scripts.
//
// A Reporter is driven through Phase and Step, the methods internal/pack's
// Progress interface asks for, and is safe for concurrent use.
package progress

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Format is how a Reporter writes.
type Format int

const (
	// Lines writes one line per phase and per finished path.
	Lines Format = iota
	// Terminal redraws one status line a few times a second.
	Terminal
	// JSON writes one JSON object per line: {"event":"phase",...} and
	// {"event":"path",...}.
	JSON
)

// IsTerminal reports whether f is a character device, such as a terminal.
func IsTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Reporter writes progress to w. The zero value is not usable: use New.
type Reporter struct {
	w      io.Writer
	format Format
	now    func() time.Time

	mu               sync.Mutex
	phase            string
	paths, donePaths int
	bytes, doneBytes int64
	phaseStart       time.Time
	drawn            bool // a status line is on the terminal
	stop, stopped    chan struct{}
	closeOnce        sync.Once
}

// New returns a Reporter writing format to w. A Terminal reporter redraws
// its line every 200ms until Close.
func New(w io.Writer, format Format) *Reporter {
	r := &Reporter{w: w, format: format, now: time.Now, stop: make(chan struct{}), stopped: make(chan struct{})}
	if format == Terminal {
		go r.tick(200 * time.Millisecond)
	} else {
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
			if r.phase != "" {
				r.drawLocked()
			}
			r.mu.Unlock()
		}
	}
}

// Phase starts a phase expecting paths paths and bytes bytes (0 when
// unknown).
func (r *Reporter) Phase(name string, paths int, bytes int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.phase, r.paths, r.bytes = name, paths, bytes
	r.donePaths, r.doneBytes = 0, 0
	r.phaseStart = r.now()
	switch r.format {
	case Lines:
		fmt.Fprintf(r.w, "%s: %s\n", name, totals(paths, bytes))
	case JSON:
		r.jsonLocked(map[string]any{"event": "phase", "phase": name, "paths": paths, "bytes": bytes})
	case Terminal:
		r.drawLocked()
	}
}

// Step records bytes more bytes done and, when path is not "", that path
// finished from source.
func (r *Reporter) Step(path, source string, bytes int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.doneBytes += bytes
	if path == "" {
		return
	}
	r.donePaths++
	switch r.format {
	case Lines:
		fmt.Fprintf(r.w, "%s %d/%d %s (%s)\n", r.phase, r.donePaths, r.paths, path, source)
	case JSON:
		r.jsonLocked(map[string]any{
			"event": "path", "phase": r.phase, "path": path, "source": source,
			"done": r.donePaths, "paths": r.paths, "bytesDone": r.doneBytes, "bytes": r.bytes,
		})
	}
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
func (r *Reporter) Close() {
	r.closeOnce.Do(func() {
		close(r.stop)
		<-r.stopped
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.format == Terminal && r.drawn {
			r.drawLocked()
			fmt.Fprintln(r.w)
			r.drawn = false
		}
	})
}

func (r *Reporter) jsonLocked(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	r.w.Write(append(b, '\n'))
}

// drawLocked redraws the status line: "copy 12/40 paths, 34.5 MiB/120.0
// MiB, 12.3 MiB/s, ETA 7s".
func (r *Reporter) drawLocked() {
	fmt.Fprintf(r.w, "\r\033[K%s", r.statusLocked())
	r.drawn = true
}

func (r *Reporter) statusLocked() string {
	s := r.phase
	if r.paths > 0 {
		s += fmt.Sprintf(" %d/%d paths", r.donePaths, r.paths)
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
			if r.bytes > r.doneBytes && rate > 0 {
				eta := time.Duration(float64(r.bytes-r.doneBytes) / rate * float64(time.Second))
				s += ", ETA " + eta.Round(time.Second).String()
			}
		}
	}
	return s + fmt.Sprintf(" (%s)", elapsed.Round(time.Second))
}

func totals(paths int, bytes int64) string {
	s := ""
	if paths > 0 {
		s = fmt.Sprintf("%d paths", paths)
	}
	if bytes > 0 {
		s += ", " + IEC(uint64(bytes))
	}
	if s == "" {
		s = "started"
	}
	return s
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
