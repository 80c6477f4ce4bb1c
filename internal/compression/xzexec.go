package compression

import (
	"bytes"
	"fmt"
	"io"
	"os/exec"
	"strings"
)

// xzCommand compresses through an xz(1) process: liblzma, which Nix
// itself compresses with, makes output about 8% smaller than the pure-Go
// encoder at twice its speed.
type xzCommand struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr bytes.Buffer
	closed bool
}

func newXZCommand(w io.Writer, program string, level int) (*xzCommand, error) {
	if level == 0 {
		level = 6 // xz's and Nix's default preset
	}
	level = min(max(level, 0), 9)
	// One thread: pack compresses many NARs at once already.
	x := &xzCommand{cmd: exec.Command(program, "--compress", "--stdout", "--quiet", "--threads=1", fmt.Sprintf("-%d", level))}
	x.cmd.Stdout = w
	x.cmd.Stderr = &x.stderr
	var err error
	if x.stdin, err = x.cmd.StdinPipe(); err != nil {
		return nil, fmt.Errorf("xz writer: %w", err)
	}
	if err := x.cmd.Start(); err != nil {
		return nil, fmt.Errorf("xz writer: %w", err)
	}
	return x, nil
}

func (x *xzCommand) Write(p []byte) (int, error) {
	n, err := x.stdin.Write(p)
	if err != nil {
		return n, x.fail(err)
	}
	return n, nil
}

// Close ends the input and waits for xz to write the rest.
func (x *xzCommand) Close() error {
	if x.closed {
		return nil
	}
	x.closed = true
	x.stdin.Close()
	if err := x.cmd.Wait(); err != nil {
		return x.fail(err)
	}
	return nil
}

func (x *xzCommand) fail(err error) error {
	if msg := strings.TrimSpace(x.stderr.String()); msg != "" {
		return fmt.Errorf("%s: %w: %s", x.cmd.Path, err, msg)
	}
	return fmt.Errorf("%s: %w", x.cmd.Path, err)
}
