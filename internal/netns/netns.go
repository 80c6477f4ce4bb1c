// Package netns makes loopback-only network namespaces: an airgap on one
// machine. The demo and the tests run their offline phases in one, so that
// any attempt to reach the outside fails instead of quietly succeeding.
package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"time"
)

// Busybox is the program that keeps a namespace alive and brings its
// loopback up (Debian's busybox-static, which the test world's builders
// also use).
const Busybox = "/bin/busybox"

// ErrUnavailable reports that this machine cannot make a namespace: not
// root, not Linux, or unshare, nsenter or busybox missing.
var ErrUnavailable = errors.New("network namespaces unavailable")

// NS is a network namespace with only a loopback interface, up. Nothing
// in it can reach the outside, but listeners made with Listen are
// reachable from commands made with Command.
type NS struct {
	// Path is the namespace's handle, /proc/PID/ns/net.
	Path string

	holder *exec.Cmd
	stdin  io.Closer
}

// New creates a namespace that lives until Close. Errors that mean the
// machine cannot make one wrap ErrUnavailable.
func New(ctx context.Context) (*NS, error) {
	for _, prog := range []string{"unshare", "nsenter", Busybox} {
		if _, err := exec.LookPath(prog); err != nil {
			return nil, fmt.Errorf("new netns: %w: %v", ErrUnavailable, err)
		}
	}
	// The holder is a process in the new namespace that keeps it alive.
	// It waits on a pipe whose other end only this process holds, so
	// the namespace goes away even if this process is killed.
	holder := exec.Command("unshare", "--net", "--", Busybox, "cat")
	stdin, err := holder.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("new netns: %w", err)
	}
	var stderr bytes.Buffer
	holder.Stderr = &stderr
	if err := holder.Start(); err != nil {
		return nil, fmt.Errorf("new netns: %w: start unshare: %v", ErrUnavailable, err)
	}
	ns := &NS{
		Path:   "/proc/" + strconv.Itoa(holder.Process.Pid) + "/ns/net",
		holder: holder,
		stdin:  stdin,
	}
	// unshare execs cat once the namespace exists; until then the
	// holder's namespace is still ours, and bringing lo up would touch
	// the host.
	if err := ns.waitUnshared(ctx); err != nil {
		ns.Close()
		return nil, fmt.Errorf("new netns: %w: %v: %s", ErrUnavailable, err, bytes.TrimSpace(stderr.Bytes()))
	}
	if out, err := ns.Command(ctx, Busybox, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		ns.Close()
		return nil, fmt.Errorf("new netns: %w: bring lo up: %v: %s", ErrUnavailable, err, bytes.TrimSpace(out))
	}
	return ns, nil
}

// waitUnshared waits until the holder's network namespace differs from
// this process's.
func (ns *NS) waitUnshared(ctx context.Context) error {
	self, err := ownNetNS()
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

// ownNetNS names the network namespace this process's goroutines run in:
// that of the calling thread, not /proc/self's. /proc/self shows the main
// thread, which Go parks for good, still inside a namespace, if a
// goroutine that Listen locked to it ends.
func ownNetNS() (string, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return os.Readlink("/proc/thread-self/ns/net")
}

// Close ends the namespace. Listeners made in it keep working until
// closed, but nothing new can enter it.
func (ns *NS) Close() error {
	ns.stdin.Close()
	ns.holder.Process.Kill()
	ns.holder.Wait()
	return nil
}

// Command returns a command that runs prog inside the namespace (through
// nsenter), with the caller's environment unless Env is set.
func (ns *NS) Command(ctx context.Context, prog string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + ns.Path, "--", prog}, args...)...)
}

// Listen announces on the local network address inside the namespace,
// like net.Listen, so that an in-process server can be reached from
// commands in the namespace, and only from there. Use addresses on
// 127.0.0.1; port 0 picks a free port.
func (ns *NS) Listen(network, addr string) (net.Listener, error) {
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

func (ns *NS) listenHere(network, addr string) (net.Listener, error) {
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
