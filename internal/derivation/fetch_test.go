package derivation_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/derivation"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

func TestFetch(t *testing.T) {
	const hex = "68c5ccdad0655d816f445d522a3da5f0d2bc0324d67ae165b993e28ecb595506"
	h, err := storepath.ParseDigest(storepath.SHA256, hex)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		out    derivation.Output
		env    map[string]string
		want   derivation.Fetch
		wantOK bool
	}{
		{"flat", derivation.Output{HashAlgo: "sha256", Hash: hex}, map[string]string{"url": "http://a/x"},
			derivation.Fetch{URLs: []string{"http://a/x"}, Method: storepath.Flat, Hash: h}, true},
		{"recursive without URLs", derivation.Output{HashAlgo: "r:sha256", Hash: hex}, map[string]string{"rev": "abc"},
			derivation.Fetch{Method: storepath.Recursive, Hash: h}, true},
		{"input-addressed", derivation.Output{}, map[string]string{"url": "http://a/x"}, derivation.Fetch{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &derivation.Derivation{Outputs: map[string]derivation.Output{"out": tc.out}, Env: tc.env}
			got, ok := d.Fetch()
			if ok != tc.wantOK {
				t.Fatalf("Fetch() ok = %v, want %v", ok, tc.wantOK)
			}
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b storepath.Hash) bool { return a.Equal(b) })); diff != "" {
				t.Errorf("Fetch() (-want +got):\n%s", diff)
			}
		})
	}
}
