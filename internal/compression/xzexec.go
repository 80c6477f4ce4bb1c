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
	err    error // what finish returned
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
	if x.closed {
		return 0, x.err
	}
	n, err := x.stdin.Write(p)
	if err != nil {
		return n, x.finish(err)
	}
	return n, nil
}

// Close ends the input and waits for xz to write the rest.
func (x *xzCommand) Close() error {
	if x.closed {
		return x.err
	}
	return x.finish(nil)
}

// finish ends the input, waits for xz and returns err, or xz's failure,
// with what xz said (read only once Wait has collected it).
func (x *xzCommand) finish(err error) error {
	x.closed = true
	x.stdin.Close()
	if werr := x.cmd.Wait(); werr != nil {
		err = werr
	}
	if err == nil {
		return nil
	}
	if msg := strings.TrimSpace(x.stderr.String()); msg != "" {
		x.err = fmt.Errorf("%s: %w: %s", x.cmd.Path, err, msg)
	} else {
		x.err = fmt.Errorf("%s: %w", x.cmd.Path, err)
	}
	return x.err
}
