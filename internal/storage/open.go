package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strings"
)

// Redact is location as it may be shown or recorded anywhere (errors,
// summaries, logs, JSON, bundles): a URL's password replaced by "xxxxx",
// as url.URL.Redacted does, or the user name if there is no password
// (it may be a token: https://TOKEN@HOST/), and the whole user info of a
// URL that does not parse; anything else as it is.
func Redact(location string) string {
	u, err := url.Parse(location)
	switch {
	case err == nil && u.User == nil:
		return location // as given: String() would escape a path's spaces
	case err == nil:
		if p, _ := u.User.Password(); p == "" {
			u.User = url.User("xxxxx")
			return u.String()
		}
		return u.Redacted()
	}
	scheme, rest, ok := strings.Cut(location, "://")
	if !ok {
		return location
	}
	// The user info is taken to end at the last @ before any query, not
	// at the first /: a secret key may hold a / (an AWS one often does),
	// which is what made the URL not parse.
	end := len(rest)
	if i := strings.IndexAny(rest, "?#"); i >= 0 {
		end = i
	}
	i := strings.LastIndexByte(rest[:end], '@')
	if i < 0 {
		return location
	}
	return scheme + "://xxxxx" + rest[i:]
}

// LocalPath returns the directory a location names, and whether it names
// one: a plain path, or a file:// URL (whose query, such as Nix's
// ?compression=zstd, is ignored).
func LocalPath(location string) (string, bool) {
	if p, ok := strings.CutPrefix(location, "file://"); ok {
		if i := strings.IndexByte(p, '?'); i >= 0 {
			p = p[:i]
		}
		return p, true
	}
	return location, !strings.Contains(location, "://")
}

// Open opens the backend at location: a directory (a path or file://DIR),
// which must exist, or an S3 bucket (s3://BUCKET?..., as ParseS3URL
// takes it).
func Open(ctx context.Context, location string) (Backend, error) {
	return open(ctx, location, false)
}

// OpenFailFast opens the backend at location as Open does, for serving
// it: a bucket's requests fail as soon as its store does not answer
// (S3Config.FailFast).
func OpenFailFast(ctx context.Context, location string) (Backend, error) {
	return open(ctx, location, true)
}

func open(ctx context.Context, location string, failFast bool) (Backend, error) {
	if strings.HasPrefix(location, "s3://") {
		cfg, err := ParseS3URL(location)
		if err != nil {
			return nil, fmt.Errorf("open %w", err)
		}
		cfg.FailFast = failFast
		return openS3(cfg)
	}
	p, ok := LocalPath(location)
	switch {
	case !ok:
		return nil, fmt.Errorf("open %s: %w", Redact(location), ErrBadLocation)
	case p == "":
		return nil, fmt.Errorf("open %s: no directory", location)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", location, UnwrapPath(err))
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("open %s: not a directory", location)
	}
	return OpenDir(p)
}

// UnwrapPath is err without the path an *fs.PathError adds, for an
// error that names the path already.
func UnwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Create opens the backend at location as Open does, creating a directory
// (and its parents) or a bucket that does not exist yet. made is what it
// created, for a caller that would remove it again: the topmost directory
// (the location's or a parent's), or location for a bucket; "" if
// nothing.
func Create(ctx context.Context, location string) (b Backend, made string, err error) {
	if p, ok := LocalPath(location); ok && p != "" {
		d, made, err := createDir(p)
		if err != nil {
			return nil, "", err
		}
		return d, made, nil
	}
	b, err = Open(ctx, location)
	if err != nil {
		return nil, "", err
	}
	if s, ok := b.(*S3); ok {
		created, err := s.CreateBucket(ctx)
		if err != nil {
			s.Close()
			return nil, "", err
		}
		if created {
			made = location
		}
	}
	return b, made, nil
}

// Lock takes a lock on b against other processes, as Locker does.
func Lock(ctx context.Context, b Backend, opts LockOptions) (held context.Context, unlock func() error, err error) {
	if l, ok := b.(Locker); ok {
		return l.Lock(ctx, opts)
	}
	return nil, nil, fmt.Errorf("lock %s: %w", b, errors.ErrUnsupported)
}

// Update replaces the file name with what change makes of its content
// (nil and false when it does not exist), retrying when another writer
// changed it in between (on a Swapper; on any other backend the caller's
// lock must keep writers apart). change returning the content unchanged
// writes nothing. Files are read up to max bytes.
func Update(ctx context.Context, b Backend, name string, max int64, change func(old []byte, exists bool) ([]byte, error)) error {
	for {
		old, info, err := ReadFile(ctx, b, name, max)
		exists := err == nil
		if err != nil && !IsNotExist(err) {
			return err
		}
		data, err := change(old, exists)
		if err != nil {
			return err
		}
		if exists && string(data) == string(old) {
			return nil
		}
		s, ok := b.(Swapper)
		if !ok {
			return b.Put(ctx, name, strings.NewReader(string(data)), int64(len(data)))
		}
		err = s.Swap(ctx, name, info.Version, strings.NewReader(string(data)), int64(len(data)))
		if !errors.Is(err, ErrChanged) {
			return err
		}
	}
}
