package nixtest

import (
	"os"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/netns"
)

// NetNS is a loopback-only network namespace the test created itself: the
// airgap. Nothing in it can reach the Internet (or anything else outside),
// but listeners made with Listen are reachable from commands run with
// Command.
type NetNS struct {
	*netns.NS
}

// NewNetNS creates a namespace that lives until the test ends. It skips
// the test when namespaces cannot be made (not root, no unshare, nsenter
// or busybox), or fails it when CI is set.
func NewNetNS(t testing.TB) *NetNS {
	t.Helper()
	ns, err := netns.New(t.Context())
	if err != nil {
		skipOrFail(t, "%v", err)
	}
	t.Cleanup(func() { ns.Close() })
	return &NetNS{ns}
}

func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf(format+" (CI is set, so this is a setup failure)", args...)
	}
	t.Skipf("skipping: "+format+" (needs root, util-linux and busybox-static)", args...)
}

// In returns a copy of n whose commands (Command, Run, Output, and so
// World methods) run inside ns: the same store, offline.
func (n *Nix) In(ns *NetNS) *Nix {
	c := *n
	c.ns = ns
	return &c
}
