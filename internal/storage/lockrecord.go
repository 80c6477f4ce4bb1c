package storage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
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
	Holder    string    `json:"holder"`
	Command   string    `json:"command,omitempty"`
	PID       int       `json:"pid,omitempty"`
	Host      string    `json:"host"`
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
		Command: opts.Command, PID: pid, Host: host, Since: time.Now(), Exclusive: opts.Exclusive,
	})
	return append(data, '\n')
}

// lockHolder describes the holder data records, such as "gc (pid 42 on
// host, since 05:40:12)", or "" when data says nothing readable or names
// a process of this host that is gone.
func lockHolder(data []byte) string {
	var rec lockRecord
	// The first value only: two shared holders writing at once may leave
	// the tail of the longer record after the shorter one.
	if json.NewDecoder(bytes.NewReader(data)).Decode(&rec) != nil {
		return ""
	}
	host, _ := os.Hostname()
	if rec.PID > 0 && rec.Host == host && errors.Is(syscall.Kill(rec.PID, 0), syscall.ESRCH) {
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
