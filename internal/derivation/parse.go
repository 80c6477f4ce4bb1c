package derivation

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Parse parses a .drv in the ATerm form Nix writes, with all store paths
// in storeDir. It accepts exactly the canonical form, so that
// MarshalATerm gives back data byte for byte.
func Parse(data []byte, storeDir storepath.Dir) (*Derivation, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("parse derivation: %d bytes: %w", len(data), ErrTooLarge)
	}
	p := &parser{data: data, dir: storeDir}
	d, err := p.derivation()
	if err != nil {
		return nil, fmt.Errorf("parse derivation: at byte %d: %w", p.pos, err)
	}
	return d, nil
}

type parser struct {
	data []byte
	pos  int
	dir  storepath.Dir
}

func (p *parser) derivation() (*Derivation, error) {
	d := &Derivation{
		StoreDir:  p.dir,
		Outputs:   map[string]Output{},
		InputDrvs: map[storepath.Path][]string{},
		Env:       map[string]string{},
		Args:      []string{},
	}
	if err := p.expect("Derive("); err != nil {
		return nil, err
	}
	fields := []func() error{
		func() error { return p.outputs(d.Outputs) },
		func() error { return p.inputDrvs(d.InputDrvs) },
		func() (err error) {
			d.InputSrcs, err = set(p, "input source", func() (storepath.Path, error) { return p.path(false) }, storepath.Compare)
			return err
		},
		func() (err error) { d.Platform, err = p.field(false); return err },
		func() (err error) { d.Builder, err = p.field(true); return err },
		func() error {
			return p.list(func(int) error {
				a, err := p.field(true)
				d.Args = append(d.Args, a)
				return err
			})
		},
		func() error { return p.env(d.Env) },
	}
	for i, field := range fields {
		if i > 0 {
			if err := p.expect(","); err != nil {
				return nil, err
			}
		}
		if err := field(); err != nil {
			return nil, err
		}
	}
	if err := p.expect(")"); err != nil {
		return nil, err
	}
	if p.pos != len(p.data) {
		return nil, fmt.Errorf("trailing data after derivation: %w", ErrSyntax)
	}
	return d, nil
}

// outputs parses the list of (name, path, hashAlgo, hash) tuples.
func (p *parser) outputs(into map[string]Output) error {
	prev := ""
	return p.list(func(i int) error {
		if err := p.expect("("); err != nil {
			return err
		}
		name, err := p.field(false)
		if err != nil {
			return err
		}
		if err := p.sorted(i, prev, name, "output"); err != nil {
			return err
		}
		prev = name
		var o Output
		if o.Path, err = p.path(true); err != nil {
			return err
		}
		if err := p.expect(","); err != nil {
			return err
		}
		if o.HashAlgo, err = p.field(false); err != nil {
			return err
		}
		if err := p.expect(","); err != nil {
			return err
		}
		if o.Hash, err = p.field(false); err != nil {
			return err
		}
		into[name] = o
		return p.expect(")")
	})
}

// inputDrvs parses the list of (drv path, [output names]) pairs.
func (p *parser) inputDrvs(into map[storepath.Path][]string) error {
	var prev storepath.Path
	return p.list(func(i int) error {
		if err := p.expect("("); err != nil {
			return err
		}
		drv, err := p.path(false)
		if err != nil {
			return err
		}
		if i > 0 && storepath.Compare(prev, drv) >= 0 {
			return fmt.Errorf("input derivation %s out of order: %w", drv, ErrSyntax)
		}
		prev = drv
		if err := p.expect(","); err != nil {
			return err
		}
		outs, err := set(p, "output name", func() (string, error) { return p.field(false) }, strings.Compare)
		if err != nil {
			return err
		}
		into[drv] = outs
		return p.expect(")")
	})
}

// env parses the list of (name, value) environment pairs.
func (p *parser) env(into map[string]string) error {
	prev := ""
	return p.list(func(i int) error {
		if err := p.expect("("); err != nil {
			return err
		}
		k, err := p.field(true)
		if err != nil {
			return err
		}
		if err := p.sorted(i, prev, k, "environment variable"); err != nil {
			return err
		}
		prev = k
		if err := p.expect(","); err != nil {
			return err
		}
		v, err := p.field(true)
		if err != nil {
			return err
		}
		into[k] = v
		return p.expect(")")
	})
}

// sorted checks that key i of a map comes strictly after prev, as Nix
// writes them from a std::map.
func (p *parser) sorted(i int, prev, key, what string) error {
	if i > 0 && prev >= key {
		return fmt.Errorf("%s %q out of order or repeated: %w", what, key, ErrSyntax)
	}
	return nil
}

// set parses a list of strictly increasing elements.
func set[T any](p *parser, what string, elem func() (T, error), cmp func(a, b T) int) ([]T, error) {
	out := []T{}
	err := p.list(func(i int) error {
		e, err := elem()
		if err != nil {
			return err
		}
		if i > 0 && cmp(out[i-1], e) >= 0 {
			return fmt.Errorf("%s %v out of order or repeated: %w", what, e, ErrSyntax)
		}
		out = append(out, e)
		return nil
	})
	return out, err
}

// list parses "[" [elem {"," elem}] "]".
func (p *parser) list(elem func(i int) error) error {
	if err := p.expect("["); err != nil {
		return err
	}
	if p.pos < len(p.data) && p.data[p.pos] == ']' {
		p.pos++
		return nil
	}
	for i := 0; ; i++ {
		if err := elem(i); err != nil {
			return err
		}
		if p.pos >= len(p.data) {
			return fmt.Errorf("unterminated list: %w", ErrSyntax)
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case ']':
			p.pos++
			return nil
		default:
			return fmt.Errorf("want ',' or ']', got %q: %w", p.data[p.pos], ErrSyntax)
		}
	}
}

func (p *parser) expect(s string) error {
	if !bytes.HasPrefix(p.data[p.pos:], []byte(s)) {
		return fmt.Errorf("want %q: %w", s, ErrSyntax)
	}
	p.pos += len(s)
	return nil
}

// path parses a quoted store path in p.dir, or "" if empty is allowed.
// For an output, it also consumes the leading comma.
func (p *parser) path(output bool) (storepath.Path, error) {
	if output {
		if err := p.expect(","); err != nil {
			return storepath.Path{}, err
		}
	}
	s, err := p.field(false)
	if err != nil {
		return storepath.Path{}, err
	}
	if output && s == "" {
		return storepath.Path{}, nil
	}
	sp, err := p.dir.Parse(s)
	if err != nil {
		return storepath.Path{}, fmt.Errorf("%w: %w", ErrSyntax, err)
	}
	return sp, nil
}

// field parses a quoted string. Escaped fields are those Nix writes with
// printString: only the escapes \" \\ \n \r \t occur, and never a raw
// newline, return or tab. Other fields Nix writes verbatim between quotes,
// so a backslash in them would not survive Nix's own reading.
func (p *parser) field(escaped bool) (string, error) {
	if err := p.expect(`"`); err != nil {
		return "", err
	}
	start := p.pos
	// Fast path: no escapes.
	for p.pos < len(p.data) {
		switch c := p.data[p.pos]; {
		case c == '"':
			s := string(p.data[start:p.pos])
			p.pos++
			return s, nil
		case c == '\\':
			if !escaped {
				return "", fmt.Errorf("backslash in unescaped string: %w", ErrSyntax)
			}
			return p.unescape(start)
		case escaped && (c == '\n' || c == '\r' || c == '\t'):
			return "", fmt.Errorf("raw %q in string: %w", c, ErrSyntax)
		}
		p.pos++
	}
	return "", fmt.Errorf("unterminated string: %w", ErrSyntax)
}

func (p *parser) unescape(start int) (string, error) {
	var b strings.Builder
	b.Write(p.data[start:p.pos])
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		p.pos++
		switch c {
		case '"':
			return b.String(), nil
		case '\n', '\r', '\t':
			return "", fmt.Errorf("raw %q in string: %w", c, ErrSyntax)
		case '\\':
			if p.pos >= len(p.data) {
				return "", fmt.Errorf("unterminated string: %w", ErrSyntax)
			}
			e := p.data[p.pos]
			p.pos++
			switch e {
			case '"', '\\':
				b.WriteByte(e)
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			default:
				return "", fmt.Errorf("unknown escape \\%c: %w", e, ErrSyntax)
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", fmt.Errorf("unterminated string: %w", ErrSyntax)
}
