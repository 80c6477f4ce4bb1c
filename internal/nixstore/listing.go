package nixstore

import (
	"fmt"
	"os"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// listing is the store directory's entries at one moment.
type listing struct {
	gen   uint64
	mtime time.Time // the directory's, read before its entries
	taken time.Time
	names map[string]string // hash part -> base name
}

// current returns a listing of the store directory that is no older than
// the call: the last one, if the directory has not changed since, or a
// new one.
func (s *Store) current() (*listing, error) {
	start := time.Now()
	fi, err := os.Stat(string(s.dir))
	if err != nil {
		return nil, fmt.Errorf("list store %s: %w", s.dir, err)
	}
	s.listMu.Lock()
	defer s.listMu.Unlock()
	if l := s.list; l != nil {
		// Taken since the call began, or still what the directory holds.
		if !l.taken.Before(start) || fi.ModTime().Equal(l.mtime) && l.taken.Sub(l.mtime) > racyWindow {
			return l, nil
		}
	}
	l, err := s.readListing()
	if err != nil {
		return nil, err
	}
	l.gen = 1 // a scan of generation 0 is none
	if s.list != nil {
		l.gen = s.list.gen + 1
	}
	s.list = l
	return l, nil
}

func (s *Store) readListing() (*listing, error) {
	f, err := os.Open(string(s.dir))
	if err != nil {
		return nil, fmt.Errorf("list store %s: %w", s.dir, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("list store %s: %w", s.dir, err)
	}
	l := &listing{mtime: fi.ModTime(), taken: time.Now()}
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list store %s: %w", s.dir, err)
	}
	l.names = make(map[string]string, len(names))
	for _, name := range names {
		hash, _, err := storepath.ParseBase(name)
		if err != nil {
			continue // .links, temp files
		}
		// Nix locks an output path with PATH.lock beside it: the
		// shorter name is the path.
		if old, ok := l.names[hash]; ok && len(old) <= len(name) {
			continue
		}
		l.names[hash] = name
	}
	return l, nil
}
