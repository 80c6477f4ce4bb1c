package progress

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func run(r *Reporter) {
	r.Phase("plan", 0, 0)
	r.Phase("copy", 2, 3_000_000)
	r.Step("", "", 1_000_000)
	r.Step("/s/aaa-x", "store", 0)
	r.Step("", "", 2_000_000)
	r.Step("/s/bbb-y", "http://up", 0)
	r.Event(map[string]any{"event": "done", "paths": 2})
	r.Close()
}

func TestFormats(t *testing.T) {
	tests := []struct {
		format Format
		want   string
	}{
		{Lines, "plan: started\n" +
			"copy: 2 paths, 2.9 MiB\n" +
			"copy 1/2 /s/aaa-x (store)\n" +
			"copy 2/2 /s/bbb-y (http://up)\n"},
		{JSON, `{"bytes":0,"event":"phase","paths":0,"phase":"plan"}` + "\n" +
			`{"bytes":3000000,"event":"phase","paths":2,"phase":"copy"}` + "\n" +
			`{"bytes":3000000,"bytesDone":1000000,"done":1,"event":"path","path":"/s/aaa-x","paths":2,"phase":"copy","source":"store"}` + "\n" +
			`{"bytes":3000000,"bytesDone":3000000,"done":2,"event":"path","path":"/s/bbb-y","paths":2,"phase":"copy","source":"http://up"}` + "\n" +
			`{"event":"done","paths":2}` + "\n"},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		run(New(&b, tt.format))
		if diff := cmp.Diff(tt.want, b.String()); diff != "" {
			t.Errorf("format %d (-want +got):\n%s", tt.format, diff)
		}
	}
}

func TestTerminalStatus(t *testing.T) {
	var b bytes.Buffer
	r := New(&b, Terminal)
	clock := time.Unix(1000, 0)
	r.mu.Lock()
	r.now = func() time.Time { return clock }
	r.mu.Unlock()
	r.Phase("copy", 40, 120_000_000)
	clock = clock.Add(2 * time.Second)
	for range 12 {
		r.Step("/s/p", "store", 0)
	}
	r.Step("", "", 30_000_000)
	r.Close()
	last := b.String()[strings.LastIndex(b.String(), "\r\033[K")+4:]
	want := "copy 12/40 paths, 28.6 MiB/114.4 MiB, 14.3 MiB/s, ETA 6s (2s)\n"
	if last != want {
		t.Errorf("final status line = %q, want %q", last, want)
	}
}

func TestIEC(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 30: "5.0 GiB", 1 << 60: "1.0 EiB"} {
		if got := IEC(n); got != want {
			t.Errorf("IEC(%d) = %q, want %q", n, got, want)
		}
	}
}
