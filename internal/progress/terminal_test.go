package progress

import (
	"os"
	"path/filepath"
	"testing"
)

// Only a terminal is one: /dev/null is a character device, but a status
// line there (or pack's refusal of a tar stream to a terminal) is wrong.
func TestIsTerminal(t *testing.T) {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	file, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	for _, f := range []*os.File{null, file} {
		if IsTerminal(f) {
			t.Errorf("IsTerminal(%s) = true, want false", f.Name())
		}
	}
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	defer ptmx.Close()
	if !IsTerminal(ptmx) {
		t.Errorf("IsTerminal(%s) = false, want true", ptmx.Name())
	}
}
