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

// VolumesName names the volumes given to one import or verify: a set's
// every name would make a line too long to read.
func ExampleVolumesName() {
	fmt.Println(bundle.VolumesName([]string{"/media/usb/week.001.tar"}))
	fmt.Println(bundle.VolumesName([]string{"/media/usb/week.001.tar", "/media/usb/week.002.tar"}))
	fmt.Println(bundle.VolumesName([]string{"/media/usb/week.001.tar", "/media/usb/week.002.tar", "/media/usb/week.003.tar"}))
	fmt.Println(bundle.VolumesName([]string{"/media/a/week.002.tar", "/media/b/week.001.tar", "/media/b/week.003.tar"}))
	// Output:
	// /media/usb/week.001.tar
	// /media/usb/week.001.tar /media/usb/week.002.tar
	// /media/usb/week.001.tar … week.003.tar (3 volumes)
	// /media/a/week.002.tar … /media/b/week.003.tar (3 volumes)
}
