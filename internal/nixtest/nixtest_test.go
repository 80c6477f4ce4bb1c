package nixtest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/derivation"
	"github.com/nix-airgap/nix-airgap/internal/nixtest"
)

func TestHermeticStore(t *testing.T) {
	n := nixtest.New(t, nixtest.Options{})
	f := filepath.Join(t.TempDir(), "hello.txt")
	if err := os.WriteFile(f, []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := n.Run(t, "nix-store", "--add", f)
	if !strings.HasPrefix(p, string(n.StoreDir)+"/") {
		t.Fatalf("nix-store --add gave %q, want a path in %s", p, n.StoreDir)
	}
	if got := n.Run(t, "nix", "eval", "--raw", "--expr", "builtins.storeDir"); got != string(n.StoreDir) {
		t.Fatalf("builtins.storeDir = %q, want %q", got, n.StoreDir)
	}
}

// runHello runs a toplevel's bin/hello and returns what it printed.
func runHello(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, stderr.String())
	}
	return string(out)
}

func closure(t *testing.T, n *nixtest.Nix, path string) []string {
	t.Helper()
	paths := strings.Fields(n.Run(t, "nix-store", "-qR", path))
	slices.Sort(paths)
	return paths
}

func TestWorldBuildsOnline(t *testing.T) {
	t.Parallel()
	for _, structured := range []bool{false, true} {
		t.Run(fmt.Sprintf("structured attrs %v", structured), func(t *testing.T) {
			t.Parallel()
			testWorldBuildsOnline(t, structured)
		})
	}
}

func testWorldBuildsOnline(t *testing.T, structured bool) {
	n := nixtest.New(t, nixtest.Options{})
	inet := nixtest.StartInternet(t)
	w := nixtest.NewWorld(t, n, inet, nixtest.WorldOptions{StructuredAttrs: structured})

	want := w.OutPaths(t)
	out := w.Build(t)
	if out != want["toplevel"] {
		t.Errorf("built %s, want the evaluated out path %s", out, want["toplevel"])
	}
	if got, want := runHello(t, exec.Command(filepath.Join(out, "bin/hello"))), w.Greeting("", ""); got != want {
		t.Errorf("bin/hello printed %q, want %q", got, want)
	}

	// Every FOD came from the Internet, once, at the path its hash gives.
	for _, f := range w.FODs() {
		if got := inet.Fetched(f.File); got != 1 {
			t.Errorf("FOD %s: fetched %s %d times, want once", f.Attr, f.File, got)
		}
		p, err := f.Path(n.StoreDir)
		if err != nil {
			t.Fatal(err)
		}
		if p.String() != want[f.Attr] {
			t.Errorf("FOD %s: computed path %s, Nix says %s", f.Attr, p, want[f.Attr])
		}
		if _, err := os.Stat(p.String()); err != nil {
			t.Errorf("FOD %s: %v", f.Attr, err)
		}
	}

	// The runtime closure is exactly the runtime attrs: no source, no
	// compiler.
	var runtime []string
	for _, attr := range w.RuntimeAttrs() {
		runtime = append(runtime, want[attr])
	}
	slices.Sort(runtime)
	if diff := cmp.Diff(runtime, closure(t, n, out)); diff != "" {
		t.Errorf("runtime closure (-want +got):\n%s", diff)
	}
	drvClosure := closure(t, n, w.Instantiate(t))
	// The fetchers of src, patch and libbaseSrc have structured attrs in
	// the structured world, and only there.
	for _, f := range w.FODs() {
		drvPath := n.Run(t, "nix-store", "-qd", want[f.Attr])
		d, err := derivation.ReadFile(drvPath, n.StoreDir)
		if err != nil {
			t.Fatal(err)
		}
		wantStructured := structured && f.Attr != "bootstrapTools" && f.Attr != "busybox"
		if d.IsStructured() != wantStructured {
			t.Errorf("FOD %s: structured attrs %v, want %v", f.Attr, d.IsStructured(), wantStructured)
		}
		if urls := d.FetchURLs(); !slices.Equal(urls, []string{w.URL(f)}) {
			t.Errorf("FOD %s: FetchURLs %v, want %s", f.Attr, urls, w.URL(f))
		}
	}
	for _, attr := range append(w.BuildOnlyAttrs(), "src", "patch", "bootstrapTools") {
		if _, err := os.Stat(want[attr]); err != nil {
			t.Errorf("build-only %s: not built: %v", attr, err)
		}
		drv := n.Run(t, "nix-store", "-qd", want[attr])
		if !slices.Contains(drvClosure, drv) {
			t.Errorf("build-only %s: %s missing from the toplevel's build closure", attr, drv)
		}
	}
	// The bootstrap NAR was restored whole, symlink included.
	if got, err := os.Readlink(filepath.Join(want["bootstrapTools"], "bin/c99")); err != nil || got != "cc" {
		t.Errorf("bootstrap tools bin/c99 = %q, %v; want a symlink to cc", got, err)
	}
	if st, err := os.Stat(want["busybox"]); err != nil || st.Mode()&0o111 == 0 {
		t.Errorf("busybox FOD is not an executable file: %v, %v", st, err)
	}
}

func TestWorldKnobs(t *testing.T) {
	t.Parallel()
	n := nixtest.New(t, nixtest.Options{})
	inet := nixtest.StartInternet(t)
	w := nixtest.NewWorld(t, n, inet, nixtest.WorldOptions{})
	base := w.OutPaths(t)

	tests := []struct {
		name          string
		variant, deep string
		changed       []string
	}{
		{"variant", "x", "", []string{"toplevel"}},
		{"deep", "", "y", w.RuntimeAttrs()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			paths := w.OutPaths(t, w.Args(tt.variant, tt.deep)...)
			var changed []string
			for attr, p := range paths {
				if p != base[attr] {
					changed = append(changed, attr)
				}
			}
			if diff := cmp.Diff(tt.changed, changed, cmpSorted); diff != "" {
				t.Errorf("changed attrs (-want +got):\n%s", diff)
			}
		})
	}

	// A deep change rebuilds from the sources already fetched.
	w.Build(t)
	fetched := len(inet.Requests())
	out := w.Build(t, w.Args("x", "y")...)
	if got, want := runHello(t, exec.Command(filepath.Join(out, "bin/hello"))), w.Greeting("x", "y"); got != want {
		t.Errorf("bin/hello printed %q, want %q", got, want)
	}
	if got := len(inet.Requests()); got != fetched {
		t.Errorf("rebuild fetched %d more files, want none", got-fetched)
	}
}

var cmpSorted = cmp.Transformer("sort", func(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
})

func TestWorldSalt(t *testing.T) {
	t.Parallel()
	n := nixtest.New(t, nixtest.Options{})
	inet := nixtest.StartInternet(t)
	a := nixtest.NewWorld(t, n, inet, nixtest.WorldOptions{})
	b := nixtest.NewWorld(t, n, inet, nixtest.WorldOptions{Salt: "b"})
	again := nixtest.NewWorld(t, n, inet, nixtest.WorldOptions{})
	if diff := cmp.Diff(a.FODs(), again.FODs()); diff != "" {
		t.Errorf("the same world generated twice differs (-first +second):\n%s", diff)
	}
	pa, pb := a.OutPaths(t), b.OutPaths(t)
	for attr, p := range pa {
		if pb[attr] == p {
			t.Errorf("%s: salted world shares %s", attr, p)
		}
	}
	// Both build from the one Internet.
	for _, w := range []*nixtest.World{a, b} {
		w := *w
		w.Attr = "libgreet"
		w.Build(t)
	}
}

func TestNetNSIsOffline(t *testing.T) {
	t.Parallel()
	ns := nixtest.NewNetNS(t)
	inet := nixtest.StartInternet(t)
	url := inet.Add("probe", []byte("online\n"))

	wget := func(cmd *exec.Cmd) (string, error) {
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// Control: from the test's namespace the Internet answers.
	if out, err := wget(exec.Command("/bin/busybox", "wget", "-q", "-O", "-", url)); err != nil || out != "online\n" {
		t.Fatalf("wget %s outside the namespace: %q, %v", url, out, err)
	}
	if out, err := wget(ns.Command(t.Context(), "/bin/busybox", "wget", "-q", "-O", "-", url)); err == nil {
		t.Errorf("wget %s inside the namespace succeeded (%q), want failure", url, out)
	}
	if got := inet.Fetched("probe"); got != 1 {
		t.Errorf("the Internet saw %d fetches of probe, want 1 (the control)", got)
	}

	// A listener made with Listen is reachable inside, and only inside.
	l, err := ns.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("airgap\n"))
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	inside := "http://" + l.Addr().String() + "/"
	if out, err := wget(ns.Command(t.Context(), "/bin/busybox", "wget", "-q", "-O", "-", inside)); err != nil || out != "airgap\n" {
		t.Errorf("wget %s inside the namespace: %q, %v; want airgap", inside, out, err)
	}
	var d net.Dialer
	if c, err := d.DialContext(t.Context(), "tcp", l.Addr().String()); err == nil {
		c.Close()
		t.Errorf("dial %s outside the namespace succeeded, want refused", l.Addr())
	}
}

func TestWorldOffline(t *testing.T) {
	t.Parallel()
	n := nixtest.New(t, nixtest.Options{})
	inet := nixtest.StartInternet(t)
	w := nixtest.NewWorld(t, n, inet, nixtest.WorldOptions{})
	ns := nixtest.NewNetNS(t)
	offline := w.On(n.In(ns))

	out := w.Build(t)
	// Built: the offline side needs nothing.
	if got := runHello(t, ns.Command(t.Context(), filepath.Join(out, "bin/hello"))); got != w.Greeting("", "") {
		t.Errorf("bin/hello in the namespace printed %q", got)
	}
	if got, err := offline.TryBuild(t.Context()); err != nil || got != out {
		t.Errorf("offline rebuild of a built world = %q, %v; want %s", got, err, out)
	}

	// Without the outputs, the namespace cannot fetch the sources.
	n.Run(t, "nix-collect-garbage")
	for _, f := range w.FODs() {
		p, _ := f.Path(n.StoreDir)
		if _, err := os.Stat(p.String()); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("after GC, FOD %s: %v; want it gone", f.Attr, err)
		}
	}
	fetched := len(inet.Requests())
	_, err := offline.TryBuild(t.Context())
	if err == nil {
		t.Fatal("offline build without sources succeeded, want a download failure")
	}
	if !strings.Contains(err.Error(), inet.URL) {
		t.Errorf("offline build failed, but not fetching from %s:\n%v", inet.URL, err)
	}
	if got := len(inet.Requests()); got != fetched {
		t.Errorf("the Internet saw %d requests from the namespace", got-fetched)
	}

	// A server inside the namespace (the airgap's mirror) works offline.
	l, err := ns.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(inet.Dir))}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	out2, err := offline.TryBuild(t.Context(), "--argstr", "internet", "http://"+l.Addr().String())
	if err != nil {
		t.Fatalf("offline build from a mirror inside the namespace: %v", err)
	}
	if out2 != out {
		t.Errorf("mirror build gave %s, want %s", out2, out)
	}

	// With the Internet stopped, the online side fails too.
	n.Run(t, "nix-collect-garbage")
	inet.Stop()
	if _, err := w.TryBuild(context.Background()); err == nil {
		t.Error("build with the Internet stopped succeeded")
	}
}

func TestInternet(t *testing.T) {
	inet := nixtest.StartInternet(t)
	url := inet.Add("dist/a.txt", []byte("hello\n"))
	if want := inet.URL + "/dist/a.txt"; url != want {
		t.Errorf("Add gave %s, want %s", url, want)
	}
	tests := []struct {
		method, path string
		status       int
		body         string
	}{
		{"GET", "/dist/a.txt", 200, "hello\n"},
		{"HEAD", "/dist/a.txt", 200, ""},
		{"GET", "/dist/missing", 404, "404 page not found\n"},
		{"GET", "/dist", 404, "404 page not found\n"},
		{"GET", "/dist/../dist/a.txt", 200, "hello\n"},
		{"POST", "/dist/a.txt", 405, "method not allowed\n"},
	}
	for _, tt := range tests {
		req, err := http.NewRequestWithContext(t.Context(), tt.method, inet.URL+tt.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body bytes.Buffer
		body.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status || body.String() != tt.body {
			t.Errorf("%s %s: %d %q, want %d %q", tt.method, tt.path, resp.StatusCode, body.String(), tt.status, tt.body)
		}
		if ce, ok := resp.Header["Content-Encoding"]; ok {
			t.Errorf("%s %s: Content-Encoding %q; Nix 2.8 would try to decode it", tt.method, tt.path, ce)
		}
	}
	want := []nixtest.Request{
		{"GET", "/dist/a.txt"}, {"HEAD", "/dist/a.txt"}, {"GET", "/dist/missing"},
		{"GET", "/dist"}, {"GET", "/dist/../dist/a.txt"}, {"POST", "/dist/a.txt"},
	}
	if diff := cmp.Diff(want, inet.Requests()); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
	if got := inet.Fetched("dist/a.txt"); got != 1 {
		t.Errorf("Fetched = %d, want 1", got)
	}

	inet.Stop()
	if resp, err := http.Get(url); err == nil {
		resp.Body.Close()
		t.Errorf("GET %s after Stop succeeded, want a refused connection", url)
	}
}
