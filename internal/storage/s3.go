package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// S3Config says where a bucket is and how to reach it, in the terms of
// Nix's s3:// store URL (ParseS3URL).
type S3Config struct {
	Bucket string
	// Endpoint is HOST[:PORT]; "" means AWS S3.
	Endpoint string
	// Secure is https (Nix's scheme=https, the default).
	Secure bool
	// Region; "" means us-east-1, as in Nix.
	Region string
	// Profile names the shared credentials file's profile; "" means
	// AWS_PROFILE, or "default".
	Profile string
	// PathStyle addresses the bucket in the path (https://HOST/BUCKET/KEY)
	// rather than the host name; Nix's addressing-style.
	PathStyle bool
	// PartSize is the size of a multipart upload's parts; 0 means 16 MiB.
	PartSize uint64
	// StorageClass, if set, is given to every upload.
	StorageClass string
	// FailFast gives up on a request as soon as the store fails it: no
	// retries, two seconds to connect and five to answer. For serving,
	// where a client that gets a 5xx at once goes on to its other
	// substituters (or retries itself). Otherwise a request is tried up
	// to ten times, which import and gc need to ride out a store's
	// hiccup, unless its connection was refused (s3retry.go).
	FailFast bool
}

// s3Ignored are the store settings Nix's s3:// URLs may carry that mean
// something only to Nix writing a cache (compression, signing, ...):
// accepted, so that the URL a site gives `nix copy --to` works here too,
// and ignored.
var s3Ignored = map[string]bool{
	"compression": true, "compression-level": true, "parallel-compression": true,
	"narinfo-compression": true, "ls-compression": true, "log-compression": true,
	"write-nar-listing": true, "write-debug-info": true, "index-debug-info": true,
	"secret-key": true, "secret-keys": true, "local-nar-cache": true,
	"want-mass-query": true, "priority": true, "trusted": true,
	"multipart-upload": true, "multipart-threshold": true,
	"path-info-cache-size": true, "system-features": true,
}

// ParseS3URL parses a store URL as Nix's S3 binary cache store takes it:
//
//	s3://BUCKET?endpoint=HOST:PORT&scheme=http&region=R&profile=P
//
// with addressing-style (auto, path or virtual), multipart-chunk-size
// (alias buffer-size) and storage-class too. The endpoint may also carry
// its scheme (http://HOST:PORT). Nix's other store settings are accepted
// and ignored; anything else is refused, so that a misspelt setting is not
// silently lost.
func ParseS3URL(raw string) (S3Config, error) {
	u, err := url.Parse(raw)
	if err == nil && u.User != nil {
		// Never repeat what was there: a secret key, most likely.
		u.User = url.User("REDACTED")
		return S3Config{}, fmt.Errorf("%s: credentials do not go in the URL: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE", u)
	}
	if err != nil || u.Scheme != "s3" || u.Host == "" {
		return S3Config{}, fmt.Errorf("%s: want s3://BUCKET?endpoint=HOST:PORT&scheme=http&region=REGION", Redact(raw))
	}
	if u.Path != "" && u.Path != "/" || u.Fragment != "" {
		return S3Config{}, fmt.Errorf("%s: want s3://BUCKET with nothing after the bucket but ?SETTINGS", raw)
	}
	if err := s3utils.CheckValidBucketName(u.Host); err != nil {
		// Said now, as a mistake in the URL, not by the first request.
		return S3Config{}, fmt.Errorf("%s: bucket %q: %w", raw, u.Host, err)
	}
	cfg := S3Config{Bucket: u.Host, Secure: true, Region: "us-east-1"}
	style := "auto"
	q := u.Query()
	for _, key := range slices.Sorted(mapKeys(q)) {
		v := q.Get(key)
		switch key {
		case "endpoint":
			cfg.Endpoint = v
		case "scheme":
			switch v {
			case "http":
				cfg.Secure = false
			case "https":
				cfg.Secure = true
			default:
				return S3Config{}, fmt.Errorf("%s: scheme %q: want http or https", raw, v)
			}
		case "region":
			cfg.Region = v
		case "profile":
			cfg.Profile = v
		case "addressing-style":
			if v != "auto" && v != "path" && v != "virtual" {
				return S3Config{}, fmt.Errorf("%s: addressing-style %q: want auto, path or virtual", raw, v)
			}
			style = v
		case "multipart-chunk-size", "buffer-size":
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil || n < 5<<20 {
				return S3Config{}, fmt.Errorf("%s: %s %q: want a number of bytes, at least 5 MiB", raw, key, v)
			}
			cfg.PartSize = n
		case "storage-class":
			cfg.StorageClass = v
		default:
			if !s3Ignored[key] {
				return S3Config{}, fmt.Errorf("%s: unknown setting %q", raw, key)
			}
		}
	}
	if e, ok := strings.CutPrefix(cfg.Endpoint, "http://"); ok {
		cfg.Endpoint, cfg.Secure = e, false
	} else if e, ok := strings.CutPrefix(cfg.Endpoint, "https://"); ok {
		cfg.Endpoint, cfg.Secure = e, true
	}
	cfg.Endpoint = strings.TrimSuffix(cfg.Endpoint, "/")
	if strings.ContainsAny(cfg.Endpoint, "/?#@") {
		return S3Config{}, fmt.Errorf("%s: endpoint %q: want HOST[:PORT]", raw, cfg.Endpoint)
	}
	// As in Nix: path style for a custom endpoint or a bucket name with
	// dots (which a TLS wildcard certificate would not cover).
	cfg.PathStyle = style == "path" || style == "auto" && (cfg.Endpoint != "" || strings.Contains(cfg.Bucket, "."))
	return cfg, nil
}

func mapKeys[V any](m map[string]V) iter.Seq[string] {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// S3 is a Backend in a bucket of AWS S3 or any S3-compatible object store
// (Ceph RGW, MinIO, SeaweedFS, Garage). Credentials come from where Nix
// and the AWS tools read them: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
// (and AWS_SESSION_TOKEN), or the shared credentials file
// (AWS_SHARED_CREDENTIALS_FILE, ~/.aws/credentials) under the profile the
// URL or AWS_PROFILE names; with none, requests go unsigned.
//
// A Put is one PUT, or a multipart upload whose object appears whole when
// it completes: atomic either way, and durable when the store says so. An
// open File reads the object as it was opened: seeking makes a ranged GET
// that must match the object's ETag. S3 is also a Swapper (conditional
// writes, If-Match and If-None-Match) and a Locker (lock objects, as
// restic keeps them).
type S3 struct {
	cfg       S3Config
	client    *minio.Client
	core      minio.Core
	transport *http.Transport
	// anonymous: no credentials were found, and requests go unsigned.
	anonymous bool
	// creds says where the credentials came from, or why there are
	// none (credsFrom).
	creds string
	// contentType names each upload's Content-Type (SetContentType).
	contentType atomic.Pointer[func(name string) string]

	// LockRefresh is how often a held lock object is put again; 0 means
	// a minute.
	LockRefresh time.Duration
	// LockStale is how old another's lock object is when its holder is
	// taken to have died and it is removed; 0 means 5 minutes. All that
	// share the bucket must agree. A holder that cannot put its own
	// again for LockStale less LockRefresh gives its lock up
	// (LockLostError).
	LockStale time.Duration
}

// lockTiming is s's LockRefresh and LockStale, defaults filled in.
func (s *S3) lockTiming() lockTiming {
	t := lockTiming{refresh: s.LockRefresh, stale: s.LockStale}
	if t.refresh <= 0 {
		t.refresh = time.Minute
	}
	if t.stale <= 0 {
		t.stale = 5 * time.Minute
	}
	return t
}

// s3PartSize is the default part size: 16 MiB, so that an upload of
// unknown length holds 16 MiB and may reach 160 GiB in 10,000 parts.
const s3PartSize = 16 << 20

// openS3 opens the bucket cfg names. It makes no request: a missing bucket
// shows on first use.
func openS3(cfg S3Config) (*S3, error) {
	endpoint := cfg.Endpoint
	if endpoint == "" {
		endpoint = "s3.amazonaws.com"
	}
	file := &credentials.FileAWSCredentials{Profile: cfg.Profile}
	creds := credentials.NewChainCredentials([]credentials.Provider{&credentials.EnvAWS{}, file})
	// Credentials are looked up now, as the first request would.
	v, _ := creds.GetWithContext(nil)
	anonymous := v.SignerType.IsAnonymous()
	if v.AccessKeyID == "" {
		// No key found: say why, if a profile was named.
		if err := checkProfile(cfg.Profile, file); err != nil {
			return nil, fmt.Errorf("open s3://%s: %w", cfg.Bucket, err)
		}
	}
	tr, tries := s3Transport(cfg)
	lookup := minio.BucketLookupDNS
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = s3PartSize
	}
	c, err := minio.New(endpoint, &minio.Options{
		Creds: creds, Secure: cfg.Secure, Region: cfg.Region, BucketLookup: lookup, Transport: stopTransport{tr}, MaxRetries: tries,
	})
	if err != nil {
		return nil, fmt.Errorf("open s3://%s: %w", cfg.Bucket, err)
	}
	return &S3{cfg: cfg, client: c, core: minio.Core{Client: c}, transport: tr, anonymous: anonymous, creds: credsFrom(cfg.Profile, anonymous)}, nil
}

func (s *S3) String() string { return "s3://" + s.cfg.Bucket }

// Where names an object in messages: s3://BUCKET/KEY.
func (s *S3) Where(name string) string { return "s3://" + s.cfg.Bucket + "/" + name }

// Close drops idle connections.
func (s *S3) Close() error {
	s.transport.CloseIdleConnections()
	return nil
}

// CreateBucket makes the bucket unless it exists, and says whether it
// made it.
func (s *S3) CreateBucket(ctx context.Context) (bool, error) {
	ctx, done := request(ctx)
	defer done()
	ok, err := s.client.BucketExists(ctx, s.cfg.Bucket)
	if err = stopped(ctx, err); err != nil {
		// Nothing was being made yet: the store refused to say whether
		// the bucket is there (wrong credentials, say).
		return false, fmt.Errorf("check bucket %s: %w", s, s.denied(s.headError(unavailable(err))))
	}
	if ok {
		return false, nil
	}
	err = stopped(ctx, s.client.MakeBucket(ctx, s.cfg.Bucket, minio.MakeBucketOptions{Region: s.cfg.Region}))
	if c := minio.ToErrorResponse(err).Code; c == "BucketAlreadyOwnedByYou" || c == "BucketAlreadyExists" {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("create bucket %s: %w", s, s.denied(unavailable(err)))
	}
	return true, nil
}

// RemoveBucket removes the bucket, which the store refuses unless it is
// empty.
func (s *S3) RemoveBucket(ctx context.Context) error {
	ctx, done := request(ctx)
	defer done()
	if err := stopped(ctx, s.client.RemoveBucket(ctx, s.cfg.Bucket)); err != nil {
		return fmt.Errorf("remove bucket %s: %w", s, unavailable(err))
	}
	return nil
}

// withoutURL drops the request line a failed HTTP request's error starts
// with (Get "http://HOST/BUCKET/KEY?QUERY": ...), which repeats what the
// message names already, keeping its cause (dial tcp HOST: connection
// refused).
func withoutURL(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

func (s *S3) pathError(op, name string, err error) error {
	err = unavailable(err)
	switch r := minio.ToErrorResponse(err); {
	case errors.Is(err, ErrUnavailable):
	case r.Code == "NoSuchKey" || r.Code == "NotFound" || r.StatusCode == http.StatusNotFound && r.Code != "NoSuchBucket":
		err = fs.ErrNotExist
	case r.Code == "PreconditionFailed" || r.Code == "ConditionalRequestConflict" || r.StatusCode == http.StatusPreconditionFailed:
		err = ErrChanged
	case r.Code == "NoSuchBucket":
		err = ErrNoBucket
	default:
		err = s.denied(err)
	}
	return &fs.PathError{Op: op, Path: s.Where(name), Err: err}
}

// unavailable is err of a request without its URL (withoutURL), and
// matching ErrUnavailable if the store did not answer it or answered only
// that it cannot now.
func unavailable(err error) error {
	down := unreachable(err)
	err = withoutURL(err)
	if down || StatusUnavailable(minio.ToErrorResponse(err).StatusCode) {
		return Unavailable(err)
	}
	return err
}

// answerCut is err, matching ErrUnavailable if it is an answer the store
// began and broke off: minio-go returns an error answer (a 404, say) whose
// body ends early as io.ErrUnexpectedEOF, and does not try it again. Not
// for uploads, where that error is the caller's reader ending early.
func answerCut(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrUnavailable) {
		return &unavailableError{err}
	}
	return err
}

// unreachable reports whether err is a request that got no answer: the
// HTTP client's *url.Error, which it returns for every request it could
// not send or read an answer to, unless the caller gave up.
func unreachable(err error) bool {
	var ue *url.Error
	return errors.As(err, &ue) && !errors.Is(err, context.Canceled)
}

func infoOfObject(name string, oi minio.ObjectInfo) Info {
	return Info{Name: name, Size: oi.Size, ModTime: oi.LastModified, Version: strings.Trim(oi.ETag, `"`)}
}

// isDirObject tells the entry some stores answer a directory's name with.
func isDirObject(oi minio.ObjectInfo) bool {
	return strings.HasSuffix(oi.Key, "/") || oi.ContentType == "httpd/unix-directory" || oi.ContentType == "application/x-directory"
}

// Open GETs the object, keeping the response body for the first reads.
func (s *S3) Open(ctx context.Context, name string) (File, error) {
	if err := CheckName(name); err != nil {
		return nil, s.pathError("open", name, err)
	}
	// The file's requests share a context, released when it closes.
	ctx, done := request(ctx)
	body, oi, _, err := s.core.GetObject(ctx, s.cfg.Bucket, name, minio.GetObjectOptions{})
	if err != nil {
		done()
		return nil, s.pathError("open", name, answerCut(stopped(ctx, err)))
	}
	if isDirObject(oi) {
		body.Close()
		done()
		return nil, s.pathError("open", name, fs.ErrNotExist)
	}
	return &s3File{ctx: ctx, done: done, s: s, info: infoOfObject(name, oi), body: body}, nil
}

// s3File reads an object: the first GET's body as long as reads follow
// on; after a seek, a GET of the range from there, which must still be the
// version first opened (If-Match).
type s3File struct {
	ctx    context.Context
	done   func() // releases ctx
	s      *S3
	info   Info
	body   io.ReadCloser
	bodyAt int64 // the offset of body's next byte
	pos    int64
}

func (f *s3File) Info() Info { return f.info }

func (f *s3File) Read(p []byte) (int, error) {
	if f.pos >= f.info.Size {
		return 0, io.EOF
	}
	if f.body == nil || f.bodyAt != f.pos {
		if f.body != nil {
			f.body.Close()
			f.body = nil
		}
		opts := minio.GetObjectOptions{}
		if err := opts.SetRange(f.pos, 0); err != nil {
			return 0, err
		}
		if f.info.Version != "" {
			opts.SetMatchETag(f.info.Version)
		}
		body, _, _, err := f.s.core.GetObject(f.ctx, f.s.cfg.Bucket, f.info.Name, opts)
		if err != nil {
			return 0, f.s.pathError("read", f.info.Name, answerCut(stopped(f.ctx, err)))
		}
		f.body, f.bodyAt = body, f.pos
	}
	n, err := f.body.Read(p)
	f.pos += int64(n)
	f.bodyAt += int64(n)
	if err == io.EOF && f.pos < f.info.Size {
		err = io.ErrUnexpectedEOF
	}
	if err != nil && err != io.EOF {
		if f.ctx.Err() == nil {
			// The body the store began ended early or broke: the
			// transfer failed, not the file.
			err = &unavailableError{err}
		}
		err = f.s.pathError("read", f.info.Name, err)
	}
	return n, err
}

func (f *s3File) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += f.pos
	case io.SeekEnd:
		offset += f.info.Size
	default:
		return f.pos, fmt.Errorf("seek %s: bad whence %d", f.s.Where(f.info.Name), whence)
	}
	if offset < 0 {
		return f.pos, fmt.Errorf("seek %s: negative position %d", f.s.Where(f.info.Name), offset)
	}
	f.pos = offset
	return offset, nil
}

func (f *s3File) Close() error {
	if f.body != nil {
		f.body.Close()
		f.body = nil
	}
	f.done()
	return nil
}

// Stat HEADs the object.
func (s *S3) Stat(ctx context.Context, name string) (Info, error) {
	if err := CheckName(name); err != nil {
		return Info{}, s.pathError("stat", name, err)
	}
	ctx, done := request(ctx)
	defer done()
	oi, err := s.client.StatObject(ctx, s.cfg.Bucket, name, minio.StatObjectOptions{})
	if err = stopped(ctx, err); err != nil {
		return Info{}, s.pathError("stat", name, s.headError(err))
	}
	if isDirObject(oi) {
		return Info{}, s.pathError("stat", name, fs.ErrNotExist)
	}
	return infoOfObject(name, oi), nil
}

func (s *S3) putOptions(name string) minio.PutObjectOptions {
	ct := "application/octet-stream"
	if f := s.contentType.Load(); f != nil {
		ct = (*f)(name)
	}
	return minio.PutObjectOptions{ContentType: ct, PartSize: s.cfg.PartSize, StorageClass: s.cfg.StorageClass}
}

// SetContentType makes f name the Content-Type of each file put from now
// on, as Nix's own uploads do: a cache, which knows its files' names,
// sets it (cache.ContentType). Until then every file is
// application/octet-stream.
func (s *S3) SetContentType(f func(name string) string) { s.contentType.Store(&f) }

// Put uploads r: in one PUT, or in parts of PartSize that appear as one
// object when the upload completes. An r that is an io.ReaderAt (a local
// file) goes up several parts at a time, read where they are.
func (s *S3) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	return s.put(ctx, "put", name, r, size, s.putOptions(name))
}

func (s *S3) put(ctx context.Context, op, name string, r io.Reader, size int64, opts minio.PutObjectOptions) error {
	if err := CheckName(name); err != nil {
		return s.pathError(op, name, err)
	}
	if err := ctx.Err(); err != nil {
		return s.pathError(op, name, err)
	}
	if ra, off, ok := readerAt(r); ok && size >= 0 && !opts.DisableMultipart {
		// A file read at offsets goes up in parts several at a time,
		// each read from it as it is sent: no part is buffered. A file
		// shorter than size fails the upload of its last part.
		r = io.NewSectionReader(ra, off, size)
	} else {
		r = ContextReader(ctx, r)
		if size >= 0 {
			// Exactly size bytes, or the upload fails.
			r = &exactReader{r: r, left: size}
		}
	}
	ctx, done := request(ctx)
	defer done()
	if _, err := s.client.PutObject(ctx, s.cfg.Bucket, name, r, size, opts); err != nil {
		return s.pathError(op, name, s.noBucket(ctx, stopped(ctx, err)))
	}
	return nil
}

// noBucket is ErrNoBucket for an upload refused (403) into a bucket the
// store says is not there, err otherwise: SeaweedFS refuses an upload
// into a missing bucket as Access Denied, where AWS says NoSuchBucket.
func (s *S3) noBucket(ctx context.Context, err error) error {
	if minio.ToErrorResponse(err).StatusCode != http.StatusForbidden {
		return err
	}
	if there, herr := s.client.BucketExists(ctx, s.cfg.Bucket); herr == nil && !there {
		return ErrNoBucket
	}
	return err
}

// readerAt returns r as an io.ReaderAt and where r would read next, if
// it is one that can tell (a file, a bytes.Reader).
func readerAt(r io.Reader) (io.ReaderAt, int64, bool) {
	ra, ok := r.(io.ReaderAt)
	seeker, sok := r.(io.Seeker)
	if !ok || !sok {
		return nil, 0, false
	}
	off, err := seeker.Seek(0, io.SeekCurrent)
	return ra, off, err == nil
}

// exactReader fails with io.ErrUnexpectedEOF when r ends before left
// bytes, which a store might otherwise take as the object's end.
type exactReader struct {
	r    io.Reader
	left int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if err == io.EOF && e.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// Swap uploads r with If-Match: version, or If-None-Match: * for "".
func (s *S3) Swap(ctx context.Context, name, version string, r io.Reader, size int64) error {
	opts := s.putOptions(name)
	// One PUT: a multipart upload's condition would be checked only when
	// it completes.
	opts.DisableMultipart = true
	if version == "" {
		opts.SetMatchETagExcept("*")
	} else {
		opts.SetMatchETag(version)
	}
	return s.put(ctx, "swap", name, r, size, opts)
}

// List lists dir with "/" as the delimiter, s3ListPage names a request,
// yielding its objects and common prefixes in name order (listOrder). Keys
// that are no valid name (a part starting with ".", say) are left out.
func (s *S3) List(ctx context.Context, dir string) iter.Seq2[Info, error] {
	return func(yield func(Info, error) bool) {
		if err := checkDir(dir); err != nil {
			yield(Info{}, s.pathError("list", dir, err))
			return
		}
		prefix := ""
		if dir != "" {
			prefix = dir + "/"
		}
		ctx, done := request(ctx)
		defer done()
		owner := false
		opts := minio.ListObjectsOptions{Prefix: prefix, MaxKeys: s3ListPage, FetchOwner: &owner}
		for oi := range listOrder(s.client.ListObjectsIter(ctx, s.cfg.Bucket, opts), s3ListPage) {
			if oi.Err != nil {
				yield(Info{}, s.pathError("list", dir, answerCut(stopped(ctx, oi.Err))))
				return
			}
			name, isDir := strings.CutSuffix(oi.Key, "/")
			switch {
			case oi.Key == prefix || CheckName(name) != nil:
				continue
			case isDir && dir != "" && path.Dir(name) != dir:
				continue
			}
			info := Info{Name: name, Dir: true}
			if !isDir {
				info = infoOfObject(name, oi)
			}
			if !yield(info, nil) {
				return
			}
		}
		// minio-go ends a listing without a word when its context ends.
		if err := ctx.Err(); err != nil {
			yield(Info{}, s.pathError("list", dir, stopped(ctx, err)))
		}
	}
}

// s3ListPage is the most names a listing request asks for.
const s3ListPage = 1000

// listOrder yields the entries of a delimited listing in name order.
// minio-go yields each page's objects in order, then its common prefixes
// (names ending in "/") in order, and each page's names come before the
// next page's. So an object is held until it is known to come before all
// that follows: a prefix after it, the next page (an object after a
// prefix), or more than a page of names after it, which its page of at
// most page names cannot hold.
func listOrder(entries iter.Seq[minio.ObjectInfo], page int) iter.Seq[minio.ObjectInfo] {
	return func(yield func(minio.ObjectInfo) bool) {
		var held []minio.ObjectInfo
		afterPrefix := false
		release := func(n int) bool {
			for _, oi := range held[:n] {
				if !yield(oi) {
					return false
				}
			}
			held = held[n:]
			return true
		}
		for oi := range entries {
			switch {
			case oi.Err != nil:
				yield(oi)
				return
			case strings.HasSuffix(oi.Key, "/"):
				n := 0
				for n < len(held) && held[n].Key < oi.Key {
					n++
				}
				if !release(n) || !yield(oi) {
					return
				}
				afterPrefix = true
			default:
				if afterPrefix && !release(len(held)) {
					return
				}
				afterPrefix = false
				held = append(held, oi)
				if len(held) > page && !release(1) {
					return
				}
			}
		}
		release(len(held))
	}
}

// Remove deletes the object; S3 answers the same whether it was there.
func (s *S3) Remove(ctx context.Context, name string) error {
	if err := CheckName(name); err != nil {
		return s.pathError("remove", name, err)
	}
	ctx, done := request(ctx)
	defer done()
	if err := answerCut(stopped(ctx, s.client.RemoveObject(ctx, s.cfg.Bucket, name, minio.RemoveObjectOptions{}))); err != nil {
		if storageErr := s.pathError("remove", name, err); errors.Is(storageErr, fs.ErrNotExist) {
			return nil
		}
		return s.pathError("remove", name, err)
	}
	return nil
}

// SweepLeftovers aborts the multipart uploads that Puts killed before
// they completed left (minio-go aborts one that fails in the process),
// those the store says began before before; the bytes are their parts'.
// An upload under a name no cache file could have is not the cache's own,
// and stays.
func (s *S3) SweepLeftovers(ctx context.Context, before time.Time, dryRun bool) (Leftovers, error) {
	ctx, done := request(ctx)
	defer done()
	var left Leftovers
	key, id := "", ""
	for {
		res, err := s.core.ListMultipartUploads(ctx, s.cfg.Bucket, "", key, id, "", 1000)
		if err != nil {
			return left, s.pathError("sweep", "", stopped(ctx, err))
		}
		for _, u := range res.Uploads {
			if CheckName(u.Key) != nil || !u.Initiated.Before(before) {
				continue
			}
			size, err := s.uploaded(ctx, u.Key, u.UploadID)
			if err == nil && !dryRun {
				err = s.core.AbortMultipartUpload(ctx, s.cfg.Bucket, u.Key, u.UploadID)
			}
			if err != nil {
				return left, s.pathError("sweep", u.Key, stopped(ctx, err))
			}
			left.Files++
			left.Bytes += size
		}
		if !res.IsTruncated || res.NextKeyMarker == "" && res.NextUploadIDMarker == "" {
			return left, nil
		}
		key, id = res.NextKeyMarker, res.NextUploadIDMarker
	}
}

// uploaded is the size of the parts of an incomplete upload.
func (s *S3) uploaded(ctx context.Context, name, id string) (int64, error) {
	var n int64
	marker := 0
	for {
		res, err := s.core.ListObjectParts(ctx, s.cfg.Bucket, name, id, marker, 1000)
		if err != nil {
			return n, err
		}
		for _, p := range res.ObjectParts {
			n += p.Size
		}
		if !res.IsTruncated || res.NextPartNumberMarker <= marker {
			return n, nil
		}
		marker = res.NextPartNumberMarker
	}
}

// Lock takes a lock object (objectLock).
func (s *S3) Lock(ctx context.Context, opts LockOptions) (context.Context, func() error, error) {
	return objectLock(ctx, s, opts, s.lockTiming())
}
