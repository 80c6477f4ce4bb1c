package netrc_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/netrc"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []netrc.Machine
	}{
		{"empty", "", nil},
		{"one line", "machine cache.airgap login site password s3cret\n",
			[]netrc.Machine{{"cache.airgap", "site", "s3cret"}}},
		{"spread over lines, account ignored", "machine a\n  login u\n\taccount x\n  password p\nmachine b login v password q",
			[]netrc.Machine{{"a", "u", "p"}, {"b", "v", "q"}}},
		{"comments", "# the site's cache\nmachine a login u password p # trailing\n#machine b login v password q\n",
			[]netrc.Machine{{"a", "u", "p"}}},
		{"quoted", `machine a login "my user" password "pa ss\"w\\rd\n"`,
			[]netrc.Machine{{"a", "my user", "pa ss\"w\\rd\n"}}},
		{"default last", "default login anon password none\nmachine a login u password p\n",
			[]netrc.Machine{{"a", "u", "p"}, {"", "anon", "none"}}},
		{"macdef skipped", "machine a login u password p\nmacdef init\ncd /pub\nmachine evil login x\n\nmachine b login v password q\n",
			[]netrc.Machine{{"a", "u", "p"}, {"b", "v", "q"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := netrc.Parse([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, f.Machines); diff != "" {
				t.Errorf("Parse(%q) machines (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, in := range []string{
		"login u password secret-1",                 // before any machine
		"machine a login u password secret-1 bogus", // unknown keyword
		"machine a login u password",                // no value
		`machine a login u password "secret-1`,      // unclosed quote
	} {
		_, err := netrc.Parse([]byte(in))
		if !errors.Is(err, netrc.ErrSyntax) {
			t.Errorf("Parse(%q) = %v; want ErrSyntax", in, err)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("Parse(%q) error %q quotes the file", in, err)
		}
	}
}

func TestLookup(t *testing.T) {
	f, err := netrc.Parse([]byte("machine Cache.Airgap login u password p\nmachine other login v password q\ndefault login d password e\n"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		host, login, password string
		ok                    bool
	}{
		{"cache.airgap", "u", "p", true},
		{"other", "v", "q", true},
		{"unknown", "d", "e", true},
	}
	for _, tt := range tests {
		l, p, ok := f.Lookup(tt.host)
		if l != tt.login || p != tt.password || ok != tt.ok {
			t.Errorf("Lookup(%q) = %q, %q, %v; want %q, %q, %v", tt.host, l, p, ok, tt.login, tt.password, tt.ok)
		}
	}
	var none *netrc.File
	if _, _, ok := none.Lookup("cache.airgap"); ok {
		t.Error("nil File found credentials")
	}
	f, _ = netrc.Parse([]byte("machine a login u password p\n"))
	if _, _, ok := f.Lookup("b"); ok {
		t.Error("Lookup(b) without a default entry found credentials")
	}
}

func TestReadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "netrc")
	if _, err := netrc.ReadFile(path); !errors.Is(err, os.ErrNotExist) || err.Error() != "read netrc "+path+": no such file or directory" {
		t.Errorf("ReadFile(missing) = %v; want ErrNotExist naming %s once", err, path)
	}
	if err := os.WriteFile(path, []byte("machine a login u password p\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := netrc.ReadFile(path)
	if err != nil || f.Path != path || len(f.Machines) != 1 {
		t.Errorf("ReadFile = %+v, %v", f, err)
	}
}

func ExampleFile_Lookup() {
	f, _ := netrc.Parse([]byte("machine cache.airgap login site password s3cret\n"))
	login, _, ok := f.Lookup("cache.airgap")
	fmt.Println(login, ok)
	// Output: site true
}
