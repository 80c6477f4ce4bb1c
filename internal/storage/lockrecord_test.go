package storage

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestLockHolder(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	const gone = 1 << 30 // above any pid_max: kill(2) says ESRCH
	for _, tt := range []struct {
		name, record, want string
	}{
		{"an older version's record", `{"holder":"pid 42 (nix-airgap gc)","host":"h"}`, "pid 42 (nix-airgap gc) on h"},
		{"an older version's record without a host", `{"holder":"pid 42 (nix-airgap gc)"}`, "pid 42 (nix-airgap gc)"},
		{"another host's", `{"command":"gc","pid":42,"host":"h"}`, "gc (pid 42 on h)"},
		{"a process of this host that is gone", fmt.Sprintf(`{"command":"gc","pid":%d,"host":%q}`, gone, host), ""},
		{"two records written over each other", `{"command":"gc","pid":42,"host":"h"}` + "\nx\"}\n", "gc (pid 42 on h)"},
		{"garbled", "\x00\x00", ""},
		{"empty", "", ""},
	} {
		if got := lockHolder([]byte(tt.record)); got != tt.want {
			t.Errorf("%s: lockHolder(%q) = %q, want %q", tt.name, tt.record, got, tt.want)
		}
	}
	mine := lockHolder(newLockRecord(LockOptions{Command: "import b.tar"}))
	if want := fmt.Sprintf("import b.tar (pid %d on %s, since ", os.Getpid(), host); !strings.HasPrefix(mine, want) || !strings.HasSuffix(mine, ")") {
		t.Errorf("this process's record reads %q, want %q…)", mine, want)
	}
}

// A record's PID is judged gone only in the PID space it was written in,
// and a PID taken again by another process is gone.
func TestLockHolderSpace(t *testing.T) {
	const space, host = "boot-1 pid:[1]", "nixos"
	const gone = 1 << 30
	pid, start := os.Getpid(), procStart(os.Getpid())
	if start == "" {
		t.Skip("no /proc: no start times to compare")
	}
	record := func(pid int, host, space, start string) string {
		return fmt.Sprintf(`{"command":"gc","pid":%d,"host":%q,"pidSpace":%q,"pidStart":%q}`, pid, host, space, start)
	}
	named := fmt.Sprintf("gc (pid %%d on %s)", host)
	for _, tt := range []struct {
		name, record, want string
	}{
		{"alive here", record(pid, host, space, start), fmt.Sprintf(named, pid)},
		{"gone here", record(gone, host, space, "5"), ""},
		{"its PID taken again here", record(pid, host, space, "1"), ""},
		{"gone here, start unknown", record(gone, host, space, ""), ""},
		{"alive here, start unknown", record(pid, host, space, ""), fmt.Sprintf(named, pid)},
		{"another machine of the same name", record(gone, host, "boot-2 pid:[1]", "5"), fmt.Sprintf(named, gone)},
		{"another PID namespace", record(gone, host, "boot-1 pid:[2]", "5"), fmt.Sprintf(named, gone)},
		{"an older version's, gone here", fmt.Sprintf(`{"command":"gc","pid":%d,"host":%q}`, gone, host), ""},
		{"an older version's, another host", fmt.Sprintf(`{"command":"gc","pid":%d,"host":"h"}`, gone), fmt.Sprintf("gc (pid %d on h)", gone)},
	} {
		if got := holderSeenFrom([]byte(tt.record), host, space); got != tt.want {
			t.Errorf("%s: holderSeenFrom(%s) = %q, want %q", tt.name, tt.record, got, tt.want)
		}
	}
}

// FuzzLockHolder reads lock records as a waiter does: whatever another
// process, a power cut or a hand left in a lock file or object, the
// waiter gets a description or "", never a panic.
func FuzzLockHolder(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		got := lockHolder(data)
		if strings.TrimSpace(string(data)) == "" && got != "" {
			t.Fatalf("lockHolder(%q) = %q, want \"\"", data, got)
		}
	})
}
