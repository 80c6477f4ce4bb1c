package storage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"
)

// lockRecord says who holds a lock: a directory's lock file, or a lock
// object, holds one. It is only ever shown to those that wait: the flock
// or the lock objects decide, and a stale or garbled record blocks
// nothing.
type lockRecord struct {
	// Holder is "pid 42 (nix-airgap gc)", all that older versions
	// write and read.
	Holder  string `json:"holder"`
	Command string `json:"command,omitempty"`
	PID     int    `json:"pid,omitempty"`
	Host    string `json:"host"`
	// Space and Start tell whether the holder is gone, for a waiter in
	// the same Space (pidSpace) alone: a host name does not say it, as
	// machines sharing a bucket may have the same (NixOS names them all
	// "nixos") and a container its host's, and a PID may be taken again
	// by another process after the holder's end (Start, procStart).
	Space     string    `json:"pidSpace,omitempty"`
	Start     string    `json:"pidStart,omitempty"`
	Since     time.Time `json:"since,omitzero"`
	Exclusive bool      `json:"exclusive"`
}

// newLockRecord is the record of this process taking a lock as opts say,
// as a line of JSON.
func newLockRecord(opts LockOptions) []byte {
	host, _ := os.Hostname()
	pid := os.Getpid()
	data, _ := json.Marshal(lockRecord{
		Holder:  fmt.Sprintf("pid %d (nix-airgap %s)", pid, opts.Command),
		Command: opts.Command, PID: pid, Host: host, Space: pidSpace(), Start: procStart(pid),
		Since: time.Now(), Exclusive: opts.Exclusive,
	})
	return append(data, '\n')
}

// lockHolder describes the holder data records, such as "gc (pid 42 on
// host, since 05:40:12)", or "" when data says nothing readable or names
// a process that is gone. Nothing else reads a record: what a holder
// holds ends with its flock or goes stale with its lock object's time.
func lockHolder(data []byte) string {
	host, _ := os.Hostname()
	return holderSeenFrom(data, host, pidSpace())
}

// holderSeenFrom is lockHolder in PID space space of host host.
func holderSeenFrom(data []byte, host, space string) string {
	var rec lockRecord
	// The first value only: two shared holders writing at once may leave
	// the tail of the longer record after the shorter one.
	if json.NewDecoder(bytes.NewReader(data)).Decode(&rec) != nil {
		return ""
	}
	var gone bool
	switch {
	case rec.PID <= 0:
	case rec.Space != "":
		gone = rec.Space == space && goneProcess(rec.PID, rec.Start)
	case rec.Host == host: // an older version's record
		gone = goneProcess(rec.PID, "")
	}
	if gone {
		return ""
	}
	if rec.Command == "" { // an older version's record
		if rec.Holder != "" && rec.Host != "" {
			return rec.Holder + " on " + rec.Host
		}
		return rec.Holder
	}
	s := fmt.Sprintf("%s (pid %d", rec.Command, rec.PID)
	if rec.Host != "" {
		s += " on " + rec.Host
	}
	if !rec.Since.IsZero() {
		since := rec.Since.Local()
		layout := time.TimeOnly
		if since.Format(time.DateOnly) != time.Now().Format(time.DateOnly) {
			layout = time.DateTime
		}
		s += ", since " + since.Format(layout)
	}
	return s + ")"
}

// goneProcess reports whether process pid, which started at start (from
// procStart; "" if unknown), has ended.
func goneProcess(pid int, start string) bool {
	if start != "" {
		return procStart(pid) != start
	}
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// pidSpace names where this process's PID means it: this boot of the
// host's kernel and the PID namespace, or "" where there is no telling.
func pidSpace() string {
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	ns, nerr := os.Readlink("/proc/self/ns/pid")
	if err != nil || nerr != nil {
		return ""
	}
	return strings.TrimSpace(string(boot)) + " " + ns
}

// procStart is when process pid started, in clock ticks after boot
// (proc(5) stat, field 22), or "" if there is no such process or no
// telling.
func procStart(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	// The command name, field 2, is in parentheses and may hold any.
	i := bytes.LastIndexByte(data, ')')
	if err != nil || i < 0 {
		return ""
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 20 {
		return ""
	}
	return f[19]
}
