// Package netrc reads a netrc file as curl, and so Nix, does: the
// credentials Nix's netrc-file setting names for the HTTP caches it
// downloads from.
package netrc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// DefaultFile is Nix's netrc-file when nothing sets it: $NIX_CONF_DIR/netrc
// with the default NIX_CONF_DIR.
const DefaultFile = "/etc/nix/netrc"

// ErrSyntax marks a netrc file that cannot be read as one.
var ErrSyntax = errors.New("not a netrc file")

// Machine is one machine entry, or the default entry (Name "").
type Machine struct {
	Name     string
	Login    string
	Password string
}

// File is a parsed netrc file. The zero File has no entries.
type File struct {
	// Path is the file it was read from, "" when parsed from bytes.
	Path     string
	Machines []Machine // in the file's order, the default entry last if any
}

// Lookup returns the credentials for host, a URL's host name without a
// port: those of the first machine entry of that name (case-insensitive,
// as curl compares), else of the default entry. ok is false when neither
// is there or the entry has no login.
func (f *File) Lookup(host string) (login, password string, ok bool) {
	if f == nil {
		return "", "", false
	}
	for _, m := range f.Machines {
		if m.Name == "" || strings.EqualFold(m.Name, host) {
			return m.Login, m.Password, m.Login != ""
		}
	}
	return "", "", false
}

// ReadFile reads and parses the netrc file at path.
func ReadFile(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
		err = pe.Err // path is named below, once
	}
	if err != nil {
		return nil, fmt.Errorf("read netrc %s: %w", path, err)
	}
	f, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("read netrc %s: %w", path, err)
	}
	f.Path = path
	return f, nil
}

// Parse parses a netrc file: whitespace-separated tokens "machine NAME",
// "default", "login NAME", "password WORD", "account WORD" and "macdef
// NAME" (whose body, up to an empty line, is skipped); a token starting
// with # comments out the rest of its line; a token may be "quoted", with
// \" \\ \n \r \t escapes, as curl 7.84 and later read it. Errors never
// quote the file's text: it holds passwords.
func Parse(data []byte) (*File, error) {
	t := tokenizer{s: string(data)}
	f := &File{}
	var cur *Machine
	var def *Machine
	for {
		tok, ok, err := t.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		switch tok {
		case "machine", "default":
			if cur != nil && cur != def {
				f.Machines = append(f.Machines, *cur)
			}
			if tok == "default" {
				def = &Machine{}
				cur = def
				continue
			}
			name, err := t.value(tok)
			if err != nil {
				return nil, err
			}
			cur = &Machine{Name: name}
		case "login", "password", "account":
			v, err := t.value(tok)
			if err != nil {
				return nil, err
			}
			if cur == nil {
				return nil, fmt.Errorf("line %d: %q before any machine: %w", t.line, tok, ErrSyntax)
			}
			switch tok {
			case "login":
				cur.Login = v
			case "password":
				cur.Password = v
			}
		case "macdef":
			if _, err := t.value(tok); err != nil {
				return nil, err
			}
			t.skipMacro()
		default:
			return nil, fmt.Errorf("line %d: unknown keyword: %w", t.line, ErrSyntax)
		}
	}
	if cur != nil && cur != def {
		f.Machines = append(f.Machines, *cur)
	}
	if def != nil {
		f.Machines = append(f.Machines, *def)
	}
	return f, nil
}

type tokenizer struct {
	s    string
	i    int
	line int // 1-based line of the last token
	nl   int // newlines before s[i]
}

// value is the token after keyword, which must be there.
func (t *tokenizer) value(keyword string) (string, error) {
	v, ok, err := t.next()
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("line %d: %s without a value: %w", t.line, keyword, ErrSyntax)
	}
	return v, nil
}

// next returns the next token; ok is false at the end.
func (t *tokenizer) next() (tok string, ok bool, err error) {
	for t.i < len(t.s) {
		c := t.s[t.i]
		switch {
		case c == '\n':
			t.i++
			t.nl++
		case c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v':
			t.i++
		case c == '#':
			for t.i < len(t.s) && t.s[t.i] != '\n' {
				t.i++
			}
		case c == '"':
			t.line = t.nl + 1
			return t.quoted()
		default:
			t.line = t.nl + 1
			start := t.i
			for t.i < len(t.s) && !strings.ContainsRune(" \t\r\n\f\v", rune(t.s[t.i])) {
				t.i++
			}
			return t.s[start:t.i], true, nil
		}
	}
	return "", false, nil
}

func (t *tokenizer) quoted() (string, bool, error) {
	var b strings.Builder
	for t.i++; t.i < len(t.s); t.i++ {
		c := t.s[t.i]
		switch {
		case c == '"':
			t.i++
			return b.String(), true, nil
		case c == '\\' && t.i+1 < len(t.s):
			t.i++
			e := t.s[t.i]
			switch e {
			case 'n':
				e = '\n'
			case 'r':
				e = '\r'
			case 't':
				e = '\t'
			}
			b.WriteByte(e)
		default:
			if c == '\n' {
				t.nl++
			}
			b.WriteByte(c)
		}
	}
	return "", false, fmt.Errorf("line %d: quoted token without its closing quote: %w", t.line, ErrSyntax)
}

// skipMacro skips a macdef's body: the rest of its line and the lines up
// to the first empty one.
func (t *tokenizer) skipMacro() {
	end := strings.Index(t.s[t.i:], "\n\n")
	if end < 0 {
		t.nl += strings.Count(t.s[t.i:], "\n")
		t.i = len(t.s)
		return
	}
	t.nl += strings.Count(t.s[t.i:t.i+end+2], "\n")
	t.i += end + 2
}
