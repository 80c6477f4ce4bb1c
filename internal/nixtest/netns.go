package nixtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// NetNS is a network namespace the test created itself, with only a
// loopback interface: the airgap. Nothing in it can reach the Internet
// (or anything else outside), but listeners made with Listen are
// reachable from commands run with Command.
type NetNS struct {
	// Path is the namespace's handle, /proc/PID/ns/net.
	Path string

	holder *exec.Cmd
	stdin  io.Closer
}

// NewNetNS creates a loopback-only network namespace that lives until
// the test ends. It skips the test when namespaces cannot be made (not
// root, no unshare or nsenter), or fails it when CI is set.
func NewNetNS(t testing.TB) *NetNS {
	t.Helper()
	for _, prog := range []string{"unshare", "nsenter", busybox} {
		if _, err := exec.LookPath(prog); err != nil {
			skipOrFail(t, "network namespace test needs %s: %v", prog, err)
		}
	}
	// The holder is a process in the new namespace that keeps it alive.
	// It waits on a pipe whose other end only this process holds, so
	// the namespace goes away even if the test binary is killed.
	holder := exec.Command("unshare", "--net", "--", busybox, "cat")
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	var stderr bytes.Buffer
	holder.Stderr = &stderr
	if err := holder.Start(); err != nil {
		skipOrFail(t, "new netns: start unshare: %v", err)
	}
	ns := &NetNS{
		Path:   "/proc/" + strconv.Itoa(holder.Process.Pid) + "/ns/net",
		holder: holder,
		stdin:  stdin,
	}
	t.Cleanup(ns.close)
	// unshare execs cat once the namespace exists; until then the
	// holder's namespace is still ours, and bringing lo up would touch
	// the host.
	if err := ns.waitUnshared(t.Context()); err != nil {
		skipOrFail(t, "new netns: %v: %s", err, stderr.String())
	}
	cmd := ns.Command(t.Context(), busybox, "ip", "link", "set", "lo", "up")
	if out, err := cmd.CombinedOutput(); err != nil {
		skipOrFail(t, "new netns: bring lo up: %v: %s", err, out)
	}
	return ns
}

// busybox is the one program that builders and namespace helpers rely on
// (Debian's busybox-static).
const busybox = "/bin/busybox"

func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf(format+" (CI is set, so this is a setup failure)", args...)
	}
	t.Skipf("skipping: "+format+" (needs root, util-linux and busybox-static)", args...)
}

// waitUnshared waits until the holder's network namespace differs from
// this process's.
func (ns *NetNS) waitUnshared(ctx context.Context) error {
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return fmt.Errorf("read own netns: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		theirs, err := os.Readlink(ns.Path)
		if err != nil {
			return fmt.Errorf("read netns of unshare: %w", err)
		}
		if theirs != self {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("wait for unshare: %w", ctx.Err())
		}
		time.Sleep(time.Millisecond)
	}
}

func (ns *NetNS) close() {
	ns.stdin.Close()
	ns.holder.Process.Kill()
	ns.holder.Wait()
}

// Command returns a command that runs prog inside the namespace (through
// nsenter), with the caller's environment; set Env as needed, or use
// Nix.In for nix programs.
func (ns *NetNS) Command(ctx context.Context, prog string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + ns.Path, "--", prog}, args...)...)
}

// Listen announces on the local network address inside the namespace,
// like net.Listen, so that an in-process server (the airgap's cache, say)
// can be reached from commands in the namespace, and only from there.
// Use addresses on 127.0.0.1; port 0 picks a free port.
func (ns *NetNS) Listen(network, addr string) (net.Listener, error) {
	type result struct {
		l   net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The thread enters the namespace and is never unlocked, so Go
		// discards it when this goroutine ends instead of reusing a
		// thread in the wrong namespace. The socket keeps its namespace.
		runtime.LockOSThread()
		l, err := ns.listenHere(network, addr)
		ch <- result{l, err}
	}()
	r := <-ch
	return r.l, r.err
}

func (ns *NetNS) listenHere(network, addr string) (net.Listener, error) {
	f, err := os.Open(ns.Path)
	if err != nil {
		return nil, fmt.Errorf("listen in netns %s: %w", ns.Path, err)
	}
	defer f.Close()
	if err := setns(f.Fd()); err != nil {
		return nil, fmt.Errorf("listen in netns %s: setns: %w", ns.Path, err)
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("listen in netns %s: %w", ns.Path, err)
	}
	return l, nil
}

// In returns a copy of n whose commands (Command, Run, Output, and so
// World methods) run inside ns: the same store, offline.
func (n *Nix) In(ns *NetNS) *Nix {
	c := *n
	c.ns = ns
	return &c
}
