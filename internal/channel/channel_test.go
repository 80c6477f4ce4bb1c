package channel

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/compression"
)

func TestCheckName(t *testing.T) {
	for _, name := range []string{"nixpkgs", "nixos-24.05", "nixpkgs_unstable", "a+b=c?d"} {
		if err := CheckName(name); err != nil {
			t.Errorf("CheckName(%q) = %v", name, err)
		}
	}
	for _, name := range []string{"", ".hidden", "..", "a/b", "a b", "é", strings.Repeat("x", 212)} {
		if err := CheckName(name); !errors.Is(err, ErrBadName) {
			t.Errorf("CheckName(%q) = %v, want ErrBadName", name, err)
		}
	}
	if got := File("nixpkgs"); got != "channels/nixpkgs/nixexprs.tar.xz" {
		t.Errorf("File = %q", got)
	}
	for rel, want := range map[string]string{"channels/nixpkgs/nixexprs.tar.xz": "nixpkgs", "channels/.x/nixexprs.tar.xz": "", "channels/a/b/nixexprs.tar.xz": "", "channels/a/other": "", "nar/x": ""} {
		if got, ok := NameOf(rel); got != want || ok != (want != "") {
			t.Errorf("NameOf(%q) = %q, %v; want %q", rel, got, ok, want)
		}
	}
}

// tree writes a small nixpkgs-shaped tree with a symlink, an executable
// and a .git directory.
func tree(t *testing.T) string {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"default.nix":        "{ ... }: { }\n",
		".version":           "26.05",
		"pkgs/build.sh":      "#!/bin/sh\n",
		".git/HEAD":          "ref: refs/heads/main\n",
		"lib/default.nix":    "{ }\n",
		"pkgs/deep/x/y.nix":  "1\n",
		"pkgs/deep/x/z.json": "{}\n",
	} {
		p := filepath.Join(dir, filepath.FromSlash(name))
		os.MkdirAll(filepath.Dir(p), 0o755)
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, ".sh") {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
	}
	os.Symlink("lib/default.nix", filepath.Join(dir, "lib.nix"))
	return dir
}

// entries lists a channel tarball's entries as "NAME TYPE MODE".
func entries(t *testing.T, data []byte) []string {
	t.Helper()
	r, err := compression.NewReader(bytes.NewReader(data), compression.Sniff(data))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(r)
	var out []string
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		s := hdr.Name + " " + string(hdr.Typeflag) + " " + hdr.FileInfo().Mode().Perm().String()
		if hdr.Linkname != "" {
			s += " -> " + hdr.Linkname
		}
		out = append(out, s)
	}
}

func TestFromDir(t *testing.T) {
	dir := tree(t)
	var a, b bytes.Buffer
	if err := FromDir(context.Background(), &a, dir, "nixpkgs", compression.WriterOptions{}); err != nil {
		t.Fatal(err)
	}
	// Through a symlink, as a channels profile entry is: the same bytes.
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(dir, link)
	if err := FromDir(context.Background(), &b, link, "nixpkgs", compression.WriterOptions{}); err != nil {
		t.Fatal(err)
	}
	if compression.Sniff(a.Bytes()) != compression.XZ || !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatalf("FromDir: not xz, or not the same bytes twice")
	}
	want := []string{
		"nixpkgs/ 5 -rwxr-xr-x",
		"nixpkgs/.version 0 -rw-r--r--",
		"nixpkgs/default.nix 0 -rw-r--r--",
		"nixpkgs/lib/ 5 -rwxr-xr-x",
		"nixpkgs/lib/default.nix 0 -rw-r--r--",
		"nixpkgs/lib.nix 2 -rwxrwxrwx -> lib/default.nix",
		"nixpkgs/pkgs/ 5 -rwxr-xr-x",
		"nixpkgs/pkgs/build.sh 0 -rwxr-xr-x",
		"nixpkgs/pkgs/deep/ 5 -rwxr-xr-x",
		"nixpkgs/pkgs/deep/x/ 5 -rwxr-xr-x",
		"nixpkgs/pkgs/deep/x/y.nix 0 -rw-r--r--",
		"nixpkgs/pkgs/deep/x/z.json 0 -rw-r--r--",
	}
	if diff := cmp.Diff(want, entries(t, a.Bytes())); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
	top, err := Check(bytes.NewReader(a.Bytes()))
	if err != nil || top != "nixpkgs" {
		t.Errorf("Check = %q, %v", top, err)
	}
	if err := FromDir(context.Background(), io.Discard, t.TempDir(), "x", compression.WriterOptions{}); !errors.Is(err, ErrNotChannel) {
		t.Errorf("FromDir of a tree without default.nix = %v, want ErrNotChannel", err)
	}
}

// tarball makes a tarball of files, names as given, gzipped if gz.
func tarball(t *testing.T, gz bool, names ...string) []byte {
	var buf bytes.Buffer
	var w io.Writer = &buf
	var zw *gzip.Writer
	if gz {
		zw = gzip.NewWriter(&buf)
		w = zw
	}
	tw := tar.NewWriter(w)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header", PAXRecords: map[string]string{"comment": "git"}})
	for _, n := range names {
		hdr := &tar.Header{Name: n, Mode: 0o644, Typeflag: tar.TypeReg, Size: 2}
		if strings.HasSuffix(n, "/") {
			hdr.Typeflag, hdr.Size, hdr.Mode = tar.TypeDir, 0, 0o755
		}
		tw.WriteHeader(hdr)
		if hdr.Size > 0 {
			tw.Write([]byte("{}"))
		}
	}
	tw.Close()
	if zw != nil {
		zw.Close()
	}
	return buf.Bytes()
}

func TestFromTarballAndCheck(t *testing.T) {
	gz := tarball(t, true, "nixpkgs-26.05pre1/", "nixpkgs-26.05pre1/default.nix", "nixpkgs-26.05pre1/lib/default.nix")
	var out bytes.Buffer
	if err := FromTarball(&out, bytes.NewReader(gz), compression.WriterOptions{}); err != nil {
		t.Fatal(err)
	}
	if compression.Sniff(out.Bytes()) != compression.XZ {
		t.Fatal("FromTarball of a .tar.gz did not make xz")
	}
	if top, err := Check(bytes.NewReader(out.Bytes())); err != nil || top != "nixpkgs-26.05pre1" {
		t.Errorf("Check = %q, %v", top, err)
	}
	// xz is copied as it is.
	var again bytes.Buffer
	if err := FromTarball(&again, bytes.NewReader(out.Bytes()), compression.WriterOptions{}); err != nil || !bytes.Equal(again.Bytes(), out.Bytes()) {
		t.Errorf("FromTarball of xz: %v, or the bytes changed", err)
	}

	for name, data := range map[string][]byte{
		"two tops":     tarball(t, false, "a/default.nix", "b/default.nix"),
		"top file":     tarball(t, false, "default.nix"),
		"no default":   tarball(t, false, "a/", "a/lib.nix"),
		"climbs out":   tarball(t, false, "a/default.nix", "a/../../etc/passwd"),
		"absolute":     tarball(t, false, "/a/default.nix"),
		"empty":        tarball(t, false),
		"not a tar":    []byte("hello, this is not a tarball at all, but it is long enough to be read"),
		"truncated gz": gz[:len(gz)/2],
	} {
		if _, err := Check(bytes.NewReader(data)); !errors.Is(err, ErrNotChannel) {
			t.Errorf("%s: Check = %v, want ErrNotChannel", name, err)
		}
	}
}

// FuzzCheck feeds Check arbitrary tarballs: it must not panic, and what
// it accepts has one top directory with a default.nix.
func FuzzCheck(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		top, err := Check(bytes.NewReader(data))
		if err == nil && (top == "" || strings.Contains(top, "/")) {
			t.Fatalf("Check accepted a tarball with top %q", top)
		}
	})
}
