//go:build linux && !amd64

package nixtest

import "syscall"

const sysSetns = syscall.SYS_SETNS
