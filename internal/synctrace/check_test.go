package synctrace_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/synctrace"
)

// Pieces of traces, as strace -f -y writes them, of a cache at /c.
const (
	narTemp  = "7 openat(AT_FDCWD</w>, \"/c/nar/.x.tmp-1\", O_RDWR|O_CREAT|O_EXCL|O_CLOEXEC, 0600) = 3</c/nar/.x.tmp-1>\n7 write(3</c/nar/.x.tmp-1>, \"(\\0\\0\\0nix\"..., 4096) = 4096\n"
	narSync  = "7 fsync(3</c/nar/.x.tmp-1>) = 0\n"
	narIn    = "7 renameat(4</c/nar>, \".x.tmp-1\", 4</c/nar>, \"x.nar\") = 0\n"
	narDir   = "7 fsync(4</c/nar>) = 0\n"
	infoTemp = "8 openat(5</c>, \".a.narinfo.tmp-2\", O_RDWR|O_CREAT|O_EXCL|O_CLOEXEC, 0600) = 6</c/.a.narinfo.tmp-2>\n8 write(6</c/.a.narinfo.tmp-2>, \"StorePath: /nix/store/a\\nURL: nar/x.nar\"..., 300) = 300\n"
	infoSync = "8 fsync(6</c/.a.narinfo.tmp-2>) = 0\n"
	infoIn   = "8 renameat(5</c>, \".a.narinfo.tmp-2\", 5</c>, \"a.narinfo\") = 0\n"
	topDir   = "8 fsync(5</c>) = 0\n"
	record   = "8 openat(5</c>, \"nix-airgap/bundles/.b.json.tmp-3\", O_WRONLY|O_CREAT|O_EXCL, 0644) = 9</c/nix-airgap/bundles/.b.json.tmp-3>\n8 write(9</c/nix-airgap/bundles/.b.json.tmp-3>, \"{}\", 2) = 2\n8 fsync(9</c/nix-airgap/bundles/.b.json.tmp-3>) = 0\n8 renameat(10</c/nix-airgap/bundles>, \".b.json.tmp-3\", 10</c/nix-airgap/bundles>, \"b.json\") = 0\n8 fsync(10</c/nix-airgap/bundles>) = 0\n"
	syncfs   = "9 syncfs(11</c>) = 0\n"
)

var cacheRules = synctrace.Rules{
	Root:   "/c",
	NARs:   map[string]string{"/c/a.narinfo": "/c/nar/x.nar"},
	Record: func(p string) bool { return strings.HasPrefix(p, "/c/nix-airgap/bundles/") },
}

// TestCheck: hand-written traces that keep the order pass, and each that
// leaves out a sync fails with the rule it breaks, first.
func TestCheck(t *testing.T) {
	gcRules := cacheRules
	gcRules.Record = nil
	otherFS := cacheRules
	otherFS.Mounts = []string{"/", "/c/nar"}
	packRules := cacheRules
	packRules.Unsynced = func(p string) bool { return strings.HasPrefix(p, "/c/nar/") }
	spoolRules := cacheRules
	spoolRules.Scratch = func(p string) bool { return strings.HasPrefix(filepath.Base(p), "spool-") }
	const (
		keyTemp = "7 openat(AT_FDCWD</w>, \"/c/.k.tmp-1\", O_RDWR|O_CREAT|O_EXCL|O_CLOEXEC, 0600) = 3</c/.k.tmp-1>\n7 write(3</c/.k.tmp-1>, \"key\", 3) = 3\n"
		keySync = "7 fsync(3</c/.k.tmp-1>) = 0\n"
		keyLink = "7 linkat(AT_FDCWD</w>, \"/c/.k.tmp-1\", AT_FDCWD</w>, \"/c/k\", 0) = 0\n7 unlinkat(AT_FDCWD</w>, \"/c/.k.tmp-1\", 0) = 0\n"
		spool   = "7 mkdirat(AT_FDCWD</w>, \"/c/spool-1\", 0700) = 0\n7 openat(AT_FDCWD</w>, \"/c/spool-1/f\", O_WRONLY|O_CREAT, 0600) = 3</c/spool-1/f>\n7 write(3</c/spool-1/f>, \"x\", 1) = 1\n7 unlinkat(AT_FDCWD</w>, \"/c/spool-1/f\", 0) = 0\n7 unlinkat(AT_FDCWD</w>, \"/c/spool-1\", AT_REMOVEDIR) = 0\n"
	)
	for _, tc := range []struct {
		name  string
		trace string
		rules synctrace.Rules
		want  []string // the rules broken, in the order of the trace
	}{
		{"atomic publish", narTemp + narSync + narIn + narDir + infoTemp + infoSync + infoIn + topDir + record, cacheRules, nil},
		{"group commit with syncfs", narTemp + syncfs + narIn + infoTemp + syncfs + infoIn + syncfs + record, cacheRules, nil},
		{"NAR renamed unsynced", narTemp + narIn + narDir + infoTemp + infoSync + infoIn + topDir, cacheRules,
			[]string{synctrace.RuleSyncBeforeRename, synctrace.RuleNARFirst, synctrace.RuleDurableAtExit}},
		{"NAR renamed unsynced where that is allowed", narTemp + narIn + syncfs + infoTemp + infoSync + infoIn + topDir, packRules, nil},
		{"narinfo before its NAR's directory is synced", narTemp + narSync + narIn + infoTemp + infoSync + infoIn + narDir + topDir, cacheRules,
			[]string{synctrace.RuleNARFirst}},
		{"narinfo renamed unsynced", narTemp + narSync + narIn + narDir + infoTemp + infoIn + topDir, cacheRules,
			[]string{synctrace.RuleSyncBeforeRename, synctrace.RuleDurableAtExit}},
		{"record before the narinfo's entry is durable", narTemp + narSync + narIn + narDir + infoTemp + infoSync + infoIn + record + topDir, cacheRules,
			[]string{synctrace.RuleRecordLast}},
		{"record in a directory made for it, synced after it", narTemp + narSync + narIn + narDir + infoTemp + infoSync + infoIn + topDir +
			"8 mkdirat(5</c>, \"nix-airgap/bundles/d\", 0755) = 0\n8 openat(5</c>, \"nix-airgap/bundles/d/.b.json.tmp-3\", O_WRONLY|O_CREAT|O_EXCL, 0644) = 9</c/nix-airgap/bundles/d/.b.json.tmp-3>\n" +
			"8 write(9</c/nix-airgap/bundles/d/.b.json.tmp-3>, \"{}\", 2) = 2\n8 fsync(9</c/nix-airgap/bundles/d/.b.json.tmp-3>) = 0\n" +
			"8 renameat(10</c/nix-airgap/bundles/d>, \".b.json.tmp-3\", 10</c/nix-airgap/bundles/d>, \"b.json\") = 0\n8 fsync(10</c/nix-airgap/bundles/d>) = 0\n8 fsync(11</c/nix-airgap/bundles>) = 0\n",
			cacheRules, nil},
		{"no directory sync at the end", narTemp + narSync + narIn + narDir + infoTemp + infoSync + infoIn, cacheRules,
			[]string{synctrace.RuleDurableAtExit}},
		{"syncfs begun before the write returned",
			"7 openat(AT_FDCWD</w>, \"/c/nar/.x.tmp-1\", O_RDWR|O_CREAT|O_EXCL|O_CLOEXEC, 0600) = 3</c/nar/.x.tmp-1>\n" +
				"7 write(3</c/nar/.x.tmp-1>, \"data\", 4 <unfinished ...>\n" +
				"9 syncfs(11</c> <unfinished ...>\n" +
				"7 <... write resumed>) = 4\n" +
				"9 <... syncfs resumed>) = 0\n" + narIn + narDir,
			cacheRules, []string{synctrace.RuleSyncBeforeRename, synctrace.RuleDurableAtExit}},
		{"syncfs of another file system", narTemp + "9 syncfs(11</c>) = 0\n" + narIn + narDir, otherFS,
			[]string{synctrace.RuleSyncBeforeRename, synctrace.RuleDurableAtExit}},
		{"a failed fsync syncs nothing", narTemp + "7 fsync(3</c/nar/.x.tmp-1>) = -1 EIO (Input/output error)\n" + narIn + narDir, cacheRules,
			[]string{synctrace.RuleSyncBeforeRename, synctrace.RuleDurableAtExit}},
		{"scratch left unsynced", "7 mkdirat(5</c>, \".staging-1\", 0700) = 0\n7 openat(5</c>, \".staging-1/f\", O_WRONLY|O_CREAT, 0600) = 3</c/.staging-1/f>\n7 write(3</c/.staging-1/f>, \"x\", 1) = 1\n7 unlinkat(5</c>, \".staging-1/f\", 0) = 0\n", cacheRules, nil},
		{"directory renamed in before its files are synced", "7 mkdirat(AT_FDCWD</w>, \"/c/.new\", 0700) = 0\n7 openat(AT_FDCWD</w>, \"/c/.new/f\", O_WRONLY|O_CREAT, 0600) = 3</c/.new/f>\n7 write(3</c/.new/f>, \"x\", 1) = 1\n7 renameat(AT_FDCWD</w>, \"/c/.new\", AT_FDCWD</w>, \"/c/d\") = 0\n7 fsync(5</c>) = 0\n7 fsync(3</c/d/f>) = 0\n7 fsync(6</c/d>) = 0\n", cacheRules,
			[]string{synctrace.RuleSyncBeforeRename, synctrace.RuleSyncBeforeRename}},
		{"written where readers find it", "7 openat(AT_FDCWD</w>, \"/c/v.tar\", O_WRONLY|O_CREAT|O_EXCL, 0644) = 3</c/v.tar>\n7 write(3</c/v.tar>, \"x\", 1) = 1\n7 fsync(3</c/v.tar>) = 0\n" + topDir, cacheRules,
			[]string{synctrace.RuleWrittenInPlace}},
		{"truncated where readers find it", "7 openat(AT_FDCWD</w>, \"/c/v.tar\", O_WRONLY|O_TRUNC) = 3</c/v.tar>\n7 fsync(3</c/v.tar>) = 0\n", cacheRules,
			[]string{synctrace.RuleWrittenInPlace}},
		{"linked in after its fsync", keyTemp + keySync + keyLink + topDir, cacheRules, nil},
		{"linked in before its fsync", keyTemp + keyLink + keySync + topDir, cacheRules,
			[]string{synctrace.RuleSyncBeforeRename, synctrace.RuleDurableAtExit}},
		{"a scratch directory Rules name", spool, spoolRules, nil},
		{"the same directory, not named scratch", spool, cacheRules,
			[]string{synctrace.RuleWrittenInPlace, synctrace.RuleDurableAtExit}},
		{"a record durably gone before what it vouched for changes", "8 unlinkat(10</c/nix-airgap/bundles>, \"b.json\", 0) = 0\n8 fsync(10</c/nix-airgap/bundles>) = 0\n" + narTemp + narSync + narIn + narDir, cacheRules, nil},
		{"what a record vouched for changes before its removal is durable", "8 unlinkat(10</c/nix-airgap/bundles>, \"b.json\", 0) = 0\n" + narTemp + narSync + narIn + narDir + "8 fsync(10</c/nix-airgap/bundles>) = 0\n", cacheRules,
			[]string{synctrace.RuleRecordGoneFirst}},
		{"gc: narinfo removal synced before the NAR goes", "7 unlinkat(5</c>, \"a.narinfo\", 0) = 0\n" + topDir + "7 unlinkat(4</c/nar>, \"x.nar\", 0) = 0\n" + narDir, gcRules, nil},
		{"gc: NAR gone before the narinfo's removal is durable", "7 unlinkat(5</c>, \"a.narinfo\", 0) = 0\n7 unlinkat(4</c/nar>, \"x.nar\", 0) = 0\n" + narDir + topDir, gcRules,
			[]string{synctrace.RuleNarinfoGoneFirst}},
		{"gc: NAR gone, narinfo kept", "7 unlinkat(4</c/nar>, \"x.nar\", 0) = 0\n" + narDir, gcRules,
			[]string{synctrace.RuleNarinfoGoneFirst}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			events, err := synctrace.Parse(strings.NewReader(tc.trace))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			vs := synctrace.Check(events, tc.rules)
			for _, v := range vs {
				got = append(got, v.Rule)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("rules broken (-want +got):\n%s\nviolations:\n%s", diff, strings.Join(violations(vs), "\n"))
			}
		})
	}
}

func violations(vs []synctrace.Violation) []string {
	var s []string
	for _, v := range vs {
		s = append(s, v.String())
	}
	return s
}
