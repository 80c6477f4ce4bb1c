package derivation_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/nix-airgap/nix-airgap/internal/derivation"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// FuzzParse checks that Parse never panics, that whatever it accepts is
// canonical (serialises back byte for byte), and that the questions asked
// of a parsed derivation never panic either.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := derivation.Parse(data, storepath.DefaultDir)
		if err != nil {
			if d != nil {
				t.Fatalf("Parse returned a derivation and error %v", err)
			}
			return
		}
		if got := d.MarshalATerm(); !bytes.Equal(got, data) {
			t.Fatalf("accepted input serialises differently:\n got %q\nwant %q", got, data)
		}
		d.FixedOutput()
		d.FetchURLs()
		d.MirrorPath()
		d.PredictFixedOutputPath()
		if _, err := d.DrvPath(); err != nil && d.Name() != "" && storepath.ValidateName(d.Name()+".drv") == nil {
			t.Fatalf("DrvPath: %v", err)
		}
		errNone := errors.New("no inputs in fuzzing")
		none := derivation.LoaderFunc(func(context.Context, storepath.Path) (*derivation.Derivation, error) {
			return nil, errNone
		})
		d.VerifyOutputPaths(context.Background(), derivation.NewHasher(none))
	})
}
