package storage

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/nix-airgap/nix-airgap/internal/storage/s3test"
)

// A Put killed before its multipart upload completed leaves the upload;
// SweepLeftovers counts it with its parts' bytes, then aborts it. An
// upload begun after the time it is given stays, and so does one under a
// name no cache file has.
func TestS3SweepLeftovers(t *testing.T) {
	srv := s3test.Start(t)
	b, err := Open(t.Context(), srv.Bucket(t))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s := b.(*S3)
	ctx := t.Context()
	// killed begins an upload of name and sends one part of n bytes.
	killed := func(name string, n int) {
		t.Helper()
		id, err := s.core.NewMultipartUpload(ctx, s.cfg.Bucket, name, minio.PutObjectOptions{})
		if err == nil {
			_, err = s.core.PutObjectPart(ctx, s.cfg.Bucket, name, id, 1, bytes.NewReader(make([]byte, n)), int64(n), minio.PutObjectPartOptions{})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	killed("nar/a.nar", 1000)
	killed("x.narinfo", 24)
	killed(".hidden/x", 10)
	// The store's clock may lag a little behind the test's.
	before := time.Now().Add(time.Minute)
	want := Leftovers{Files: 2, Bytes: 1024}
	for _, dry := range []bool{true, false} {
		if got, err := s.SweepLeftovers(ctx, before, dry); err != nil || got != want {
			t.Errorf("sweep (dry run %v): %+v, %v; want %+v", dry, got, err, want)
		}
	}
	if got, err := s.SweepLeftovers(ctx, before, false); err != nil || got != (Leftovers{}) {
		t.Errorf("a second sweep: %+v, %v; want nothing", got, err)
	}
	killed("nar/b.nar", 10)
	if got, err := s.SweepLeftovers(ctx, time.Now().Add(-time.Hour), false); err != nil || got != (Leftovers{}) {
		t.Errorf("a sweep of what began before an hour ago: %+v, %v; want nothing", got, err)
	}
	res, err := s.core.ListMultipartUploads(ctx, s.cfg.Bucket, "", "", "", "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, u := range res.Uploads {
		left = append(left, u.Key)
	}
	if len(left) != 2 || left[0] != ".hidden/x" || left[1] != "nar/b.nar" {
		t.Errorf("uploads left %q, want .hidden/x and nar/b.nar", left)
	}
}

// listOrder puts the entries of a listing, each page's objects then its
// prefixes as minio-go yields them, in name order, holding no more than a
// page of objects.
func TestListOrder(t *testing.T) {
	for _, tt := range []struct {
		name  string
		pages [][]string // objects, then prefixes, as a page has them
	}{
		{"objects only", [][]string{{"a", "b"}, {"c", "d"}, {"e"}}},
		{"prefixes only", [][]string{{"a/", "b/"}, {"c/"}}},
		{"interleaved", [][]string{{"a.narinfo", "nar0", "nix-cache-info", "log/", "nar/"}, {"x.narinfo", "z", "y/"}}},
		{"prefix first on a page", [][]string{{"b", "c", "a/"}, {"d", "e"}}},
		{"pages of objects, a prefix late", [][]string{{"a", "b"}, {"c", "e", "d/"}, {"f", "g/"}}},
		{"full pages", [][]string{{"a", "b", "c", "d", "e"}, {"f", "g", "h", "j", "i/"}, {"k"}}},
	} {
		var in, want []string
		for _, p := range tt.pages {
			in = append(in, p...)
			want = append(want, p...)
		}
		slices.Sort(want)
		entries := func(yield func(minio.ObjectInfo) bool) {
			for _, k := range in {
				if !yield(minio.ObjectInfo{Key: k}) {
					return
				}
			}
		}
		var got []string
		for oi := range listOrder(entries, 5) {
			got = append(got, oi.Key)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: %q, want %q", tt.name, got, want)
		}
	}
}
