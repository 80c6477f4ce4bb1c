package synctrace_test

import (
	"fmt"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/synctrace"
)

// A file renamed into place with no fsync of it first: after a power cut
// its name can be there with its bytes lost.
func ExampleCheck() {
	trace := `7 openat(3</c>, ".f.tmp-1", O_WRONLY|O_CREAT|O_EXCL, 0644) = 4</c/.f.tmp-1>
7 write(4</c/.f.tmp-1>, "hello\n", 6) = 6
7 renameat(3</c>, ".f.tmp-1", 3</c>, "f") = 0
7 fsync(3</c>) = 0
`
	events, err := synctrace.Parse(strings.NewReader(trace))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, v := range synctrace.Check(events, synctrace.Rules{Root: "/c"}) {
		fmt.Println(v)
	}
	// Output:
	// sync before rename: /c/.f.tmp-1 renamed to /c/f before its bytes were durable: no fsync of /c/.f.tmp-1, or syncfs, after its last write
	// 	line 2: write(4</c/.f.tmp-1>, "hello\n", 6) = 6
	// 	line 3: renameat(3</c>, ".f.tmp-1", 3</c>, "f") = 0
	// durable at exit: the run ended before the change to the bytes of /c/f was durable
	// 	line 2: write(4</c/.f.tmp-1>, "hello\n", 6) = 6
}
