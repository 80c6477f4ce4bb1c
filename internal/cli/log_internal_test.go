package cli

import (
	"strings"
	"testing"
)

// TestHumanHandlerLists: a list attribute reads as a command line gives
// it, shell words with a space between, however many there are; JSON
// keeps it a list.
func TestHumanHandlerLists(t *testing.T) {
	for _, tt := range []struct {
		format string
		dirs   []string
		want   string
	}{
		{"text", []string{"/srv/cache"}, "serving (addr=:8080, dirs=/srv/cache)\n"},
		{"text", []string{"/srv/cache", "/media/usb/bundle-1"}, "serving (addr=:8080, dirs=/srv/cache /media/usb/bundle-1)\n"},
		{"text", []string{"/srv/my cache", "s3://nix-cache?endpoint=s3.site:8333&scheme=http"}, "serving (addr=:8080, dirs='/srv/my cache' 's3://nix-cache?endpoint=s3.site:8333&scheme=http')\n"},
		{"json", []string{"/srv/cache", "/media/usb/bundle-1"}, `"addr":":8080","dirs":["/srv/cache","/media/usb/bundle-1"]}` + "\n"},
	} {
		var b strings.Builder
		log, err := newLogger(&b, "info", tt.format)
		if err != nil {
			t.Fatal(err)
		}
		log.Info("serving", "addr", ":8080", "dirs", tt.dirs)
		if got := b.String(); !strings.HasSuffix(got, tt.want) {
			t.Errorf("%s log of dirs %q:\n%s\nwant it to end in\n%s", tt.format, tt.dirs, got, tt.want)
		}
	}
}
