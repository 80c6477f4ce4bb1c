// Package s3test runs a real S3-compatible server for tests: SeaweedFS's
// `weed server -s3` (master, volume, filer and S3 gateway in one
// process), on free loopback ports, one per test binary. No fake: what
// passes here passes against an object store.
//
// A package that uses it stops the server when its tests end:
//
//	func TestMain(m *testing.M) { os.Exit(s3test.Main(m)) }
//
// and each test takes a fresh bucket:
//
//	url := s3test.Start(t).Bucket(t) // s3://b-RANDOM?endpoint=127.0.0.1:P&scheme=http&region=us-east-1
//
// The weed binary is $NIX_AIRGAP_WEED, else the one `scripts/setup.sh
// --seaweedfs` cached, else weed on PATH. Without one the test skips, or
// fails when CI is set (a missing install step).
package s3test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7/pkg/signer"
)

// Server is a running weed server.
type Server struct {
	// Endpoint is the S3 gateway, 127.0.0.1:PORT.
	Endpoint string
	// AccessKey and SecretKey are the identity a server from
	// StartWithKeys takes for everything; "" for Start's, which takes any
	// request.
	AccessKey, SecretKey string
	// ReadAccessKey and ReadSecretKey are its identity that may only
	// read and list.
	ReadAccessKey, ReadSecretKey string

	cmd  *exec.Cmd
	dir  string
	log  *lockedWriter
	done chan struct{}
}

var (
	// tempDir is the temp dir the test binary started with: a test
	// that points TMPDIR at its own (nixtest's Setenv does) and starts
	// the server first would otherwise have the server's data removed
	// with that test's files, under every later test.
	tempDir = os.TempDir()

	mu      sync.Mutex
	running = map[bool]*Server{} // by whether it wants keys
	failed  = map[bool]error{}
)

// Main runs the tests, then stops the server if one was started.
func Main(m *testing.M) int {
	code := m.Run()
	mu.Lock()
	defer mu.Unlock()
	for keys, s := range running {
		s.stop()
		delete(running, keys)
	}
	return code
}

// weedBinary finds the weed binary, or says why there is none.
func weedBinary() (string, error) {
	if p := os.Getenv("NIX_AIRGAP_WEED"); p != "" {
		return p, nil
	}
	cache := os.Getenv("NIX_AIRGAP_CACHE")
	if cache == "" {
		cache = "/var/cache/nix-airgap"
	}
	if found, _ := filepath.Glob(filepath.Join(cache, "seaweedfs-*", "weed")); len(found) > 0 {
		slices.Sort(found)
		return found[len(found)-1], nil
	}
	if p, err := exec.LookPath("weed"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("no weed: set NIX_AIRGAP_WEED, or run scripts/setup.sh --seaweedfs")
}

// Start returns the test binary's server, starting it on first use. It
// takes any request, signed with any key or unsigned.
func Start(t testing.TB) *Server {
	t.Helper()
	return startOnce(t, false)
}

// StartWithKeys returns the test binary's server that takes only requests
// signed with its AccessKey and SecretKey, starting it on first use.
func StartWithKeys(t testing.TB) *Server {
	t.Helper()
	return startOnce(t, true)
}

func startOnce(t testing.TB, keys bool) *Server {
	t.Helper()
	weed, err := weedBinary()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("S3 test: %v (CI is set, so this is an install failure)", err)
		}
		t.Skipf("skipping S3 test: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if s := running[keys]; s != nil {
		return s
	}
	if failed[keys] != nil {
		t.Fatal(failed[keys])
	}
	for range 3 { // ports may be taken between choosing and binding
		s, err := start(weed, keys)
		if err == nil {
			running[keys] = s
			return s
		}
		failed[keys] = err
	}
	t.Fatal(failed[keys])
	return nil
}

// freePorts finds n loopback ports free right now.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func start(weed string, keys bool) (*Server, error) {
	dir, err := os.MkdirTemp(tempDir, "nix-airgap-weed-")
	if err != nil {
		return nil, err
	}
	p, err := freePorts(8)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	port := func(i int) string { return strconv.Itoa(p[i]) }
	s := &Server{Endpoint: "127.0.0.1:" + port(0), dir: dir, log: &lockedWriter{}, done: make(chan struct{})}
	var config []string
	if keys {
		s.AccessKey, s.SecretKey = "AKID"+strings.ToUpper(randomHex()), "secret-"+randomHex()
		s.ReadAccessKey, s.ReadSecretKey = "AKID"+strings.ToUpper(randomHex()), "secret-"+randomHex()
		conf := filepath.Join(dir, "s3.json")
		data := fmt.Sprintf(`{"identities": [{"name": "test", "credentials": [{"accessKey": %q, "secretKey": %q}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}, `+
			`{"name": "reader", "credentials": [{"accessKey": %q, "secretKey": %q}], "actions": ["Read", "List"]}]}`, s.AccessKey, s.SecretKey, s.ReadAccessKey, s.ReadSecretKey)
		if err := os.WriteFile(conf, []byte(data), 0o600); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		config = append(config, "-s3.config="+conf)
	}
	s.cmd = exec.Command(weed, append([]string{"server", "-dir=" + dir, "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-s3", "-s3.port=" + port(0), "-s3.port.grpc=" + port(1), "-s3.port.iceberg=0", "-s3.port.lance=0",
		"-master.port=" + port(2), "-master.port.grpc=" + port(3), "-master.volumeSizeLimitMB=64", "-volume.max=1000",
		"-volume.port=" + port(4), "-volume.port.grpc=" + port(5),
		"-filer.port=" + port(6), "-filer.port.grpc=" + port(7)}, config...)...)
	s.cmd.Dir = dir
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	// Killed if the test binary dies without stopping it (a test
	// timeout). The parent-death signal follows the thread that started
	// the process, so that thread stays alive, locked, until weed exits.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	started := make(chan error)
	go func() {
		runtime.LockOSThread()
		err := s.cmd.Start()
		started <- err
		if err == nil {
			s.cmd.Wait()
			close(s.done)
		}
	}()
	if err := <-started; err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", weed, err)
	}
	if err := s.wait(60 * time.Second); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// lockedWriter keeps the first MiB of the server's output.
type lockedWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() < 1<<20 {
		l.b.Write(p)
	}
	return len(p), nil
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// wait waits until the S3 gateway makes a bucket, which needs the
// master, a volume and the filer up too.
func (s *Server) wait(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	probe := "probe-" + randomHex()
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return fmt.Errorf("weed server exited: %v\n%s", s.cmd.ProcessState, s.log)
		default:
		}
		if err := s.request(http.MethodPut, probe); err == nil {
			if err := s.request(http.MethodPut, probe+"/ready"); err == nil {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("weed server on %s not ready after %s:\n%s", s.Endpoint, limit, s.log)
}

// request sends a request, signed with the server's keys if it has them
// (weed with no identities takes any).
func (s *Server) request(method, path string) error {
	return s.requestBody(method, path, "x")
}

func (s *Server) requestBody(method, path, body string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+s.Endpoint+"/"+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	if s.AccessKey != "" {
		req.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
		req = signer.SignV4(*req, s.AccessKey, s.SecretKey, "", "us-east-1")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return nil
}

// stop stops the server by its PID and removes its data.
func (s *Server) stop() {
	if s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			s.cmd.Process.Kill()
			<-s.done
		}
	}
	os.RemoveAll(s.dir)
}

func randomHex() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Bucket makes a new, empty bucket and returns its URL as Nix writes it.
func (s *Server) Bucket(t testing.TB) string {
	t.Helper()
	name := "b-" + randomHex()
	if err := s.request(http.MethodPut, name); err != nil {
		t.Fatalf("make bucket %s: %v", name, err)
	}
	return s.URL(name)
}

// SetPolicy gives bucket, of a server from StartWithKeys, the bucket
// policy policy (JSON, as PutBucketPolicy takes it): a test denies what it
// wants to see fail.
func (s *Server) SetPolicy(t testing.TB, bucket, policy string) {
	t.Helper()
	if err := s.requestBody(http.MethodPut, bucket+"?policy=", policy); err != nil {
		t.Fatalf("set the policy of %s: %v", bucket, err)
	}
}

// Deny makes the store, of a server from StartWithKeys, refuse everyone
// action ("s3:GetObject", say) on the objects of the bucket at bucketURL
// (as Bucket returns it) whose keys match keys ("nar/*", "*.narinfo").
func (s *Server) Deny(t testing.TB, bucketURL, action, keys string) {
	t.Helper()
	u, err := url.Parse(bucketURL)
	if err != nil || u.Scheme != "s3" {
		t.Fatalf("deny %s: not an s3:// URL", bucketURL)
	}
	s.SetPolicy(t, u.Host, `{"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Principal": "*", `+
		`"Action": "`+action+`", "Resource": "arn:aws:s3:::`+u.Host+`/`+keys+`"}]}`)
}

// UseKeys gives the rest of the test the server's keys in
// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
func (s *Server) UseKeys(t testing.TB) {
	t.Setenv("AWS_ACCESS_KEY_ID", s.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s.SecretKey)
}

// URL is the s3:// URL of bucket on this server.
func (s *Server) URL(bucket string) string {
	return "s3://" + bucket + "?endpoint=" + s.Endpoint + "&scheme=http&region=us-east-1"
}

// Log is what the server printed so far, for a failing test to show.
func (s *Server) Log() string {
	return s.log.String()
}

// RefusedAddr is a loopback address, 127.0.0.1:PORT, where connections
// are refused until the test ends: a store that does not answer. Its
// port is held by a socket bound but never listening, to which Linux
// answers a connection with a reset, so no other process can take the
// port and answer, as it could one found free and let go.
func RefusedAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("refused address: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	// No SO_REUSEADDR, so that no one else may bind the port either.
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("refused address: bind: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("refused address: %v", err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
}
