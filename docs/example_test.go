package docs_test

import (
	"fmt"
	"strings"

	"github.com/nix-airgap/nix-airgap/docs"
)

func ExampleCommandSection() {
	text, ok := docs.CommandSection("keygen")
	first, _, _ := strings.Cut(text, "\n")
	fmt.Println(ok, first)
	_, ok = docs.CommandSection("nosuch")
	fmt.Println(ok)
	fmt.Println(docs.CommandSections())
	// Output:
	// true ## keygen
	// false
	// [targets plan pack verify import serve client-config check show diff gc inventory keygen demo]
}
