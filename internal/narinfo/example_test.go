package narinfo_test

import (
	"fmt"
	"os"

	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

func Example() {
	f, err := os.Open("testdata/cache.nixos.org/syd87l2rxw8cbsxmxl853h0r6pdwhwjr.narinfo")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer f.Close()
	ni, err := narinfo.Parse(f, storepath.DefaultDir)
	if err != nil {
		fmt.Println(err)
		return
	}
	upstream, err := signing.ParsePublicKey("cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(ni.StorePath.Name, ni.NarSize, len(ni.References))
	fmt.Println("trusted:", ni.Verify(signing.NewKeyring(upstream)) || ni.IsContentAddressed())

	// Re-sign for our own cache; the upstream signature stays valid.
	ours, err := signing.LoadSecretKey("testdata/nix-test-1.sec")
	if err != nil {
		fmt.Println(err)
		return
	}
	ni.Sign(ours)
	fmt.Println(len(ni.Sigs), ni.Verify(signing.NewKeyring(ours.Public())))
	// Output:
	// curl-7.82.0-bin 196040 4
	// trusted: true
	// 2 true
}
