//go:build !linux

package progress

import (
	"io"
	"os"
)

// isTerminal takes a character device for a terminal, where no terminal
// ioctl is at hand.
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// termWidth is 0: the width is unknown, and status lines are not cut.
func termWidth(io.Writer) int { return 0 }
