package storepath

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	tests := []struct {
		dir  Dir
		in   string
		want Path
	}{
		{"/nix/store", "/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12.1",
			Path{"/nix/store", "7h7qgvs4kgzsn8a6rb273saxyqh4jxlz", "hello-2.12.1"}},
		{"/opt/nix/store", "/opt/nix/store/00000000000000000000000000000000-a.drv",
			Path{"/opt/nix/store", "00000000000000000000000000000000", "a.drv"}},
		{"/nix/store", "/nix/store/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-x+y=z?_.-",
			Path{"/nix/store", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", "x+y=z?_.-"}},
	}
	for _, tt := range tests {
		got, err := tt.dir.Parse(tt.in)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tt.in, err)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("Parse(%q) mismatch (-want +got):\n%s", tt.in, diff)
		}
		if got.String() != tt.in {
			t.Errorf("String() = %q, want %q", got.String(), tt.in)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, in := range []string{
		"",
		"/nix/store",
		"/nix/store/",
		"/nix/storex/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello",
		"/opt/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello", // other store dir
		"/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz",
		"/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-",
		"/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxle-hello", // 'e' is not nix32
		"/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-.hidden",
		"/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-a/b",
		"/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-a b",
		"/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz_hello",
	} {
		if _, err := Dir("/nix/store").Parse(in); !errors.Is(err, ErrBadPath) {
			t.Errorf("Parse(%q) error = %v, want ErrBadPath", in, err)
		}
	}
}

func TestParseBelow(t *testing.T) {
	p, rest, err := Dir("/nix/store").ParseBelow("/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello/bin/hello")
	if err != nil || p.Name != "hello" || rest != "/bin/hello" {
		t.Fatalf("ParseBelow = %v, %q, %v", p, rest, err)
	}
}

func TestParseDir(t *testing.T) {
	for in, ok := range map[string]bool{"/nix/store": true, "/opt/nix/store": true, "nix/store": false, "/nix/store/": false, "/": false, "/a/../b": false} {
		if _, err := ParseDir(in); (err == nil) != ok {
			t.Errorf("ParseDir(%q) error = %v, want ok=%v", in, err, ok)
		}
	}
}

// The expected paths were printed by Nix 2.8's
// `nix-store --print-fixed-path` with NIX_STORE_DIR set to the dir.
func TestMakeFixedOutput(t *testing.T) {
	tests := []struct {
		dir    Dir
		method Method
		hash   string
		name   string
		want   string
	}{
		{"/nix/store", Flat, "sha256:1vdqpkz6gi2rf9mnd11xqpl6fp0sfdzmsr8j4i0ngsr8ll71c7ma", "hello.txt", "/nix/store/c7zvk5mw39qcypp98jhvswnjzxldryc1-hello.txt"},
		{"/nix/store", Recursive, "sha256:1vdqpkz6gi2rf9mnd11xqpl6fp0sfdzmsr8j4i0ngsr8ll71c7ma", "src", "/nix/store/gd7hc41nlgsvml77anm977s403rpb33p-src"},
		{"/nix/store", Recursive, "sha1:2jmj7l5rSw0yVb/vlWAYkK/YBwk=", "src", "/nix/store/bsalvgkn4hqw660i0xpl5421g1w2zh2j-src"},
		{"/nix/store", Flat, "md5:d41d8cd98f00b204e9800998ecf8427e", "empty", "/nix/store/8xf6nzqzxvylm01ppl21p8i0r6hz0lq7-empty"},
		{"/opt/nix/store", Flat, "sha256:1vdqpkz6gi2rf9mnd11xqpl6fp0sfdzmsr8j4i0ngsr8ll71c7ma", "hello.txt", "/opt/nix/store/6k5mwn96wli9k4asm874qc41fw9g3052-hello.txt"},
		{"/opt/nix/store", Recursive, "sha256:1vdqpkz6gi2rf9mnd11xqpl6fp0sfdzmsr8j4i0ngsr8ll71c7ma", "src", "/opt/nix/store/crh9g84q4ahdaalqxkpgms61pf4s23fg-src"},
		{"/opt/nix/store", Recursive, "sha1:2jmj7l5rSw0yVb/vlWAYkK/YBwk=", "src", "/opt/nix/store/b50c7ld7b0cjnk1sbhv094zqqnvqh3f9-src"},
		{"/opt/nix/store", Flat, "md5:d41d8cd98f00b204e9800998ecf8427e", "empty", "/opt/nix/store/cqb6yx2hxrzgynjslsir0gzf21na9pqv-empty"},
	}
	for _, tt := range tests {
		h, err := ParseHash(tt.hash)
		if err != nil {
			t.Fatal(err)
		}
		got, err := tt.dir.MakeFixedOutput(tt.method, h, tt.name)
		if err != nil {
			t.Fatal(err)
		}
		if got.String() != tt.want {
			t.Errorf("%s.MakeFixedOutput(%d, %s, %q) = %s, want %s", tt.dir, tt.method, tt.hash, tt.name, got, tt.want)
		}
	}
}

// FuzzParse parses store paths, and paths below them, as Parse and
// ParseBelow take them from the user and from caches.
func FuzzParse(f *testing.F) {
	f.Add("/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12.1")
	f.Add("/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello/bin/hello")
	f.Add("/nix/store/.links")
	f.Fuzz(func(t *testing.T, s string) {
		d := Dir("/nix/store")
		below, rest, belowErr := d.ParseBelow(s)
		if belowErr == nil && s != below.String()+rest && s != below.String()+"/" {
			t.Fatalf("ParseBelow(%q) = %s, %q", s, below, rest)
		}
		p, err := d.Parse(s)
		if err != nil {
			return
		}
		if belowErr != nil || below != p || rest != "" {
			t.Fatalf("Parse(%q) = %s but ParseBelow = %s, %q, %v", s, p, below, rest, belowErr)
		}
		if p.String() != s {
			t.Fatalf("Parse(%q).String() = %q", s, p.String())
		}
		if _, err := d.Base(p.Base()); err != nil {
			t.Fatalf("Base(%q): %v", p.Base(), err)
		}
	})
}

func TestIsHashPart(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want bool
	}{
		{"7h7qgvs4kgzsn8a6rb273saxyqh4jxlz", true},
		{"00000000000000000000000000000000", true},
		{"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", true},
		{"", false},
		{"7h7qgvs4kgzsn8a6rb273saxyqh4jxl", false},   // 31
		{"7h7qgvs4kgzsn8a6rb273saxyqh4jxlzz", false}, // 33
		{"7h7qgvs4kgzsn8a6rb273saxyqh4jxle", false},  // e, o, u and t are not nix32
		{"7h7qgvs4kgzsn8a6rb273saxyqh4jxlo", false},
		{"7h7qgvs4kgzsn8a6rb273saxyqh4jxlu", false},
		{"7h7qgvs4kgzsn8a6rb273saxyqh4jxlt", false},
		{"7H7QGVS4KGZSN8A6RB273SAXYQH4JXLZ", false},
		{"../../../../../../../etc/passwd", false},
	} {
		if got := IsHashPart(tt.in); got != tt.want {
			t.Errorf("IsHashPart(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// TestCompare checks that Compare orders as the paths' strings do.
func TestCompare(t *testing.T) {
	h1, h2 := "0000000000000000000000000000000a", "0000000000000000000000000000000b"
	paths := []Path{
		{}, {"/nix/store", h1, "a"}, {"/nix/store", h1, "a-b"}, {"/nix/store", h1, "a.drv"}, {"/nix/store", h1, "b"},
		{"/nix/store", h2, "a"}, {"/nix/store", h2, "+"}, {"/nix/stor", h2, "a"}, {"/nix/store", "short", "a"}, {"/nix/store-x", h1, "a"},
	}
	for _, a := range paths {
		for _, b := range paths {
			if got, want := Compare(a, b), strings.Compare(a.String(), b.String()); got != want {
				t.Errorf("Compare(%s, %s) = %d, want %d", a, b, got, want)
			}
		}
	}
}

// FuzzParseDir takes a store dir as manifests and nix-cache-info give it,
// and a path in it: a dir ParseDir accepts is clean and absolute, and
// paths parsed in it print as given and name it.
func FuzzParseDir(f *testing.F) {
	f.Fuzz(func(t *testing.T, dir, s string) {
		d, err := ParseDir(dir)
		if err != nil {
			return
		}
		if string(d) != dir || !strings.HasPrefix(dir, "/") || strings.HasSuffix(dir, "/") {
			t.Fatalf("ParseDir(%q) = %q", dir, d)
		}
		p, err := d.Parse(s)
		if err != nil {
			return
		}
		if p.Dir != d || p.String() != s {
			t.Fatalf("%s.Parse(%q) = %#v", d, s, p)
		}
	})
}
