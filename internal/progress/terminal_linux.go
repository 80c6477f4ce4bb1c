package progress

import (
	"os"

	"golang.org/x/sys/unix"
)

// isTerminal asks the terminal driver, as isatty(3) does.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
