package storage_test

import (
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/storage"
)

// FuzzParseS3URL parses s3:// locations (no request is made). A config
// it gives names a bucket, an endpoint that is HOST[:PORT] and a part
// size S3 accepts, and written back as a URL parses to itself; an error
// starts with the URL, with any credentials in it replaced by REDACTED.
func FuzzParseS3URL(f *testing.F) {
	f.Fuzz(func(t *testing.T, raw string) {
		cfg, err := storage.ParseS3URL(raw)
		if err != nil {
			want := raw
			if u, perr := url.Parse(raw); perr == nil && u.User != nil {
				u.User = url.User("REDACTED")
				want = u.String()
			}
			if !strings.HasPrefix(err.Error(), want+": ") {
				t.Fatalf("ParseS3URL(%q): error %q does not start with the URL", raw, err)
			}
			return
		}
		if cfg.Bucket == "" || strings.Contains(cfg.Bucket, "/") || strings.ContainsAny(cfg.Endpoint, "/?#@") || cfg.PartSize != 0 && cfg.PartSize < 5<<20 {
			t.Fatalf("ParseS3URL(%q) = %+v", raw, cfg)
		}
		again, err := storage.ParseS3URL(s3URL(cfg))
		if err != nil {
			t.Fatalf("ParseS3URL(%q) = %+v, written back as %s: %v", raw, cfg, s3URL(cfg), err)
		}
		if diff := cmp.Diff(cfg, again); diff != "" {
			t.Fatalf("ParseS3URL(%q) then %s (-first +second):\n%s", raw, s3URL(cfg), diff)
		}
	})
}

// s3URL writes cfg as the URL that says all of it.
func s3URL(cfg storage.S3Config) string {
	q := url.Values{"region": {cfg.Region}, "scheme": {"https"}, "addressing-style": {"virtual"}}
	if !cfg.Secure {
		q.Set("scheme", "http")
	}
	if cfg.PathStyle {
		q.Set("addressing-style", "path")
	}
	for k, v := range map[string]string{"endpoint": cfg.Endpoint, "profile": cfg.Profile, "storage-class": cfg.StorageClass} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if cfg.PartSize != 0 {
		q.Set("multipart-chunk-size", strconv.FormatUint(cfg.PartSize, 10))
	}
	return (&url.URL{Scheme: "s3", Host: cfg.Bucket, RawQuery: q.Encode()}).String()
}

// FuzzRedact redacts any location. A URL with user info keeps none of
// it but a user name beside a password: its user, or password, is xxxxx.
// One that does not parse loses all that comes before the last @ before
// its query: its user info is xxxxx.
func FuzzRedact(f *testing.F) {
	f.Fuzz(func(t *testing.T, location string) {
		got := storage.Redact(location)
		u, err := url.Parse(location)
		switch {
		case err == nil && u.User == nil:
			if got != location {
				t.Fatalf("Redact(%q) = %q; want it unchanged", location, got)
			}
		case err == nil:
			r, err := url.Parse(got)
			if err != nil || r.User == nil {
				t.Fatalf("Redact(%q) = %q: want a URL with user info", location, got)
			}
			pass, hasPass := r.User.Password()
			if hasPass && pass != "xxxxx" || !hasPass && r.User.Username() != "xxxxx" {
				t.Fatalf("Redact(%q) = %q: want a user or password xxxxx", location, got)
			}
		default:
			scheme, rest, ok := strings.Cut(location, "://")
			if end := strings.IndexAny(rest, "?#"); end >= 0 {
				rest = rest[:end]
			}
			if ok && strings.Contains(rest, "@") && !strings.HasPrefix(got, scheme+"://xxxxx@") {
				t.Fatalf("Redact(%q) = %q: want its user info xxxxx", location, got)
			}
		}
	})
}
