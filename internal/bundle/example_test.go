package bundle_test

import (
	"errors"
	"fmt"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/signing"
)

func ExampleVerifySignatures() {
	sk, pk, _ := signing.Generate("site-1")
	manifest := []byte(`{"format": "nix-airgap-bundle", "version": 1}`)
	sig := bundle.Sign(manifest, sk)

	signer, err := bundle.VerifySignatures(manifest, sig, signing.NewKeyring(pk))
	fmt.Println(signer.Name, err)

	_, err = bundle.VerifySignatures(manifest, nil, signing.NewKeyring(pk))
	fmt.Println(errors.Is(err, bundle.ErrUnsigned), errors.Is(err, bundle.ErrUntrusted))
	// Output:
	// site-1 <nil>
	// true true
}

func ExampleParseManifest() {
	m, err := bundle.ParseManifest([]byte(`{"format": "nix-airgap-bundle", "version": 4}`))
	fmt.Println(m, err)
	// Output:
	// <nil> parse manifest.json: unsupported bundle version: version 4 is newer than the 3 this nix-airgap reads; upgrade nix-airgap
}
