package server

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/storage"
)

// ErrBadAuthFile reports an auth file that does not parse.
var ErrBadAuthFile = errors.New("invalid auth file")

// Credentials are the clients allowed in: HTTP basic users and bearer
// tokens. Only their SHA-256 digests are kept, and a request is checked
// against every one in constant time, so neither timing nor a memory dump
// gives a secret away.
type Credentials struct {
	digests [][sha256.Size]byte
	users   []string // of the basic credentials: not secret
}

// BasicUsers returns the user names of the basic credentials, sorted, for
// telling clients what to put in their netrc.
func (c *Credentials) BasicUsers() []string {
	users := slices.Clone(c.users)
	slices.Sort(users)
	return slices.Compact(users)
}

// LoadCredentials reads an auth file; see ParseCredentials. Its errors
// start with the file's name, and name it only there.
func LoadCredentials(path string) (*Credentials, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, storage.UnwrapPath(err))
	}
	defer f.Close()
	c, err := ParseCredentials(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseCredentials parses an auth file: one credential per line, either
// "basic USER:PASSWORD" or "bearer TOKEN". Blank lines and lines starting
// with '#' are ignored. Errors name the line but never echo a secret.
func ParseCredentials(r io.Reader) (*Credentials, error) {
	c := &Credentials{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		kind, secret, _ := strings.Cut(line, " ")
		secret = strings.TrimSpace(secret)
		switch kind {
		case "basic":
			user, pass, ok := strings.Cut(secret, ":")
			if !ok || user == "" || pass == "" {
				return nil, fmt.Errorf("line %d: want basic USER:PASSWORD: %w", n, ErrBadAuthFile)
			}
			c.users = append(c.users, user)
		case "bearer":
			if secret == "" || strings.ContainsAny(secret, " \t") {
				return nil, fmt.Errorf("line %d: want bearer TOKEN: %w", n, ErrBadAuthFile)
			}
		default:
			return nil, fmt.Errorf("line %d: want basic or bearer: %w", n, ErrBadAuthFile)
		}
		c.digests = append(c.digests, credentialDigest(kind, secret))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadAuthFile, storage.UnwrapPath(err))
	}
	if len(c.digests) == 0 {
		return nil, fmt.Errorf("no credentials, want lines 'basic USER:PASSWORD' or 'bearer TOKEN': %w", ErrBadAuthFile)
	}
	return c, nil
}

func credentialDigest(kind, secret string) [sha256.Size]byte {
	return sha256.Sum256([]byte(kind + "\x00" + secret))
}

// allow reports whether r carries one of the credentials.
func (c *Credentials) allow(r *http.Request) bool {
	var d [sha256.Size]byte
	if user, pass, ok := r.BasicAuth(); ok {
		d = credentialDigest("basic", user+":"+pass)
	} else if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		d = credentialDigest("bearer", strings.TrimSpace(tok))
	} else {
		return false
	}
	match := 0
	for i := range c.digests {
		match |= subtle.ConstantTimeCompare(d[:], c.digests[i][:])
	}
	return match == 1
}
