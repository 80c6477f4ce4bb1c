package nixcli

import "encoding/json"

// Activity and result types of Nix's internal-json log that count what
// Nix copies from substituters and downloads (libutil/logging.hh, the
// same from Nix 2.3 to 2.34); realise.go has the others.
const (
	actCopyPath     = 100 // one path copied; its progress counts bytes
	actFileTransfer = 101 // one download, narinfos too; its progress counts bytes
	actCopyPaths    = 103 // all copies; its progress counts paths
	resSetExpected  = 106 // [activity type, amount]: what an activity expects of that type
)

// CopyCount is how far Nix is with the paths it copies from substituters
// and with its downloads, as nix build shows "[1/3 copied (2.0/6.0 MiB),
// 2.0 MiB DL]".
type CopyCount struct {
	// Done paths copied of Total; Failed failed.
	Done, Total, Failed int
	// Copied bytes of the paths' NARs of CopyTotal, Nix's expectation.
	Copied, CopyTotal int64
	// Downloaded bytes, of DownloadTotal that Nix expects.
	Downloaded, DownloadTotal int64
}

// copyLog sums Nix's copy and download activities as Nix's progress bar
// does (libmain/progress-bar.cc): the progress of those running and of
// those stopped; the totals at least what the activity realising the
// paths expects (resSetExpected) while it runs.
type copyLog struct {
	paths    map[int64]progress // actCopyPaths running
	stopped  progress           // of actCopyPaths stopped
	bytes    map[int64]*transfer
	done     [2]int64 // bytes of stopped transfers: actCopyPath, actFileTransfer
	expected map[[2]int64]int64
	told     CopyCount
}

// transfer is a running actCopyPath or actFileTransfer.
type transfer struct {
	download       bool // actFileTransfer
	done, expected int64
}

// start keeps an activity of type typ if it counts copies; it reports
// whether it does.
func (c *copyLog) start(id int64, typ int) bool {
	switch typ {
	case actCopyPaths:
		if c.paths == nil {
			c.paths = map[int64]progress{}
		}
		c.paths[id] = progress{}
	case actCopyPath, actFileTransfer:
		if c.bytes == nil {
			c.bytes = map[int64]*transfer{}
		}
		c.bytes[id] = &transfer{download: typ == actFileTransfer}
	default:
		return false
	}
	return true
}

// stop moves activity id's progress to the stopped sums.
func (c *copyLog) stop(id int64) {
	if p, ok := c.paths[id]; ok {
		delete(c.paths, id)
		c.stopped.done += p.done
		c.stopped.failed += p.failed
		c.stopped.expected += p.done + p.failed
	}
	if t, ok := c.bytes[id]; ok {
		delete(c.bytes, id)
		if !t.download {
			// Nix's last progress of a copy is often short of its
			// end (it limits their rate): a copy that stopped is
			// whole, or its failure ends the realisation.
			t.done = max(t.done, t.expected)
		}
		c.done[b2i(t.download)] += t.done
	}
	for k := range c.expected {
		if k[0] == id {
			delete(c.expected, k)
		}
	}
}

// result takes a progress or expectation result; it reports whether it
// was one of the copies'.
func (c *copyLog) result(e *logEvent) bool {
	switch {
	case e.Type == resSetExpected && (e.int64(0) == actCopyPath || e.int64(0) == actFileTransfer):
		if c.expected == nil {
			c.expected = map[[2]int64]int64{}
		}
		c.expected[[2]int64{e.ID, e.int64(0)}] = e.int64(1)
	case e.Type != resProgress:
		return false
	case c.paths != nil && c.hasPaths(e.ID):
		c.paths[e.ID] = progress{done: e.number(0), expected: e.number(1), failed: e.number(3)}
	case c.bytes[e.ID] != nil:
		t := c.bytes[e.ID]
		t.done, t.expected = e.int64(0), e.int64(1)
	default:
		return false
	}
	return true
}

func (c *copyLog) hasPaths(id int64) bool { _, ok := c.paths[id]; return ok }

// count is the sum of the copies so far.
func (c *copyLog) count() CopyCount {
	p := c.stopped
	for _, q := range c.paths {
		p.done += q.done
		p.expected += q.expected
		p.failed += q.failed
	}
	done := c.done
	expected := c.done
	for _, t := range c.bytes {
		done[b2i(t.download)] += t.done
		expected[b2i(t.download)] += t.expected
	}
	var said [2]int64
	for k, v := range c.expected {
		said[b2i(k[1] == actFileTransfer)] += v
	}
	return CopyCount{
		Done: p.done, Total: max(p.expected, p.done+p.failed), Failed: p.failed,
		Copied: done[0], CopyTotal: max(expected[0], said[0]),
		Downloaded: done[1], DownloadTotal: max(expected[1], said[1]),
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// int64 is field i as a byte count or type, 0 if it is none.
func (e *logEvent) int64(i int) int64 {
	if i >= len(e.Fields) {
		return 0
	}
	var n int64
	json.Unmarshal(e.Fields[i], &n)
	return max(n, 0)
}
