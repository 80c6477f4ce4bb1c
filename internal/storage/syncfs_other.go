//go:build !linux

package storage

import (
	"os"
	"syscall"
)

// syncFS falls back to sync(2), which flushes every file system.
func syncFS(*os.File) error {
	syscall.Sync()
	return nil
}
