package storage_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/storage"
)

func TestRedact(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"http://site:s3cret@cache.airgap:8080/x", "http://site:xxxxx@cache.airgap:8080/x"},
		// A user name alone may be a token.
		{"https://ghp_t0ken@cache.airgap/", "https://xxxxx@cache.airgap/"},
		{"https://ghp_t0ken@cache.airgap", "https://xxxxx@cache.airgap"},
		{"https://ghp_t0ken:@cache.airgap", "https://xxxxx@cache.airgap"}, // an empty password is none
		{"s3://AKID@bucket?endpoint=x:1", "s3://xxxxx@bucket?endpoint=x:1"},
		{"https://@cache.airgap/x", "https://xxxxx@cache.airgap/x"},
		{"http://cache.airgap:8080", "http://cache.airgap:8080"},
		{"/srv/my cache", "/srv/my cache"},
		{"s3://bucket?endpoint=127.0.0.1:8333&scheme=http", "s3://bucket?endpoint=127.0.0.1:8333&scheme=http"},
		{"http://site:s3cret@cache.airgap:port/x", "http://xxxxx@cache.airgap:port/x"}, // does not parse
		{"http://site:s3cret@cache.airgap:port", "http://xxxxx@cache.airgap:port"},
		{"s3://AKID:abc/s3cret@bucket?endpoint=x:1", "s3://xxxxx@bucket?endpoint=x:1"}, // a / in the secret
		{"http://site:s3/cret@cache.airgap:port/a@b", "http://xxxxx@b"},
	} {
		if got := storage.Redact(tt.in); got != tt.want {
			t.Errorf("Redact(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

// TestParseS3URLRedacts: an S3 URL that does not parse is named without
// the credentials it may hold.
func TestParseS3URLRedacts(t *testing.T) {
	for _, u := range []string{
		"s3://AKID:s3cret@bucket:port?endpoint=127.0.0.1:8333",
		"s3://AKID:ab/s3cret@bucket?endpoint=127.0.0.1:8333", // a / in the secret
	} {
		_, err := storage.ParseS3URL(u)
		if err == nil || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("ParseS3URL(%q) = %v; want an error without the secret", u, err)
		}
	}
}

// TestOpenRedacts: an http:// cache given where a directory or bucket is
// wanted is named without its password.
func TestOpenRedacts(t *testing.T) {
	_, err := storage.Open(context.Background(), "http://site:s3cret@cache.airgap/")
	if !errors.Is(err, storage.ErrBadLocation) || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("Open = %v; want ErrBadLocation without the password", err)
	}
}
