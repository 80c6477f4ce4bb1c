package synctrace_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/synctrace"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, trace string
		want        []synctrace.Event
	}{
		{"create and write", "12 openat(AT_FDCWD</w>, \"/c/.t\", O_RDWR|O_CREAT|O_EXCL|O_CLOEXEC, 0600) = 3</c/.t>\n12 write(3</c/.t>, \"a, b) = 1\"..., 40) = 40\n",
			[]synctrace.Event{{Kind: synctrace.Create, Path: "/c/.t", PID: 12, Start: 1, Line: 1}, {Kind: synctrace.Write, Path: "/c/.t", PID: 12, Start: 2, Line: 2}}},
		{"truncating open of a relative name", "openat(3</c/nar>, \"x\", O_WRONLY|O_TRUNC) = 4</c/nar/x>\n",
			[]synctrace.Event{{Kind: synctrace.Write, Path: "/c/nar/x", Start: 1, Line: 1}}},
		{"a path with escapes", "7 renameat(3</c/a\\76b>, \"x\\\"y\", AT_FDCWD</w>, \"/c/\\303\\251\") = 0\n",
			[]synctrace.Event{{Kind: synctrace.Rename, Path: "/c/a>b/x\"y", NewPath: "/c/é", PID: 7, Start: 1, Line: 1}}},
		{"split by another process", "7 fsync(3</c> <unfinished ...>\n8 mkdirat(AT_FDCWD</w>, \"d\", 0755) = 0\n7 <... fsync resumed>) = 0\n",
			[]synctrace.Event{{Kind: synctrace.Create, Path: "/w/d", Dir: true, PID: 8, Start: 2, Line: 2}, {Kind: synctrace.Sync, Path: "/c", PID: 7, Start: 1, Line: 3}}},
		{"failed calls, pipes, signals and exits", "7 unlinkat(3</c>, \"x\", 0) = -1 ENOENT (No such file or directory)\n7 write(1<pipe:[12]>, \"x\", 1) = 1\n7 --- SIGURG {si_signo=SIGURG} ---\n7 +++ exited with 0 +++\n7 ???( <detached ...>\n",
			nil},
		{"a write to a deleted file", "7 write(3</c/x (deleted)>, \"x\", 1) = 1\n", nil},
		{"a relative name with no directory", "7 unlink(\"x\") = 0\n7 unlink(\"/c/y\") = 0\n",
			[]synctrace.Event{{Kind: synctrace.Remove, Path: "/c/y", PID: 7, Start: 2, Line: 2}}},
		{"syncfs, sync, exchange", "7 syncfs(3</c>) = 0\n7 sync() = 0\n7 renameat2(AT_FDCWD</w>, \"a\", AT_FDCWD</w>, \"b\", RENAME_EXCHANGE) = 0\n",
			[]synctrace.Event{{Kind: synctrace.SyncFS, Path: "/c", PID: 7, Start: 1, Line: 1}, {Kind: synctrace.SyncAll, PID: 7, Start: 2, Line: 2},
				{Kind: synctrace.Rename, Path: "/w/a", NewPath: "/w/b", Exchange: true, PID: 7, Start: 3, Line: 3}}},
		{"a writev and a copy", "7 writev(3</c/x>, [{iov_base=\"a\", iov_len=1}], 1) = 1\n7 copy_file_range(3</c/x>, NULL, 4</c/y>, NULL, 10, 0) = 10\n",
			[]synctrace.Event{{Kind: synctrace.Write, Path: "/c/x", PID: 7, Start: 1, Line: 1}, {Kind: synctrace.Write, Path: "/c/y", PID: 7, Start: 2, Line: 2}}},
		{"a rename its process never returned from", "7 renameat(3</c>, \"a\", 3</c>, \"b\" <unfinished ...>\n8 fsync(4</c>) = 0\n",
			[]synctrace.Event{{Kind: synctrace.Sync, Path: "/c", PID: 8, Start: 2, Line: 2}, {Kind: synctrace.Rename, Path: "/c/a", NewPath: "/c/b", PID: 7, Start: 1, Line: 2}}},
		{"links", "7 linkat(AT_FDCWD</w>, \"/c/.k.tmp-1\", 4</c>, \"k\", 0) = 0\n7 linkat(3</c/#1 (deleted)>, \"\", 4</c>, \"t\", AT_EMPTY_PATH) = 0\n" +
			"7 linkat(3</tmp/#2>, \"\", 4</c>, \"u\", AT_EMPTY_PATH) = 0\n7 link(\"x\", \"/c/v\") = 0\n",
			[]synctrace.Event{{Kind: synctrace.Link, Path: "/c/.k.tmp-1", NewPath: "/c/k", PID: 7, Start: 1, Line: 1},
				{Kind: synctrace.Create, Path: "/c/t", PID: 7, Start: 2, Line: 2},
				{Kind: synctrace.Link, Path: "/tmp/#2", NewPath: "/c/u", PID: 7, Start: 3, Line: 3},
				{Kind: synctrace.Create, Path: "/c/v", PID: 7, Start: 4, Line: 4}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := synctrace.Parse(strings.NewReader(tc.trace))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Text" }, cmp.Ignore())); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
		})
	}
}

// TestParseErrors: a call it cannot read is an error naming its line.
func TestParseErrors(t *testing.T) {
	for _, trace := range []string{
		"7 renameat(3</c>, \"a\") = 0\n",
		"1 fsync(3</c>) = 0\n7 unlinkat(3</c>, x, 0) = 0\n",
		"7 fsync(3</c>\n",
		"7 unlinkat(3</c>, \"x\\9\", 0) = 0\n",
		"7 unlinkat(3</c>, \"x\\x4\", 0) = 0\n",
	} {
		if _, err := synctrace.Parse(strings.NewReader(trace)); err == nil || !strings.Contains(err.Error(), "line ") {
			t.Errorf("Parse(%q) = %v, want an error naming the line", trace, err)
		}
	}
}

// FuzzParse: any trace parses or fails with an error, never a panic; the
// events it gives have clean absolute paths, in the order of their lines;
// and Check replays them without a panic.
func FuzzParse(f *testing.F) {
	f.Add(narTemp + narSync + narIn + narDir + infoTemp + infoSync + infoIn + topDir + record)
	f.Add("7 write(3</c/x>, \"a\", 1 <unfinished ...>\n9 syncfs(11</c> <unfinished ...>\n7 <... write resumed>) = 1\n9 <... syncfs resumed>) = 0\n")
	f.Add("7 renameat2(3</c/a\\76b>, \"x\\\"y\\303\\251\", AT_FDCWD</w>, \"/c/z\", RENAME_EXCHANGE) = 0\n7 unlink(\"x\") = 0\n")
	f.Add("7 linkat(AT_FDCWD</w>, \"/c/.k.tmp-1\", 4</c>, \"k\", 0) = 0\n7 linkat(3</tmp/#2>, \"\", 4</c>, \"u\", AT_EMPTY_PATH) = 0\n")
	f.Fuzz(func(t *testing.T, trace string) {
		events, err := synctrace.Parse(strings.NewReader(trace))
		if err != nil {
			return
		}
		last := 0
		for _, e := range events {
			for _, p := range []string{e.Path, e.NewPath} {
				if p != "" && (!filepath.IsAbs(p) || filepath.Clean(p) != p) {
					t.Errorf("%v: path %q is not clean and absolute", e, p)
				}
			}
			if e.Line < last || e.Start > e.Line {
				t.Errorf("%v: out of order after line %d", e, last)
			}
			last = e.Line
		}
		synctrace.Check(events, synctrace.Rules{Root: "/c", NARs: map[string]string{"/c/a.narinfo": "/c/nar/x.nar"},
			Record: func(p string) bool { return strings.HasSuffix(p, ".json") }, Mounts: []string{"/", "/c/nar"}})
	})
}
