// Package synctrace reads what a program did to the file system from an
// `strace -f -y` of it, and checks that a power cut at any moment would
// leave nothing half done: that no file was written where readers find
// it, that a file's bytes were synced before it was renamed (or linked)
// into place, a narinfo appeared only after its NAR file was durable, a
// record only after everything it covers, and went durably before any of
// that changed, and that everything was durable when the program exited
// (docs/design.md, Durability).
//
// Parse turns the trace into Events; Check replays them against a model
// of what survives a power cut.
package synctrace

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// StraceArgs are the strace options whose output Parse reads: every
// process (-f), paths of file descriptors (-y), and the calls that
// change or sync files. --seccomp-bpf stops the traced program only at
// those calls, which keeps a traced Go program fast.
var StraceArgs = []string{"-f", "-y", "-qq", "--seccomp-bpf", "-e", "trace=" + strings.Join(tracedCalls, ",")}

var tracedCalls = []string{
	"open", "openat", "creat", "mkdir", "mkdirat", "link", "linkat", "symlink", "symlinkat",
	"rename", "renameat", "renameat2", "unlink", "unlinkat", "rmdir",
	"write", "pwrite64", "writev", "pwritev", "pwritev2", "truncate", "ftruncate", "fallocate",
	"copy_file_range", "sendfile", "splice",
	"fsync", "fdatasync", "syncfs", "sync",
}

// Kind is what a call did, as far as a power cut is concerned.
type Kind int

const (
	// Write changed Path's bytes.
	Write Kind = iota + 1
	// Create made a directory entry, Path (a directory if Dir).
	Create
	// Rename moved Path to NewPath (swapped them if Exchange).
	Rename
	// Remove removed the directory entry Path.
	Remove
	// Sync made Path's bytes durable and, for a directory, its entries.
	Sync
	// SyncFS made everything on Path's file system durable.
	SyncFS
	// SyncAll made everything on every file system durable.
	SyncAll
	// Link made NewPath a hard link to Path.
	Link
)

var kindNames = [...]string{Write: "write", Create: "create", Rename: "rename", Remove: "remove", Sync: "sync", SyncFS: "syncfs", SyncAll: "sync-all", Link: "link"}

// Syncs tells whether k makes changes durable.
func (k Kind) Syncs() bool { return k == Sync || k == SyncFS || k == SyncAll }

func (k Kind) String() string {
	if k > 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Event is one successful call that changed or synced files. Paths are
// absolute and clean.
type Event struct {
	Kind     Kind
	Path     string
	NewPath  string // Rename's and Link's target
	Dir      bool   // Create made a directory
	Exchange bool   // Rename swapped Path and NewPath (RENAME_EXCHANGE)
	PID      int
	// Start and Line are the trace's lines (from 1) where the call began
	// and where it returned: strace splits a call that another process
	// interrupts into "<unfinished ...>" and "<... resumed>". Events come
	// in the order of Line.
	Start, Line int
	// Text is the call as strace wrote it, its halves joined.
	Text string
}

func (e Event) String() string {
	if e.Start != e.Line {
		return fmt.Sprintf("lines %d-%d: %s", e.Start, e.Line, e.Text)
	}
	return fmt.Sprintf("line %d: %s", e.Line, e.Text)
}

// Parse reads an strace made with StraceArgs (or any subset of its
// calls; -f's PID column is optional) and returns the events it shows,
// in the order the calls returned. Calls that failed, touched no named
// file (pipes, sockets, files already deleted) or name a path relative to
// an unknown working directory are left out; lines that are not calls
// (signals, exits) are skipped. A call it cannot read is an error naming
// its line.
func Parse(r io.Reader) ([]Event, error) {
	p := parser{started: map[int]pending{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		p.line++
		if err := p.parseLine(sc.Text()); err != nil {
			return nil, fmt.Errorf("parse strace line %d: %w", p.line, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("parse strace line %d: %w", p.line+1, err)
	}
	// A call that never returned (its process killed) may still have
	// taken effect: it counts as done at the end, unless it was a sync.
	pids := slices.Collect(maps.Keys(p.started))
	slices.SortFunc(pids, func(a, b int) int { return p.started[a].start - p.started[b].start })
	for _, pid := range pids {
		u := p.started[pid]
		if err := p.call(pid, u.start, strings.TrimSuffix(u.text, " <unfinished ...>")+") = ?", true); err != nil {
			return nil, fmt.Errorf("parse strace line %d: %w", u.start, err)
		}
	}
	return p.events, nil
}

type pending struct {
	start int
	text  string
}

type parser struct {
	line    int
	started map[int]pending // PID → its unfinished call
	events  []Event
}

func (p *parser) parseLine(line string) error {
	pid, rest := 0, line
	if i := strings.IndexByte(line, ' '); i > 0 {
		if n, err := strconv.Atoi(line[:i]); err == nil {
			pid, rest = n, strings.TrimLeft(line[i:], " ")
		}
	}
	if after, ok := strings.CutPrefix(rest, "<... "); ok {
		u, ok := p.started[pid]
		if !ok {
			return nil // its start was before the trace began
		}
		delete(p.started, pid)
		_, tail, ok := strings.Cut(after, " resumed>")
		if !ok {
			return fmt.Errorf("a resumed call without \" resumed>\": %q", line)
		}
		return p.call(pid, u.start, strings.TrimSuffix(u.text, " <unfinished ...>")+tail, false)
	}
	if !isCallStart(rest) {
		return nil // "--- SIGCHLD ...", "+++ exited with 0 +++"
	}
	if strings.HasSuffix(rest, " <unfinished ...>") {
		p.started[pid] = pending{p.line, rest}
		return nil
	}
	return p.call(pid, p.line, rest, false)
}

// isCallStart tells whether s begins like "name(".
func isCallStart(s string) bool {
	i := strings.IndexByte(s, '(')
	if i <= 0 {
		return false
	}
	for _, c := range s[:i] {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// call reads one whole call, text, begun on line start and returned on
// p.line. unreturned says the call never returned.
func (p *parser) call(pid, start int, text string, unreturned bool) error {
	name, rest, _ := strings.Cut(text, "(")
	if !traced(name) {
		return nil
	}
	args, ret, err := splitCall(rest)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if !unreturned && (strings.HasPrefix(ret, "-") || strings.HasPrefix(ret, "?")) {
		return nil // failed: it changed nothing
	}
	evs, err := events(name, args, ret)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	for _, e := range evs {
		if unreturned && e.Kind.Syncs() {
			continue
		}
		e.PID, e.Start, e.Line, e.Text = pid, start, p.line, text
		p.events = append(p.events, e)
	}
	return nil
}

func traced(name string) bool { return slices.Contains(tracedCalls, name) }

// events turns one call's arguments and return value into events; an
// argument that names no file (a pipe, a relative path with no directory
// fd) yields none.
func events(name string, args []string, ret string) ([]Event, error) {
	need := map[string]int{
		"open": 2, "openat": 3, "creat": 1, "mkdir": 1, "mkdirat": 2, "link": 2, "linkat": 4,
		"symlink": 2, "symlinkat": 3, "rename": 2, "renameat": 4, "renameat2": 5, "unlink": 1,
		"unlinkat": 3, "rmdir": 1, "truncate": 1, "copy_file_range": 3, "splice": 3, "sendfile": 1,
	}[name]
	if name == "sync" {
		return []Event{{Kind: SyncAll}}, nil
	}
	if len(args) < max(need, 1) {
		return nil, fmt.Errorf("%d arguments, want %d", len(args), max(need, 1))
	}
	one := func(k Kind, path string, err error) ([]Event, error) {
		if err != nil || path == "" {
			return nil, err
		}
		return []Event{{Kind: k, Path: path}}, nil
	}
	switch name {
	case "write", "pwrite64", "writev", "pwritev", "pwritev2", "ftruncate", "fallocate", "sendfile":
		return one(Write, fdPath(args[0]), nil)
	case "copy_file_range", "splice":
		return one(Write, fdPath(args[2]), nil)
	case "truncate":
		path, err := at("", args[0])
		return one(Write, path, err)
	case "fsync", "fdatasync":
		return one(Sync, fdPath(args[0]), nil)
	case "syncfs":
		return one(SyncFS, fdPath(args[0]), nil)
	case "mkdir", "mkdirat":
		path, err := at2(name == "mkdirat", args, 0)
		if err != nil || path == "" {
			return nil, err
		}
		return []Event{{Kind: Create, Path: path, Dir: true}}, nil
	case "unlink", "rmdir", "unlinkat":
		path, err := at2(name == "unlinkat", args, 0)
		return one(Remove, path, err)
	case "link", "linkat":
		from, err := at2(name == "linkat", args, 0)
		if err != nil {
			return nil, err
		}
		if from == "" && name == "linkat" && len(args) > 4 && hasFlag(args[4], "AT_EMPTY_PATH") {
			from = fdPath(args[0]) // an O_TMPFILE given a name
		}
		to, err := at2(name == "linkat", args, 1)
		switch {
		case err != nil || to == "":
			return nil, err
		case from == "":
			return []Event{{Kind: Create, Path: to}}, nil // from a file of unknown bytes
		}
		return []Event{{Kind: Link, Path: from, NewPath: to}}, nil
	case "symlink":
		path, err := at("", args[1])
		return one(Create, path, err)
	case "symlinkat":
		path, err := at(fdPath(args[1]), args[2])
		return one(Create, path, err)
	case "rename", "renameat", "renameat2":
		at := name != "rename"
		from, err := at2(at, args, 0)
		if err != nil {
			return nil, err
		}
		to, err := at2(at, args, 1)
		if err != nil || from == "" || to == "" {
			return nil, err
		}
		exchange := name == "renameat2" && strings.Contains(args[4], "RENAME_EXCHANGE")
		return []Event{{Kind: Rename, Path: from, NewPath: to, Exchange: exchange}}, nil
	}
	return openEvents(name, args, ret)
}

// openEvents reads open, openat and creat: a creation if O_CREAT (or
// creat), and a write if O_TRUNC. The path is the one -y gives the
// returned fd, or else the name joined to its directory.
func openEvents(name string, args []string, ret string) ([]Event, error) {
	var dir, file, flags string
	switch name {
	case "open":
		file, flags = args[0], args[1]
	case "openat":
		dir, file, flags = fdPath(args[0]), args[1], args[2]
	case "creat":
		file, flags = args[0], "O_CREAT|O_TRUNC"
	}
	creates, truncates := hasFlag(flags, "O_CREAT"), hasFlag(flags, "O_TRUNC")
	if !creates && !truncates {
		return nil, nil
	}
	path := fdPath(ret)
	if path == "" {
		var err error
		if path, err = at(dir, file); err != nil || path == "" {
			return nil, err
		}
	}
	var evs []Event
	if creates {
		evs = append(evs, Event{Kind: Create, Path: path, Dir: hasFlag(flags, "O_DIRECTORY")})
	}
	if truncates {
		evs = append(evs, Event{Kind: Write, Path: path})
	}
	return evs, nil
}

func hasFlag(flags, flag string) bool {
	for f := range strings.SplitSeq(flags, "|") {
		if f == flag {
			return true
		}
	}
	return false
}

// at2 reads the i-th (dirfd,) name of a call: with dirfds, args 2i and
// 2i+1; without, arg i.
func at2(withDirfd bool, args []string, i int) (string, error) {
	if !withDirfd {
		return at("", args[i])
	}
	return at(fdPath(args[2*i]), args[2*i+1])
}

// at resolves the quoted name arg in directory dir ("" if unknown): ""
// with no error for a relative name in an unknown directory.
func at(dir, arg string) (string, error) {
	name, err := unquote(arg)
	if err != nil {
		return "", err
	}
	if filepath.IsAbs(name) {
		return filepath.Clean(name), nil
	}
	if dir == "" || name == "" {
		return "", nil
	}
	return filepath.Join(dir, name), nil
}

// fdPath returns the absolute path -y shows for a file descriptor
// argument or return value ("3</a/b>", "AT_FDCWD</a>", "3</a/b>"), or ""
// for none: no -y, a pipe or socket, a file already deleted.
func fdPath(arg string) string {
	i := strings.IndexByte(arg, '<')
	if i < 0 || !strings.HasSuffix(arg, ">") || !strings.HasPrefix(arg[i+1:], "/") {
		return ""
	}
	path, err := unescape(arg[i+1 : len(arg)-1])
	if err != nil || strings.HasSuffix(path, " (deleted)") {
		return ""
	}
	return filepath.Clean(path)
}

// unquote reads a quoted string argument; strace marks one it cut short
// with "..." after the quote, which a path never is at the lengths used.
func unquote(arg string) (string, error) {
	arg = strings.TrimSuffix(arg, "...")
	if len(arg) < 2 || arg[0] != '"' || arg[len(arg)-1] != '"' {
		return "", fmt.Errorf("want a quoted string, have %q", arg)
	}
	return unescape(arg[1 : len(arg)-1])
}

// unescape undoes strace's escapes: \n \t \r \v \f \" \\, \xHH and
// octal \NNN.
func unescape(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		i++
		if i == len(s) {
			return "", fmt.Errorf("a lone backslash ending %q", s)
		}
		switch c := s[i]; c {
		case 'n', 't', 'r', 'v', 'f':
			b.WriteByte(map[byte]byte{'n': '\n', 't': '\t', 'r': '\r', 'v': '\v', 'f': '\f'}[c])
		case '"', '\\', '\'':
			b.WriteByte(c)
		case 'x':
			if i+2 >= len(s) {
				return "", fmt.Errorf("a short \\x escape in %q", s)
			}
			n, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
			if err != nil {
				return "", fmt.Errorf("a bad \\x escape in %q", s)
			}
			b.WriteByte(byte(n))
			i += 2
		default:
			j := i
			for j < len(s) && j < i+3 && s[j] >= '0' && s[j] <= '7' {
				j++
			}
			n, err := strconv.ParseUint(s[i:j], 8, 8)
			if j == i || err != nil {
				return "", fmt.Errorf("a bad escape \\%c in %q", c, s)
			}
			b.WriteByte(byte(n))
			i = j - 1
		}
	}
	return b.String(), nil
}

// splitCall splits what follows a call's "(" into its top-level
// arguments and its return value: "3</a>, \"x, y\", 4) = 4" gives
// ["3</a>", "\"x, y\"", "4"] and "4". Quotes, -y's <…> and brackets
// nest; a call cut short before ")" is an error.
func splitCall(s string) (args []string, ret string, err error) {
	depth, begin := 0, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"', '<':
			end := byte('"')
			if c == '<' {
				end = '>'
			}
			j := i + 1
			for ; j < len(s) && s[j] != end; j++ {
				if s[j] == '\\' {
					j++
				}
			}
			if j >= len(s) {
				return nil, "", fmt.Errorf("unterminated %c in %q", c, s)
			}
			i = j
		case '[', '{':
			depth++
		case ']', '}':
			depth--
		case ',', ')':
			if depth > 0 {
				continue
			}
			if arg := strings.TrimSpace(s[begin:i]); arg != "" || c == ',' {
				args = append(args, arg)
			}
			begin = i + 1
			if c == ')' {
				ret = strings.TrimSpace(s[i+1:])
				r, ok := strings.CutPrefix(ret, "=")
				if !ok {
					return nil, "", fmt.Errorf("no return value after %q", s[:i+1])
				}
				return args, strings.TrimSpace(r), nil
			}
		}
	}
	return nil, "", fmt.Errorf("no closing parenthesis in %q", s)
}
