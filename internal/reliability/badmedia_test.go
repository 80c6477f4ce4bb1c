package reliability_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cli"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
	"github.com/nix-airgap/nix-airgap/internal/signing"
)

type tarEntry struct {
	hdr  tar.Header
	body []byte
}

// dirEntries lists a bundle directory as tar entries in the order of
// docs/bundle-format.md §4: nix-cache-info, NAR and other files,
// narinfos, manifest.json, its signature.
func dirEntries(t *testing.T, dir string) []tarEntry {
	t.Helper()
	var first, files, narinfos, last []tarEntry
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		e := tarEntry{tar.Header{Name: filepath.ToSlash(rel), Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}, data}
		switch {
		case rel == bundle.CacheInfo:
			first = append(first, e)
		case rel == bundle.ManifestName:
			last = append([]tarEntry{e}, last...)
		case rel == bundle.SigName:
			last = append(last, e)
		case strings.HasSuffix(rel, ".narinfo"):
			narinfos = append(narinfos, e)
		default:
			files = append(files, e)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return slices.Concat(first, files, narinfos, last)
}

func writeTar(t *testing.T, entries []tarEntry) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := e.hdr
		if err := tw.WriteHeader(&hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(t.TempDir(), "b.tar")
	if err := os.WriteFile(name, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return name
}

func copyTree(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy")
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	return dst
}

func firstMatch(t *testing.T, dir, glob string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, glob))
	if len(m) == 0 {
		t.Fatalf("no %s in %s", glob, dir)
	}
	slices.Sort(m)
	rel, _ := filepath.Rel(dir, m[0])
	return filepath.ToSlash(rel)
}

func editFile(t *testing.T, name string, f func([]byte) []byte) {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, f(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func flip(at func(n int) int) func([]byte) []byte {
	return func(b []byte) []byte { b[at(len(b))] ^= 0x20; return b }
}

func half(b []byte) []byte { return b[:len(b)/2] }

// TestBadMedia damages a bundle in every way media fail and attacks it
// through its tar form, then runs the real `verify` and `import` on it:
// each must exit with the code for the problem and name the file, and the
// cache must stay byte for byte as it was, with nothing written beside it.
func TestBadMedia(t *testing.T) {
	nixtest.Require(t)
	s := newSite(t, 12, 16)
	good := filepath.Join(t.TempDir(), "bundle")
	s.pack(t, good)
	nar0 := firstMatch(t, good, "nar/*")
	ni0 := firstMatch(t, good, "*.narinfo")
	intruder, _, err := signing.Generate("intruder-1")
	if err != nil {
		t.Fatal(err)
	}
	middle := func(n int) int { return n / 2 }

	type tc struct {
		name string
		dir  func(t *testing.T, dir string)               // damages a copy of the bundle directory
		tar  func(t *testing.T, es []tarEntry) []tarEntry // or builds a tar from its entries
		code int
		want []string // in the output of both commands
	}
	tests := []tc{
		{"flipped byte in a NAR", func(t *testing.T, d string) { editFile(t, filepath.Join(d, nar0), flip(middle)) }, nil, cli.ExitCorrupt, []string{nar0}},
		{"flipped byte in a narinfo", func(t *testing.T, d string) {
			editFile(t, filepath.Join(d, ni0), func(b []byte) []byte {
				i := bytes.Index(b, []byte("NarSize: ")) + len("NarSize: ")
				b[i] ^= 0x01
				return b
			})
		}, nil, cli.ExitCorrupt, []string{ni0}},
		{"flipped byte in the manifest", func(t *testing.T, d string) {
			editFile(t, filepath.Join(d, bundle.ManifestName), func(b []byte) []byte {
				b[bytes.Index(b, []byte(`"tool"`))+2] ^= 0x20
				return b
			})
		}, nil, cli.ExitUntrusted, []string{bundle.SigName}},
		{"truncated NAR", func(t *testing.T, d string) { editFile(t, filepath.Join(d, nar0), half) }, nil, cli.ExitCorrupt, []string{nar0}},
		{"empty NAR", func(t *testing.T, d string) { editFile(t, filepath.Join(d, nar0), func([]byte) []byte { return nil }) }, nil, cli.ExitCorrupt, []string{nar0}},
		{"truncated narinfo", func(t *testing.T, d string) { editFile(t, filepath.Join(d, ni0), half) }, nil, cli.ExitCorrupt, []string{ni0}},
		{"truncated manifest", func(t *testing.T, d string) { editFile(t, filepath.Join(d, bundle.ManifestName), half) }, nil, cli.ExitUntrusted, []string{bundle.SigName}},
		{"missing NAR", func(t *testing.T, d string) { os.Remove(filepath.Join(d, nar0)) }, nil, cli.ExitMissing, []string{nar0}},
		{"missing narinfo", func(t *testing.T, d string) { os.Remove(filepath.Join(d, ni0)) }, nil, cli.ExitMissing, []string{ni0}},
		{"missing signature", func(t *testing.T, d string) { os.Remove(filepath.Join(d, bundle.SigName)) }, nil, cli.ExitUntrusted, []string{"unsigned"}},
		{"extra file", func(t *testing.T, d string) {
			os.WriteFile(filepath.Join(d, "run-me.sh"), []byte("#!/bin/sh\n"), 0o755)
		}, nil, cli.ExitCorrupt, []string{"run-me.sh"}},
		{"extra NAR", func(t *testing.T, d string) { os.WriteFile(filepath.Join(d, "nar", "extra.nar"), []byte("x"), 0o644) }, nil, cli.ExitCorrupt, []string{"nar/extra.nar"}},
		{"signed by the wrong key", func(t *testing.T, d string) {
			m, _ := os.ReadFile(filepath.Join(d, bundle.ManifestName))
			os.WriteFile(filepath.Join(d, bundle.SigName), bundle.Sign(m, intruder), 0o644)
		}, nil, cli.ExitUntrusted, []string{"intruder-1"}},

		{"tar: empty stream", nil, func(t *testing.T, es []tarEntry) []tarEntry { return nil }, cli.ExitMissing, []string{bundle.ManifestName}},
		{"tar: entry escaping with ..", nil, func(t *testing.T, es []tarEntry) []tarEntry {
			return slices.Insert(es, 1, tarEntry{tar.Header{Name: "../escaped", Mode: 0o644, Size: 3, Typeflag: tar.TypeReg}, []byte("bad")})
		}, cli.ExitCorrupt, []string{"../escaped"}},
		{"tar: entry escaping inside a name", nil, func(t *testing.T, es []tarEntry) []tarEntry {
			return slices.Insert(es, 1, tarEntry{tar.Header{Name: "nar/../../escaped", Mode: 0o644, Size: 3, Typeflag: tar.TypeReg}, []byte("bad")})
		}, cli.ExitCorrupt, []string{"escaped"}},
		{"tar: absolute entry", nil, func(t *testing.T, es []tarEntry) []tarEntry {
			return slices.Insert(es, 1, tarEntry{tar.Header{Name: "/tmp/escaped", Mode: 0o644, Size: 3, Typeflag: tar.TypeReg}, []byte("bad")})
		}, cli.ExitCorrupt, []string{"/tmp/escaped"}},
		{"tar: symlink entry pointing out", nil, func(t *testing.T, es []tarEntry) []tarEntry {
			return slices.Insert(es, 1, tarEntry{tar.Header{Name: "nar/link.nar", Linkname: "/etc/passwd", Mode: 0o777, Typeflag: tar.TypeSymlink}, nil})
		}, cli.ExitCorrupt, []string{"nar/link.nar"}},
		{"tar: NAR replaced by a symlink", nil, func(t *testing.T, es []tarEntry) []tarEntry {
			for i, e := range es {
				if e.hdr.Name == nar0 {
					es[i] = tarEntry{tar.Header{Name: nar0, Linkname: "/etc/passwd", Mode: 0o777, Typeflag: tar.TypeSymlink}, nil}
				}
			}
			return es
		}, cli.ExitCorrupt, []string{nar0}},
		{"tar: hard link entry", nil, func(t *testing.T, es []tarEntry) []tarEntry {
			return slices.Insert(es, 1, tarEntry{tar.Header{Name: "nar/hard.nar", Linkname: "/etc/passwd", Mode: 0o644, Typeflag: tar.TypeLink}, nil})
		}, cli.ExitCorrupt, []string{"nar/hard.nar"}},
		{"tar: device entry", nil, func(t *testing.T, es []tarEntry) []tarEntry {
			return slices.Insert(es, 1, tarEntry{tar.Header{Name: "nar/dev.nar", Mode: 0o644, Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}, nil})
		}, cli.ExitCorrupt, []string{"nar/dev.nar"}},
		{"tar: a narinfo twice, the second altered", nil, func(t *testing.T, es []tarEntry) []tarEntry {
			for _, e := range es {
				if e.hdr.Name == ni0 {
					body := bytes.Replace(e.body, []byte("References: "), []byte("References: "+s.paths[0].Base()+" "), 1)
					hdr := e.hdr
					hdr.Size = int64(len(body))
					return slices.Insert(es, len(es)-2, tarEntry{hdr, body})
				}
			}
			t.Fatal("no narinfo")
			return nil
		}, cli.ExitCorrupt, []string{ni0}},
	}
	sandbox := t.TempDir()
	cacheDir := filepath.Join(sandbox, "cache")
	s.run(t, "import", good, "--cache", cacheDir, "--public-key", s.pkFile) // something to keep safe
	before := nixtest.VisibleTreeHash(t, cacheDir)
	sandboxBefore, _ := os.ReadDir(sandbox)

	check := func(t *testing.T, src string, tt tc) {
		t.Helper()
		for _, cmd := range [][]string{
			{"verify", src, "--public-key", s.pkFile},
			{"import", src, "--cache", cacheDir, "--public-key", s.pkFile},
		} {
			out, err := s.cli(t.Context(), cmd...).CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("%s: %v, want exit code %d\n%s", cmd[0], err, tt.code, out)
			}
			if ee.ExitCode() != tt.code {
				t.Errorf("%s: exit code %d, want %d\n%s", cmd[0], ee.ExitCode(), tt.code, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("%s: output does not name %q:\n%s", cmd[0], w, out)
				}
			}
			if testing.Verbose() {
				t.Logf("%s: exit %d: %s", cmd[0], ee.ExitCode(), firstLine(out))
			}
		}
		if nixtest.VisibleTreeHash(t, cacheDir) != before {
			t.Fatal("a refused import changed the cache")
		}
		if after, _ := os.ReadDir(sandbox); len(after) != len(sandboxBefore) {
			t.Fatalf("a refused import wrote beside the cache: %v", after)
		}
		for _, p := range []string{"/tmp/escaped", filepath.Join(filepath.Dir(cacheDir), "escaped")} {
			if _, err := os.Lstat(p); err == nil {
				os.Remove(p)
				t.Fatalf("a tar entry escaped to %s", p)
			}
		}
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.dir != nil {
				d := copyTree(t, good)
				tt.dir(t, d)
				check(t, d, tt)
				check(t, writeTar(t, dirEntries(t, d)), tt)
				return
			}
			check(t, writeTar(t, tt.tar(t, dirEntries(t, good))), tt)
		})
	}

	t.Run("tar cut short", func(t *testing.T) {
		whole, err := os.ReadFile(writeTar(t, dirEntries(t, good)))
		if err != nil {
			t.Fatal(err)
		}
		// Cuts inside headers and files, and (len-2048) at the end of the
		// manifest, just before the signature's header, where archive/tar
		// sees a stream that ended: all are corrupt, not unsigned.
		for _, cut := range []int{100, 512, len(whole) / 3, len(whole) / 2, len(whole) - 2048, len(whole) - 1536} {
			name := filepath.Join(t.TempDir(), "cut.tar")
			os.WriteFile(name, whole[:cut], 0o644)
			for _, cmd := range [][]string{
				{"verify", name, "--public-key", s.pkFile},
				{"import", name, "--cache", cacheDir, "--public-key", s.pkFile},
			} {
				out, err := s.cli(t.Context(), cmd...).CombinedOutput()
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != cli.ExitCorrupt || !strings.Contains(string(out), "cut short") {
					t.Errorf("cut at %d of %d: %s: %v, want exit %d saying the stream was cut short:\n%s", cut, len(whole), cmd[0], err, cli.ExitCorrupt, out)
				}
			}
			if nixtest.VisibleTreeHash(t, cacheDir) != before {
				t.Fatalf("cut at %d: a refused import changed the cache", cut)
			}
		}
		// Without only its end-of-archive marker, a tar still holds every
		// file whole, signature included: it verifies. So does one cut
		// before the signature when unsigned input is allowed: the whole
		// manifest is what every file is checked against.
		for _, c := range []struct {
			cut  int
			args []string
		}{
			{len(whole) - 1024, []string{"--public-key", s.pkFile}},
			{len(whole) - 2048, []string{"--allow-unsigned"}},
		} {
			name := filepath.Join(t.TempDir(), "unterminated.tar")
			os.WriteFile(name, whole[:c.cut], 0o644)
			if out, err := s.cli(t.Context(), append([]string{"verify", name}, c.args...)...).CombinedOutput(); err != nil {
				t.Errorf("verify %v of a tar cut at %d of %d: %v\n%s", c.args, c.cut, len(whole), err, out)
			}
		}
	})
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}
