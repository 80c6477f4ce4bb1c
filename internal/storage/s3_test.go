package storage_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sync/errgroup"

	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storage/s3test"
	"github.com/nix-airgap/nix-airgap/internal/storage/storagetest"
)

func TestMain(m *testing.M) { os.Exit(s3test.Main(m)) }

func TestS3Conformance(t *testing.T) {
	srv := s3test.Start(t)
	storagetest.Run(t, func(t *testing.T) storage.Backend {
		b, err := storage.Open(t.Context(), srv.Bucket(t))
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

func TestParseS3URL(t *testing.T) {
	for _, tt := range []struct {
		url  string
		want storage.S3Config
	}{
		{"s3://cache", storage.S3Config{Bucket: "cache", Secure: true, Region: "us-east-1"}},
		{"s3://cache?endpoint=127.0.0.1:8333&scheme=http&region=eu-1", storage.S3Config{Bucket: "cache", Endpoint: "127.0.0.1:8333", Region: "eu-1", PathStyle: true}},
		{"s3://cache?endpoint=http://minio.site:9000/", storage.S3Config{Bucket: "cache", Endpoint: "minio.site:9000", Region: "us-east-1", PathStyle: true}},
		{"s3://my.cache?profile=site&storage-class=STANDARD_IA", storage.S3Config{Bucket: "my.cache", Secure: true, Region: "us-east-1", Profile: "site", PathStyle: true, StorageClass: "STANDARD_IA"}},
		{"s3://cache?endpoint=s3.site&addressing-style=virtual&multipart-chunk-size=8388608", storage.S3Config{Bucket: "cache", Endpoint: "s3.site", Secure: true, Region: "us-east-1", PartSize: 8 << 20}},
		{"s3://cache?compression=zstd&secret-key=/k&parallel-compression=true", storage.S3Config{Bucket: "cache", Secure: true, Region: "us-east-1"}},
	} {
		got, err := storage.ParseS3URL(tt.url)
		if err != nil {
			t.Errorf("ParseS3URL(%q): %v", tt.url, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParseS3URL(%q) (-want +got):\n%s", tt.url, diff)
		}
	}
	for _, bad := range []string{
		"s3://", "s3:///x", "s3://cache/prefix", "s3://cache?scheme=ftp", "s3://cache?endpont=x",
		"s3://cache?addressing-style=odd", "s3://cache?multipart-chunk-size=1", "s3://cache?endpoint=h/x", "http://cache",
		"s3://AKID:s3cr3t@cache?endpoint=h", "s3://s3cr3t@cache", "s3://b?endpoint=h", "s3://-cache", "s3://ca..che",
	} {
		if _, err := storage.ParseS3URL(bad); err == nil {
			t.Errorf("ParseS3URL(%q): no error", bad)
		} else if strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("ParseS3URL(%q): %v; it repeats the credentials", bad, err)
		}
	}
}

// Objects larger than a part go up in several: they appear whole when the
// upload completes, and an upload that fails midway leaves the old object.
func TestS3Multipart(t *testing.T) {
	url := s3test.Start(t).Bucket(t) + "&multipart-chunk-size=5242880"
	b, err := storage.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := t.Context()
	big := bytes.Repeat([]byte("0123456789abcdef"), 12<<20/16)
	for _, size := range []int64{int64(len(big)), -1} {
		if err := b.Put(ctx, "nar/big.nar", bytes.NewReader(big), size); err != nil {
			t.Fatalf("Put of 12 MiB in 5 MiB parts (size %d): %v", size, err)
		}
		got, _, err := storage.ReadFile(ctx, b, "nar/big.nar", 16<<20)
		if err != nil || !bytes.Equal(got, big) {
			t.Fatalf("read back %d bytes, %v", len(got), err)
		}
	}
	boom := errors.New("cut")
	for _, size := range []int64{int64(len(big)), -1} {
		r := io.MultiReader(bytes.NewReader(big[:8<<20]), iotest.ErrReader(boom))
		if err := b.Put(ctx, "nar/big.nar", r, size); err == nil {
			t.Fatalf("Put failing after 8 MiB (size %d): no error", size)
		}
		got, _, err := storage.ReadFile(ctx, b, "nar/big.nar", 16<<20)
		if err != nil || !bytes.Equal(got, big) {
			t.Fatalf("after a failed multipart Put (size %d): %d bytes, %v; want the old object", size, len(got), err)
		}
	}
	// A local file goes up in parts read where they are: from where it
	// was read to, and not at all when it is shorter than it should be.
	p := filepath.Join(t.TempDir(), "big")
	os.WriteFile(p, big, 0o644)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Seek(1<<20, io.SeekStart)
	if err := b.Put(ctx, "nar/rest.nar", f, int64(len(big)-1<<20)); err != nil {
		t.Fatalf("Put of a file from 1 MiB on: %v", err)
	}
	if got, _, err := storage.ReadFile(ctx, b, "nar/rest.nar", 16<<20); err != nil || !bytes.Equal(got, big[1<<20:]) {
		t.Fatalf("read back %d bytes, %v; want the file from 1 MiB on", len(got), err)
	}
	os.Truncate(p, 8<<20)
	f.Seek(0, io.SeekStart)
	if err := b.Put(ctx, "nar/big.nar", f, int64(len(big))); err == nil {
		t.Fatal("Put of a file shorter than its size: no error")
	}
	if got, _, err := storage.ReadFile(ctx, b, "nar/big.nar", 16<<20); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("after a Put of a short file: %d bytes, %v; want the old object", len(got), err)
	}
}

// An S3 error names the object once, as s3://BUCKET/KEY, and says what
// went wrong, without the HTTP request line (Get "http://...": ) that
// repeats it.
func TestS3ErrorNamesTheObjectOnce(t *testing.T) {
	down := s3test.RefusedAddr(t)
	b, err := storage.Open(t.Context(), "s3://cache?endpoint="+down+"&scheme=http")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	_, err = b.Stat(t.Context(), "nix-cache-info")
	if err == nil {
		t.Fatal("stat with nothing listening: no error")
	}
	if msg := err.Error(); !strings.HasPrefix(msg, "stat s3://cache/nix-cache-info: ") || !strings.Contains(msg, "connection refused") || strings.Contains(msg, "http://") {
		t.Errorf("stat with nothing listening: %q; want it to name s3://cache/nix-cache-info once and say the connection was refused", msg)
	}
	if !errors.Is(err, storage.ErrUnavailable) || storage.IsNotExist(err) {
		t.Errorf("stat with nothing listening: %v; want it to match ErrUnavailable, and not be a missing file", err)
	}
	for _, err := range b.List(t.Context(), "nar") {
		if msg := err.Error(); !strings.HasPrefix(msg, "list s3://cache/nar: ") || strings.Contains(msg, "http://") || !errors.Is(err, storage.ErrUnavailable) {
			t.Errorf("list with nothing listening: %q; want it to name s3://cache/nar once and match ErrUnavailable", msg)
		}
	}
	// A host name that does not resolve is a store not answering too.
	nowhere, err := storage.Open(t.Context(), "s3://cache?endpoint=s3.nowhere.invalid:8333&scheme=http")
	if err != nil {
		t.Fatal(err)
	}
	defer nowhere.Close()
	if _, err := nowhere.Stat(t.Context(), "nix-cache-info"); !errors.Is(err, storage.ErrUnavailable) || !strings.Contains(err.Error(), "s3.nowhere.invalid") {
		t.Errorf("stat at a host that does not resolve: %v; want it to match ErrUnavailable and name the host", err)
	}
}

// A refused connection or a host name that does not resolve fails every
// request at once: trying it again for five seconds would not change it.
func TestS3RefusedFailsFast(t *testing.T) {
	down := s3test.RefusedAddr(t)
	ops := []struct {
		name string
		do   func(storage.Backend) error
	}{
		{"stat", func(b storage.Backend) error { _, err := b.Stat(t.Context(), "nix-cache-info"); return err }},
		{"open", func(b storage.Backend) error { _, err := b.Open(t.Context(), "nix-cache-info"); return err }},
		{"list", func(b storage.Backend) error {
			for _, err := range b.List(t.Context(), "") {
				return err
			}
			return nil
		}},
		{"put", func(b storage.Backend) error { return b.Put(t.Context(), "x.narinfo", strings.NewReader("x"), 1) }},
		{"remove", func(b storage.Backend) error { return b.Remove(t.Context(), "x.narinfo") }},
	}
	for _, endpoint := range []string{down, "s3.nowhere.invalid:8333"} {
		b, err := storage.Open(t.Context(), "s3://cache?endpoint="+endpoint+"&scheme=http")
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		for _, op := range ops {
			start := time.Now()
			err := op.do(b)
			if took := time.Since(start); took > time.Second || !errors.Is(err, storage.ErrUnavailable) {
				t.Errorf("%s at %s: %v after %v; want ErrUnavailable within a second", op.name, endpoint, err, took.Round(time.Millisecond))
			}
		}
	}
}

// A connection reset before the store answers is tried again, as throttling and
// 5xx answers are: the store is there.
func TestS3RetriesReset(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.Bucket(t)
	b, err := storage.Open(t.Context(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Put(t.Context(), "nix-cache-info", strings.NewReader("StoreDir: /nix/store\n"), -1); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// The first two connections are reset; the rest go through.
	go func() {
		for n := 0; ; n++ {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if n < 2 {
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
				continue
			}
			up, err := net.Dial("tcp", srv.Endpoint)
			if err != nil {
				c.Close()
				continue
			}
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
	via, err := storage.Open(t.Context(), strings.Replace(bucket, srv.Endpoint, l.Addr().String(), 1))
	if err != nil {
		t.Fatal(err)
	}
	defer via.Close()
	if _, err := via.Stat(t.Context(), "nix-cache-info"); err != nil {
		t.Errorf("stat through two reset connections: %v; want it tried again until it answers", err)
	}
}

// An upload into a bucket that is not there fails as a read does, with
// ErrNoBucket, though SeaweedFS refuses it as Access Denied.
func TestS3PutNoBucket(t *testing.T) {
	b, err := storage.Open(t.Context(), s3test.Start(t).URL("b-none"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	err = b.Put(t.Context(), "x", strings.NewReader("x"), 1)
	if want := "put s3://b-none/x: no such bucket"; !errors.Is(err, storage.ErrNoBucket) || err.Error() != want {
		t.Errorf("put into a bucket that is not there: %v; want %q", err, want)
	}
}

// A profile named in the URL or by AWS_PROFILE that the shared credentials
// file does not have is refused, naming it, rather than sending every
// request unsigned; keys in the environment win over the profile, as in
// the AWS tools, and a profile that is there is used.
func TestS3MissingProfile(t *testing.T) {
	url := s3test.Start(t).Bucket(t)
	creds := filepath.Join(t.TempDir(), "credentials")
	os.WriteFile(creds, []byte("[site]\naws_access_key_id = AKIDSITE\naws_secret_access_key = s3cr3t-site\n[empty]\nregion = us-east-1\n"), 0o600)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", creds)
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	for _, v := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY", "AWS_SECRET_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"} {
		t.Setenv(v, "")
	}
	for _, tt := range []struct{ url, profile, want string }{
		{url, "nope", `AWS_PROFILE=nope (from ` + creds + `): section "nope" does not exist`},
		{url + "&profile=nope", "", `profile=nope (from ` + creds + `)`},
		{url, "empty", `AWS_PROFILE=empty (from ` + creds + `): no aws_access_key_id`},
	} {
		t.Setenv("AWS_PROFILE", tt.profile)
		_, err := storage.Open(t.Context(), tt.url)
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("open %s with AWS_PROFILE=%q: %v; want an error saying %q", tt.url, tt.profile, err, tt.want)
		}
	}
	// A line the file's parser cannot read is not repeated: it may
	// hold a secret.
	bad := filepath.Join(t.TempDir(), "credentials")
	os.WriteFile(bad, []byte("[site]\naws_access_key_id = AKIDSITE\naws_secret_access_key s3cr3t-site\n"), 0o600)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", bad)
	t.Setenv("AWS_PROFILE", "site")
	_, err := storage.Open(t.Context(), url)
	if want := "AWS_PROFILE=site (from " + bad + "): the file does not parse"; err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("open with a profile in a file that does not parse: %v; want an error saying %q, without the secret", err, want)
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", creds)
	for _, env := range []bool{false, true} {
		if env {
			t.Setenv("AWS_PROFILE", "nope")
			t.Setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
			t.Setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-env")
		}
		b, err := storage.Open(t.Context(), url)
		if err != nil {
			t.Fatalf("open with keys (from the environment: %v): %v", env, err)
		}
		if _, err := b.Stat(t.Context(), "x"); !storage.IsNotExist(err) {
			t.Errorf("stat with keys (from the environment: %v): %v; want not found", env, err)
		}
		b.Close()
	}
}

// Against a store that wants keys: requests signed with them work; keys
// it does not take are refused, saying so and where they came from (the
// environment, or which profile of which file), never the secret, even
// for a HEAD, whose 403 alone would say only "Access Denied."; a request
// sent without keys says so, and why; and a signed request the keys lack
// the permission for is "Access Denied." alone, without a word about
// missing or refused credentials, which would mislead.
func TestS3Credentials(t *testing.T) {
	srv := s3test.StartWithKeys(t)
	creds := filepath.Join(t.TempDir(), "credentials")
	os.WriteFile(creds, []byte("[site]\naws_access_key_id = "+srv.AccessKey+"\naws_secret_access_key = s3cr3t-site\n"), 0o600)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", creds)
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	for _, v := range []string{"AWS_ACCESS_KEY", "AWS_SECRET_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"} {
		t.Setenv(v, "")
	}
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	url := srv.Bucket(t)
	b := strings.SplitN(url, "?", 2)[0]
	const (
		badSig  = "The request signature we calculated does not match the signature you provided."
		fromEnv = "the store refused the credentials of AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (from the environment): "
	)
	ops := map[string]func(storage.Backend) error{
		"read": func(s storage.Backend) error { _, _, err := storage.ReadFile(t.Context(), s, "x", 10); return err },
		"stat": func(s storage.Backend) error { _, err := s.Stat(t.Context(), "x"); return err },
		"put":  func(s storage.Backend) error { return s.Put(t.Context(), "x", strings.NewReader("x"), 1) },
		"create": func(storage.Backend) error {
			b, _, err := storage.Create(t.Context(), url)
			if err == nil {
				b.Close()
			}
			return err
		},
	}
	for _, tt := range []struct {
		op, id, secret, profile string
		want                    string // "" for a missing file
	}{
		{"read", srv.AccessKey, srv.SecretKey, "", ""},
		{"stat", srv.AccessKey, srv.SecretKey, "", ""},
		{"create", srv.AccessKey, srv.SecretKey, "", "<nil>"},
		{"read", srv.AccessKey, "s3cr3t-wrong", "", "open " + b + "/x: " + fromEnv + badSig},
		{"stat", srv.AccessKey, "s3cr3t-wrong", "", "stat " + b + "/x: " + fromEnv + badSig},
		{"create", srv.AccessKey, "s3cr3t-wrong", "", "check bucket " + b + ": " + fromEnv + badSig},
		{"stat", "AKIDNOSUCHKEY", "s3cr3t-wrong", "", "stat " + b + "/x: " + fromEnv + "The access key ID you provided does not exist in our records."},
		{"create", "", "", "site", "check bucket " + b + ": the store refused the credentials of AWS_PROFILE=site (from " + creds + "): " + badSig},
		{"read", "", "", "", "open " + b + "/x: Access Denied. (sent without credentials: none in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or in the default profile of " + creds + ")"},
		{"read", srv.AccessKey, "", "", "open " + b + "/x: Access Denied. (sent without credentials: AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not)"},
		{"put", srv.ReadAccessKey, srv.ReadSecretKey, "", "put " + b + "/x: Access Denied."},
	} {
		t.Setenv("AWS_ACCESS_KEY_ID", tt.id)
		t.Setenv("AWS_SECRET_ACCESS_KEY", tt.secret)
		t.Setenv("AWS_PROFILE", tt.profile)
		s, err := storage.Open(t.Context(), url)
		if err != nil {
			t.Fatal(err)
		}
		err = ops[tt.op](s)
		s.Close()
		switch {
		case tt.want == "":
			if !storage.IsNotExist(err) {
				t.Errorf("%s with the right keys: %v; want not found", tt.op, err)
			}
		case tt.want == "<nil>":
			if err != nil {
				t.Errorf("%s with the right keys: %v", tt.op, err)
			}
		case err == nil || !strings.HasPrefix(err.Error(), tt.want) || strings.Contains(err.Error(), "s3cr3t") ||
			storage.IsNotExist(err) || errors.Is(err, storage.ErrUnavailable):
			t.Errorf("%s with key %q and AWS_PROFILE=%q: %v; want an error beginning %q, without the secret", tt.op, tt.id, tt.profile, err, tt.want)
		case strings.HasSuffix(tt.want, "Access Denied.") && err.Error() != tt.want:
			t.Errorf("%s with a key that may only read: %v; want %q alone", tt.op, err, tt.want)
		}
	}
}

// A listing longer than a page, files and directories interleaved, comes
// in name order, whole.
func TestS3ListPages(t *testing.T) {
	b, err := storage.Open(t.Context(), s3test.Start(t).Bucket(t))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var want []string
	var g errgroup.Group
	g.SetLimit(8)
	for i := range 1100 {
		name := fmt.Sprintf("k%04d", i)
		want = append(want, name)
		if i%97 == 0 {
			want = append(want, name+".d") // a directory, after name
			g.Go(func() error { return b.Put(t.Context(), name+".d/x", strings.NewReader("x"), 1) })
		}
		g.Go(func() error { return b.Put(t.Context(), name, strings.NewReader("x"), 1) })
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for info, err := range b.List(t.Context(), "") {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, info.Name)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("list of %d files and directories (-want +got):\n%s", len(want), diff)
	}
}

// TestS3WaitingFor: a waiter for a bucket's lock is told how long a
// holder that died goes on blocking it; a directory's flock ends with
// its holder.
func TestS3WaitingFor(t *testing.T) {
	b, err := storage.Open(t.Context(), "s3://bucket?endpoint=127.0.0.1:1&scheme=http")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	want := "waiting for gc (pid 42 on h) to release the lock on " + b.String() + " (if it has died, its lock lapses within 5m0s)"
	if got := storage.WaitingFor("gc (pid 42 on h)", b); got != want {
		t.Errorf("WaitingFor = %q; want %q", got, want)
	}
}
