package signing_test

import (
	"fmt"
	"os"

	"github.com/nix-airgap/nix-airgap/internal/signing"
)

func Example() {
	// Keys as nix-store --generate-binary-cache-key writes them.
	sec, _ := os.ReadFile("testdata/nix-test-1.sec")
	sk, err := signing.ParseSecretKey(string(sec))
	if err != nil {
		fmt.Println(err)
		return
	}
	fingerprint := []byte("1;/nix/store/0c5vqkxrgx3fzcwbg4yah1nxb4qzgrjp-hello;sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0;120;")
	sig := sk.Sign(fingerprint)

	trusted := signing.NewKeyring(sk.Public())
	key, ok := trusted.Verify(fingerprint, []signing.Signature{sig})
	fmt.Println(ok, key.Name)
	// Output: true nix-test-1
}
