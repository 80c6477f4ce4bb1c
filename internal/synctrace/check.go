package synctrace

import (
	"cmp"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
)

// Rules say what a run must keep durable, and where.
type Rules struct {
	// Root is the directory the run publishes into: a cache, a bundle,
	// the directory a tar is renamed into. What is under it with a name
	// beginning with "." at any depth (temp files, staging directories,
	// locks) is scratch no one reads after a power cut.
	Root string
	// NARs maps each narinfo's path to its NAR file's path.
	NARs map[string]string
	// Record tells the files that vouch for everything the run changed
	// under Root before them (an import's bundle record, volumes.json);
	// nil means none.
	Record func(path string) bool
	// Unsynced tells the files that may be renamed into place before
	// their bytes are durable because nothing trusts them until a
	// narinfo names them (a pack's NAR files); the narinfo rule still
	// holds for them. nil means none.
	Unsynced func(path string) bool
	// Scratch tells, beside the names beginning with ".", the files and
	// directories under Root that are scratch, everything in them too (a
	// volume set's spool, which the next pack sweeps or verifies before
	// it takes anything from it). nil means none.
	Scratch func(path string) bool
	// Mounts are the mount points of the file systems, for syncfs; none
	// means that everything is on one file system.
	Mounts []string
}

// Violation is a moment at which a power cut would have left something
// the rules forbid.
type Violation struct {
	Rule    string
	At      *Event // the call at which the rule broke; nil at exit
	Problem string
	Cause   *Event // the change that was not durable yet, if one
}

// The rules Check enforces, by the name a Violation gives.
const (
	RuleSyncBeforeRename = "sync before rename"      // a file's bytes are durable before it is renamed (or linked) into place
	RuleWrittenInPlace   = "written in place"        // nothing writes to a file where readers find it: it goes there whole
	RuleNARFirst         = "NAR before narinfo"      // a narinfo appears only once its NAR file is durable, name and bytes
	RuleNarinfoGoneFirst = "narinfo gone before NAR" // a NAR file goes only once every narinfo naming it is durably gone
	RuleRecordLast       = "record last"             // a record appears only once everything before it is durable
	RuleRecordGoneFirst  = "record gone first"       // nothing a removed record vouched for changes until its removal is durable
	RuleDurableAtExit    = "durable at exit"         // everything is durable when the run ends
)

func (v Violation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s", v.Rule, v.Problem)
	if v.Cause != nil {
		fmt.Fprintf(&b, "\n\t%s", v.Cause)
	}
	if v.At != nil {
		fmt.Fprintf(&b, "\n\t%s", v.At)
	}
	return b.String()
}

// change is the last change to a file's bytes or to a directory entry.
type change struct {
	ev      int  // the event that made it
	durable int  // the line of the sync that made it durable; 0 if none has
	entry   bool // a change to a directory entry, not to bytes
	removed bool // the entry's change removed it
}

type checker struct {
	Rules
	events  []Event
	data    map[string]*change // path → the last change to its bytes
	entries map[string]*change // path → the last change to its directory entry
	pending map[*change]string // changes not durable yet → their path
	dirs    map[string]bool
	narOf   map[string][]string // NAR file → the narinfos naming it
	gone    map[string]*change  // removed record → its removal, until a change after it is checked
	vs      []Violation
}

// Check replays events and returns every moment at which a power cut
// would break r, in the order of the trace. Its model of a power cut: a
// file's bytes are durable once an fsync or fdatasync of it, or a syncfs
// of its file system, began after their last change and returned; a
// directory entry (made, renamed, removed) likewise once an fsync of its
// directory or a syncfs did.
func Check(events []Event, r Rules) []Violation {
	c := &checker{Rules: r, events: events, data: map[string]*change{}, entries: map[string]*change{},
		pending: map[*change]string{}, dirs: map[string]bool{}, narOf: map[string][]string{}, gone: map[string]*change{}}
	for narinfo, nar := range r.NARs {
		c.narOf[nar] = append(c.narOf[nar], narinfo)
	}
	c.Mounts = slices.Clone(r.Mounts)
	slices.SortFunc(c.Mounts, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	for i := range events {
		c.step(i)
	}
	c.atExit()
	slices.SortStableFunc(c.vs, func(a, b Violation) int { return cmp.Compare(line(a.At), line(b.At)) })
	return c.vs
}

// line is where e returned; the end for nil.
func line(e *Event) int {
	if e == nil {
		return math.MaxInt
	}
	return e.Line
}

func (c *checker) step(i int) {
	e := &c.events[i]
	if !e.Kind.Syncs() {
		c.goneFirst(e)
	}
	switch e.Kind {
	case Write:
		if c.visible(e.Path) {
			c.violate(RuleWrittenInPlace, e, nil, "%s written under the name readers find it by: a power cut there leaves it part written", e.Path)
		}
		c.set(false, e.Path, i, false)
	case Create:
		if e.Dir {
			c.dirs[e.Path] = true
		}
		c.appears(e, e.Path)
		c.set(true, e.Path, i, false)
	case Remove:
		c.removes(e)
		c.moveTree(e.Path, "")
		c.set(true, e.Path, i, true)
		if c.isRecord(e.Path) {
			c.gone[e.Path] = c.entries[e.Path]
		}
	case Rename:
		c.renamed(e, e.Path, e.NewPath)
		if e.Exchange {
			c.renamed(e, e.NewPath, e.Path)
			c.moveTree(e.Path, "\x00swap")
			c.moveTree(e.NewPath, e.Path)
			c.moveTree("\x00swap", e.NewPath)
		} else {
			c.moveTree(e.Path, e.NewPath)
		}
		c.set(true, e.Path, i, !e.Exchange)
		c.set(true, e.NewPath, i, false)
	case Link:
		c.renamed(e, e.Path, e.NewPath)
		c.set(true, e.NewPath, i, false)
		c.copyData(e.Path, e.NewPath)
	default: // a sync
		for ch, path := range c.pending {
			if c.events[ch.ev].Line < e.Start && c.covers(e, path, ch.entry) {
				ch.durable = e.Line
				delete(c.pending, ch)
			}
		}
	}
}

// covers tells whether sync e makes durable a change to path: its bytes,
// or if entry its directory entry.
func (c *checker) covers(e *Event, path string, entry bool) bool {
	switch e.Kind {
	case SyncAll:
		return true
	case SyncFS:
		return c.fsOf(e.Path) == c.fsOf(path)
	}
	if entry {
		return filepath.Dir(path) == e.Path
	}
	return path == e.Path
}

func (c *checker) fsOf(path string) string {
	for _, m := range c.Mounts {
		if within(path, m) {
			return m
		}
	}
	return ""
}

// set notes a change, by event ev, to path's bytes or, if entry, to its
// directory entry.
func (c *checker) set(entry bool, path string, ev int, removed bool) {
	m := c.data
	if entry {
		m = c.entries
	}
	if old := m[path]; old != nil {
		delete(c.pending, old)
	}
	ch := &change{ev: ev, entry: entry, removed: removed}
	m[path] = ch
	c.pending[ch] = path
	c.dirs[filepath.Dir(path)] = true
}

// copyData gives to, a new hard link, what is known of from's bytes.
// From then on each is its own: a sync of one does not count for the
// other, which can only report more.
func (c *checker) copyData(from, to string) {
	if old := c.data[to]; old != nil {
		delete(c.pending, old)
		delete(c.data, to)
	}
	ch := c.data[from]
	if ch == nil {
		return
	}
	cp := *ch
	c.data[to] = &cp
	if _, ok := c.pending[ch]; ok {
		c.pending[&cp] = to
	}
}

// moveTree moves what is known of path's bytes, and of everything under
// it, to to; to == "" forgets it (a removal). The entry of path itself
// stays: the caller changes it.
func (c *checker) moveTree(path, to string) {
	type move struct {
		entry    bool
		from, to string
	}
	moves := []move{{false, path, to}}
	if c.dirs[path] {
		for _, m := range []map[string]*change{c.data, c.entries} {
			for p, ch := range m {
				if p != path && within(p, path) {
					moves = append(moves, move{ch.entry, p, to + strings.TrimPrefix(p, path)})
				}
			}
		}
		for d := range c.dirs {
			if within(d, path) {
				delete(c.dirs, d)
				if to != "" {
					c.dirs[to+strings.TrimPrefix(d, path)] = true
				}
			}
		}
	}
	for _, mv := range moves {
		m := c.data
		if mv.entry {
			m = c.entries
		}
		ch := m[mv.from]
		if ch == nil {
			continue
		}
		delete(m, mv.from)
		if to == "" {
			delete(c.pending, ch)
			continue
		}
		if old := m[mv.to]; old != nil {
			delete(c.pending, old)
		}
		m[mv.to] = ch
		if _, ok := c.pending[ch]; ok {
			c.pending[ch] = mv.to
		}
	}
}

// within tells whether path is dir or under it.
func within(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/") || dir == "/"
}

// visible tells whether path is under Root and not scratch.
func (c *checker) visible(path string) bool {
	if !within(path, c.Root) {
		return false
	}
	rel := strings.TrimPrefix(strings.TrimPrefix(path, c.Root), "/")
	dir := c.Root
	for part := range strings.SplitSeq(rel, "/") {
		dir = filepath.Join(dir, part)
		if strings.HasPrefix(part, ".") || c.Scratch != nil && c.Scratch(dir) {
			return false
		}
	}
	return true
}

// durableBefore tells whether ch (nil: no change in the trace) was
// durable before line.
func durableBefore(ch *change, line int) bool {
	return ch == nil || ch.durable != 0 && ch.durable < line
}

func (c *checker) violate(rule string, at *Event, cause *change, format string, args ...any) {
	v := Violation{Rule: rule, At: at, Problem: fmt.Sprintf(format, args...)}
	if cause != nil {
		v.Cause = &c.events[cause.ev]
	}
	c.vs = append(c.vs, v)
}

// renamed checks a rename or link of from to to, by e: into place,
// from's bytes (a directory's, everything in it) must be durable.
func (c *checker) renamed(e *Event, from, to string) {
	c.appears(e, to)
	if !c.visible(to) || c.Unsynced != nil && c.Unsynced(to) {
		return
	}
	for p, ch := range c.data {
		if (p == from || c.dirs[from] && within(p, from)) && !durableBefore(ch, e.Start) {
			c.violate(RuleSyncBeforeRename, e, ch, "%s %s to %s before its bytes were durable: no fsync of %s, or syncfs, after its last write", from, moved(e), to, p)
		}
	}
	if !c.dirs[from] {
		return
	}
	for p, ch := range c.entries {
		if within(p, from) && p != from && !durableBefore(ch, e.Start) {
			c.violate(RuleSyncBeforeRename, e, ch, "%s %s to %s before its entry %s was durable: no fsync of %s, or syncfs, after it changed", from, moved(e), to, p, filepath.Dir(p))
		}
	}
}

func moved(e *Event) string {
	if e.Kind == Link {
		return "linked"
	}
	return "renamed"
}

// appears checks what a file's appearing at path, by e, needs: a
// narinfo's NAR file durable, name and bytes; a record's everything
// before it.
func (c *checker) appears(e *Event, path string) {
	if nar, ok := c.NARs[path]; ok {
		if ch := c.entries[nar]; ch != nil && ch.removed {
			c.violate(RuleNARFirst, e, ch, "narinfo %s appeared naming %s, which was removed", path, nar)
		} else if !durableBefore(ch, e.Start) {
			c.violate(RuleNARFirst, e, ch, "narinfo %s appeared before the directory entry of its NAR file %s was durable: no fsync of %s, or syncfs, after it", path, nar, filepath.Dir(nar))
		}
		if ch := c.data[nar]; !durableBefore(ch, e.Start) {
			c.violate(RuleNARFirst, e, ch, "narinfo %s appeared before the bytes of its NAR file %s were durable", path, nar)
		}
	}
	if c.Record != nil && c.visible(path) && c.Record(path) {
		c.undurable(RuleRecordLast, e, path, fmt.Sprintf("record %s appeared before", path))
	}
}

func (c *checker) isRecord(path string) bool {
	return c.Record != nil && c.visible(path) && c.Record(path)
}

// goneFirst checks a change by e under Root: every record removed before
// it, which vouched for what is there, must be durably gone. Records
// themselves are checked when they appear.
func (c *checker) goneFirst(e *Event) {
	changed := ""
	for _, p := range []string{e.Path, e.NewPath} {
		if p != "" && c.visible(p) && !c.isRecord(p) {
			changed = p
			break
		}
	}
	if changed == "" {
		return
	}
	for rec, ch := range c.gone {
		switch {
		case c.entries[rec] != ch: // it came back, or moved
			delete(c.gone, rec)
		case !durableBefore(ch, e.Start):
			c.violate(RuleRecordGoneFirst, e, ch, "%s changed before the removal of record %s, which vouched for it, was durable: no fsync of %s, or syncfs, after it", changed, rec, filepath.Dir(rec))
			delete(c.gone, rec)
		}
	}
}

// removes checks a removal by e: a NAR file goes only after every
// narinfo naming it is durably gone.
func (c *checker) removes(e *Event) {
	for _, narinfo := range c.narOf[e.Path] {
		ch := c.entries[narinfo]
		switch {
		case ch == nil || !ch.removed:
			c.violate(RuleNarinfoGoneFirst, e, ch, "NAR file %s removed while narinfo %s names it", e.Path, narinfo)
		case !durableBefore(ch, e.Start):
			c.violate(RuleNarinfoGoneFirst, e, ch, "NAR file %s removed before the removal of narinfo %s naming it was durable: no fsync of %s, or syncfs, after it", e.Path, narinfo, filepath.Dir(narinfo))
		}
	}
}

// undurable reports, as one violation of rule, the changes under Root
// that were not durable before at (the end if nil), but for those to
// except and to the entries of the directories it is in: a power cut
// that lost one of those would lose except too.
func (c *checker) undurable(rule string, at *Event, except, what string) {
	before := line(at)
	if at != nil {
		before = at.Start
	}
	var late []*change
	var paths []string
	for _, m := range []map[string]*change{c.data, c.entries} {
		for p, ch := range m {
			if p != except && !(ch.entry && except != "" && within(except, p)) && (c.visible(p) || p == c.Root) &&
				c.events[ch.ev].Line < before && !durableBefore(ch, before) {
				late, paths = append(late, ch), append(paths, p)
			}
		}
	}
	if len(late) == 0 {
		return
	}
	first := 0
	for i, ch := range late {
		if ch.ev < late[first].ev || ch.ev == late[first].ev && paths[i] < paths[first] {
			first = i
		}
	}
	kind := "bytes"
	if late[first].entry {
		kind = "directory entry"
	}
	more := ""
	if len(late) > 1 {
		more = fmt.Sprintf(" (and %d other changes)", len(late)-1)
	}
	c.violate(rule, at, late[first], "%s the change to the %s of %s was durable%s", what, kind, paths[first], more)
}

func (c *checker) atExit() {
	c.undurable(RuleDurableAtExit, nil, "", "the run ended before")
}
