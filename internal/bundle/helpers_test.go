package bundle_test

import (
	"bytes"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/nar"
)

// fileNAR is the NAR of a store path that is one regular file holding
// content.
func fileNAR(t testing.TB, content []byte) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	nw := nar.NewWriter(&buf)
	if err := nw.WriteHeader(&nar.Header{Path: "/", Type: nar.TypeRegular, Size: int64(len(content))}); err != nil {
		t.Fatal(err)
	}
	if _, err := nw.Write(content); err != nil {
		t.Fatal(err)
	}
	if err := nw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf
}
