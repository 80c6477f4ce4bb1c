package bundle_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/check"
	"github.com/nix-airgap/nix-airgap/internal/gc"
	"github.com/nix-airgap/nix-airgap/internal/narinfo"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storage/s3test"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

func TestMain(m *testing.M) { os.Exit(s3test.Main(m)) }

// TestImportS3 imports into a bucket of a real S3 server: the bucket then
// verifies as a cache, a second import changes nothing, and a damaged NAR
// object is found, named by its file and store path.
func TestImportS3(t *testing.T) {
	url := s3test.Start(t).Bucket(t)
	tarFile := filepath.Join(t.TempDir(), "b.tar")
	os.WriteFile(tarFile, tinyTar(t, 5, "zstd"), 0o644)
	keys := signing.NewKeyring(fuzzSeedKey.Public())
	rep, err := bundle.Import(t.Context(), tarFile, url, bundle.ImportOptions{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Added != 5 || !rep.Recorded {
		t.Errorf("first import: %+v, want 5 paths added and a record", rep)
	}
	vrep, err := bundle.Verify(t.Context(), url, bundle.VerifyOptions{Keys: keys})
	if err != nil || vrep.Paths != 5 {
		t.Fatalf("verify %s: %d paths, %v", url, vrep.Paths, err)
	}
	rep, err = bundle.Import(t.Context(), tarFile, url, bundle.ImportOptions{Keys: keys})
	if err != nil || rep.Added != 0 || rep.Skipped != 5 || rep.Recorded {
		t.Fatalf("second import: %+v, %v; want nothing added", rep, err)
	}
	// check takes the bucket as a source: its narinfos, and its records'
	// flat files as a hashed mirror.
	src, err := check.OpenSource(t.Context(), url, storepath.DefaultDir, nil)
	if err != nil {
		t.Fatalf("check source %s: %v", url, err)
	}
	if _, err := src.NarInfos.NarInfo(t.Context(), fmt.Sprintf("%032d", 1)); err != nil {
		t.Errorf("check source %s: narinfo of a path imported: %v", url, err)
	}
	if src.Mirror == nil {
		t.Errorf("check source %s: no hashed mirror from the bundle's record", url)
	}

	// Damage one NAR object.
	b, err := storage.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c, err := cache.OpenBackend(t.Context(), b)
	if err != nil {
		t.Fatal(err)
	}
	var ni = firstNarInfo(t, c)
	data, _, err := storage.ReadFile(t.Context(), b, ni.URL, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 1
	if err := b.Put(t.Context(), ni.URL, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	vrep, err = bundle.Verify(t.Context(), url, bundle.VerifyOptions{Keys: keys})
	if err == nil || len(vrep.Problems) != 1 || vrep.Problems[0].File != ni.URL || !strings.Contains(vrep.Problems[0].Problem, ni.StorePath.String()) {
		t.Errorf("verify of a damaged bucket: %v, problems %+v; want one naming %s and %s", err, vrep.Problems, ni.URL, ni.StorePath)
	}
	// The command it advises names the bucket by its whole URL, quoted
	// for a shell: s3://BUCKET alone would be a bucket of AWS S3.
	if want := "nix-airgap import BUNDLE --cache '" + url + "' --public-key KEY --repair"; vrep.Repair == nil || vrep.Repair.Command != want {
		t.Errorf("verify of a damaged bucket advises %+v; want %q", vrep.Repair, want)
	}
	// import --repair mends it: the NAR object is replaced by the bundle's.
	rep, err = bundle.Import(t.Context(), tarFile, url, bundle.ImportOptions{Keys: keys, Repair: true})
	if err != nil || len(rep.Repaired) != 1 || rep.Repaired[0] != ni.StorePath.String() {
		t.Fatalf("import --repair: %+v, %v; want %s repaired", rep, err, ni.StorePath)
	}
	if _, err := bundle.Verify(t.Context(), url, bundle.VerifyOptions{Keys: keys}); err != nil {
		t.Errorf("verify after import --repair: %v", err)
	}
}

// TestImportS3Progress: an import into a bucket counts the bytes it
// uploads, as each NAR file is in, of the total it announces: the paths
// count only once every NAR file is in, so without them a long upload
// showed no progress at all. A second import uploads nothing.
func TestImportS3Progress(t *testing.T) {
	url := s3test.Start(t).Bucket(t)
	tarFile := filepath.Join(t.TempDir(), "b.tar")
	os.WriteFile(tarFile, tinyTar(t, 5, "zstd"), 0o644)
	keys := signing.NewKeyring(fuzzSeedKey.Public())
	var nars int64
	for i, want := range []bool{true, false} {
		var rec recorder
		if _, err := bundle.Import(t.Context(), tarFile, url, bundle.ImportOptions{Keys: keys, Progress: &rec}); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			b, err := storage.Open(t.Context(), url)
			if err != nil {
				t.Fatal(err)
			}
			for info, err := range b.List(t.Context(), cache.NarDir) {
				if err != nil {
					t.Fatal(err)
				}
				nars += info.Size
			}
			b.Close()
		}
		if last := rec.phases[len(rec.phases)-1]; last != bundle.PhaseImport || rec.bytes != rec.total || (rec.bytes >= nars && rec.bytes > 0) != want || rec.paths != 5 {
			t.Errorf("import %d: progress heard phases %v, %d bytes of %d (NAR files %d B), %d paths; want import last, all bytes counted, the NAR files' uploaded %v, 5 paths",
				i+1, rec.phases, rec.bytes, rec.total, nars, rec.paths, want)
		}
	}
}

// A bucket that is not there, or a store that does not answer, is an
// error of verify, not a problem of the cache: nothing in it was found
// damaged.
func TestVerifyS3Unreachable(t *testing.T) {
	srv := s3test.Start(t)
	down := "s3://cache?endpoint=" + s3test.RefusedAddr(t) + "&scheme=http"
	keys := signing.NewKeyring(fuzzSeedKey.Public())
	for _, url := range []string{srv.URL("b-none"), down} {
		rep, err := bundle.Verify(t.Context(), url, bundle.VerifyOptions{Keys: keys})
		if err == nil || errors.Is(err, bundle.ErrCorrupt) || rep != nil && len(rep.Problems) > 0 {
			t.Errorf("verify %s: %v, report %+v; want an error that is no corruption, and no problems", url, err, rep)
		}
		if url == down {
			continue
		}
		if !errors.Is(err, storage.ErrNoBucket) || !strings.Contains(err.Error(), "s3://b-none/nix-cache-info: no such bucket") {
			t.Errorf("verify %s: %v; want it to say there is no such bucket", url, err)
		}
	}
}

// A first import refused leaves no bucket behind, as it leaves no
// directory: the bucket it made is removed.
func TestImportS3RefusedLeavesNoBucket(t *testing.T) {
	url := s3test.Start(t).URL("b-made-" + strings.ToLower(fmt.Sprint(time.Now().UnixNano())))
	tarFile := filepath.Join(t.TempDir(), "b.tar")
	os.WriteFile(tarFile, tinyTar(t, 2, "zstd"), 0o644)
	_, pub, err := signing.Generate("stranger")
	if err != nil {
		t.Fatal(err)
	}
	stranger := signing.NewKeyring(pub)
	if _, err := bundle.Import(t.Context(), tarFile, url, bundle.ImportOptions{Keys: stranger}); !errors.Is(err, bundle.ErrUntrusted) {
		t.Fatalf("import signed by an untrusted key: %v; want it refused as untrusted", err)
	}
	b, err := storage.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, err := range b.List(t.Context(), "") {
		if !errors.Is(err, storage.ErrNoBucket) {
			t.Errorf("list %s after a refused first import: %v; want no such bucket", url, err)
		}
		return
	}
	t.Errorf("list %s after a refused first import: the bucket is there", url)
}

// TestGCS3 collects a bucket: of two bundles imported, the last carries
// three of the first one's five paths; gc --keep-bundles 1 removes the
// other two, their narinfo objects and NAR objects, through the bucket's
// lock object, and the bucket verifies.
func TestGCS3(t *testing.T) {
	url := s3test.Start(t).Bucket(t)
	keys := signing.NewKeyring(fuzzSeedKey.Public())
	for i, n := range []int{5, 3} {
		f := filepath.Join(t.TempDir(), "b.tar")
		os.WriteFile(f, tinyTar(t, n, []string{"zstd", "none"}[i]), 0o644)
		if _, err := bundle.Import(t.Context(), f, url, bundle.ImportOptions{Keys: keys}); err != nil {
			t.Fatal(err)
		}
		// A bucket's modification times are to the second: import
		// order is told by them.
		time.Sleep(1100 * time.Millisecond)
	}
	rep, err := gc.Collect(t.Context(), url, gc.Options{Roots: gc.Roots{KeepBundles: 1}, Grace: -1})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := 3; i < 5; i++ {
		want = append(want, fmt.Sprintf("/nix/store/%032d-p%d", i, i))
	}
	if !slices.Equal(rep.RemovedPaths, want) || rep.Removed.NarFiles != 2 {
		t.Errorf("gc removed %v and %d NAR files, want %v and 2", rep.RemovedPaths, rep.Removed.NarFiles, want)
	}
	vrep, err := bundle.Verify(t.Context(), url, bundle.VerifyOptions{Keys: keys})
	if err != nil || vrep.Paths != 3 {
		t.Errorf("verify after gc: %d paths, %v; want 3", vrep.Paths, err)
	}
}

func firstNarInfo(t *testing.T, c *cache.Cache) *narinfo.NarInfo {
	t.Helper()
	for ni, err := range c.NarInfos(t.Context()) {
		if err != nil {
			t.Fatal(err)
		}
		return ni
	}
	t.Fatal("no narinfo")
	return nil
}

// TestConcurrentImportsS3 imports bundles that share paths, in other
// compressions, into one bucket at once, round after round: there is no
// flock on a bucket, and none is needed. NAR objects are named by their
// content, so two imports writing one write the same bytes; a narinfo goes
// up only after its NAR, so whichever import's narinfo wins names a NAR
// that is there; the flake registry is merged by compare and swap. Every
// round ends with a bucket that verifies and holds every path.
func TestConcurrentImportsS3(t *testing.T) {
	srv := s3test.Start(t)
	concurrentImports(t, func() string { return srv.Bucket(t) })
}

// TestConcurrentImportsDir is TestConcurrentImportsS3 into a directory,
// where each import publishes in group commits of its own.
func TestConcurrentImportsDir(t *testing.T) {
	concurrentImports(t, func() string { return filepath.Join(t.TempDir(), "cache") })
}

// concurrentImports imports bundles that share paths into one new cache
// at a time, made by newCache, at once, round after round.
func concurrentImports(t *testing.T, newCache func() string) {
	keys := signing.NewKeyring(fuzzSeedKey.Public())
	var tars []string
	for i, comp := range []string{"zstd", "none", "xz", "zstd"} {
		f := filepath.Join(t.TempDir(), fmt.Sprintf("b%d.tar", i))
		os.WriteFile(f, tinyTar(t, 3+i, comp), 0o644)
		tars = append(tars, f)
	}
	for round := range 3 {
		url := newCache()
		var wg sync.WaitGroup
		errs := make([]error, len(tars))
		for i, f := range tars {
			wg.Go(func() {
				_, errs[i] = bundle.Import(context.Background(), f, url, bundle.ImportOptions{Keys: keys})
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: import %s: %v", round, tars[i], err)
			}
		}
		rep, err := bundle.Verify(t.Context(), url, bundle.VerifyOptions{Keys: keys})
		if err != nil {
			t.Fatalf("round %d: verify: %v", round, err)
		}
		if rep.Paths != 3+len(tars)-1 {
			t.Errorf("round %d: %d paths, want %d", round, rep.Paths, 3+len(tars)-1)
		}
		if rep.Files != len(tars) {
			t.Errorf("round %d: %d bundle records, want %d", round, rep.Files, len(tars))
		}
	}
}

// TestImportVolumesS3 imports a volume set into a bucket one volume per
// run, last first: what waits for other volumes is kept in the bucket
// between runs, no path appears before its closure is whole, and the end
// is a bucket that verifies with nothing kept.
func TestImportVolumesS3(t *testing.T) {
	url := s3test.Start(t).Bucket(t)
	sk, pk, _ := signing.Generate("volume-test-1")
	keys := signing.NewKeyring(pk)
	vols := volumeSet(t, sk, 6, 40<<10, "")
	b, err := storage.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	count := func(dir, suffix string) int {
		n := 0
		for info, err := range b.List(t.Context(), dir) {
			if err != nil {
				t.Fatal(err)
			}
			if !info.Dir && strings.HasSuffix(info.Name, suffix) {
				n++
			}
		}
		return n
	}
	var countTree func(dir string) int
	countTree = func(dir string) int {
		n := 0
		for info, err := range b.List(t.Context(), dir) {
			if err != nil {
				t.Fatal(err)
			}
			if info.Dir {
				n += countTree(info.Name)
			} else {
				n++
			}
		}
		return n
	}
	for i := len(vols) - 1; i >= 0; i-- {
		rep, err := bundle.Import(t.Context(), vols[i], url, bundle.ImportOptions{Keys: keys})
		if err != nil {
			t.Fatalf("import volume %d into %s: %v", i+1, url, err)
		}
		if i > 0 {
			if n := count("", ".narinfo"); n != 0 {
				t.Errorf("after volume %d: %d narinfos, want none before volume 1", i+1, n)
			}
			if rep.Volumes == nil || len(rep.Volumes.Missing) != i {
				t.Errorf("after volume %d: report %+v, want %d missing", i+1, rep.Volumes, i)
			}
			if countTree("nix-airgap/volumes") == 0 {
				t.Errorf("after volume %d: nothing kept for the volumes to come", i+1)
			}
		}
	}
	if n := count("", ".narinfo"); n != 6 {
		t.Errorf("%d narinfos in the end, want 6", n)
	}
	// SeaweedFS lists a directory its filer made even once it is empty:
	// only objects count.
	if n := countTree("nix-airgap/volumes"); n != 0 {
		t.Errorf("%d objects kept after the set completed", n)
	}
	if rep, err := bundle.Verify(t.Context(), url, bundle.VerifyOptions{Keys: keys, Deep: true}); err != nil || rep.Paths != 6 {
		t.Errorf("verify %s: %d paths, %v", url, rep.Paths, err)
	}
}

// TestImportVolumesS3CannotSay: a volume set imported into a bucket whose
// store refuses to give its narinfos, or what earlier runs kept (403), or
// stops answering reads of them (503), fails naming the file, unreadable (exit
// 1) or unavailable (75), and leaves the bucket as it was, rather than
// take the paths for absent and write them again over the bucket's, or the
// kept files for never kept and report the set imported with its paths
// still waiting.
func TestImportVolumesS3CannotSay(t *testing.T) {
	srv := s3test.StartWithKeys(t)
	srv.UseKeys(t)
	sk, pk, _ := signing.Generate("volume-test-1")
	keys := signing.NewKeyring(pk)
	vols := volumeSet(t, sk, 4, 40<<10, "")
	// Reads, as the 403s are: a write the import should not make passes.
	read := func(r *http.Request) bool { return r.Method == http.MethodGet || r.Method == http.MethodHead }
	narinfos := func(r *http.Request) bool {
		return read(r) && strings.Count(r.URL.Path, "/") == 2 && strings.HasSuffix(r.URL.Path, ".narinfo")
	}
	kept := func(r *http.Request) bool {
		return read(r) && strings.Contains(r.URL.Path, "/nix-airgap/volumes/") && strings.Contains(r.URL.Path, "/files/")
	}
	deny := func(keys string) func(*testing.T, string) string {
		return func(t *testing.T, bucketURL string) string {
			srv.Deny(t, bucketURL, "s3:GetObject", keys)
			return bucketURL
		}
	}
	down := func(fails func(*http.Request) bool) func(*testing.T, string) string {
		return func(t *testing.T, bucketURL string) string {
			return strings.Replace(bucketURL, "endpoint="+srv.Endpoint, "endpoint="+unavailable(t, srv.Endpoint, fails), 1)
		}
	}
	for _, tt := range []struct {
		name        string
		first, then []string                        // the volumes imported before the store fails, and after
		fail        func(*testing.T, string) string // makes the store fail, returns the URL to import through
		err         error
		want        string // in the name of the file the error names
	}{
		{"narinfos denied", vols, vols, deny("*.narinfo"), fs.ErrPermission, ".narinfo"},
		{"kept denied", vols[1:], vols[:1], deny("nix-airgap/volumes/*/files/*"), fs.ErrPermission, "/files/"},
		{"narinfos down", vols, vols, down(narinfos), storage.ErrUnavailable, ".narinfo"},
		{"kept down", vols[1:], vols[:1], down(kept), storage.ErrUnavailable, "/files/"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bucketURL := srv.Bucket(t)
			if _, err := bundle.ImportVolumes(t.Context(), tt.first, bucketURL, bundle.ImportOptions{Keys: keys}); err != nil {
				t.Fatal(err)
			}
			b, err := storage.Open(t.Context(), bucketURL)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			listing := func() map[string]string {
				got := map[string]string{}
				for info, err := range b.List(t.Context(), "") {
					if err != nil {
						t.Fatal(err)
					}
					got[info.Name] = info.Version + " " + info.ModTime.String()
				}
				return got
			}
			before := listing()
			via := tt.fail(t, bucketURL)
			rep, err := bundle.ImportVolumes(t.Context(), tt.then, via, bundle.ImportOptions{Keys: keys})
			if !errors.Is(err, tt.err) || !strings.Contains(err.Error(), tt.want) {
				if rep != nil {
					t.Logf("the import reported volumes %+v, %d paths added, %d held", rep.Volumes, rep.Added, rep.Held)
				}
				t.Errorf("import: %v; want %v, naming a file (%s) the store did not give", err, tt.err, tt.want)
			}
			if diff := cmp.Diff(before, listing()); diff != "" {
				t.Errorf("the refused import changed the bucket (-before +after):\n%s", diff)
			}
		})
	}
}

// unavailable is a proxy to the store at endpoint that answers the
// requests fails picks 503 (the store cannot now), as a store that stops
// answering part-way does, and passes the rest. It returns its address.
func unavailable(t *testing.T, endpoint string, fails func(*http.Request) bool) string {
	t.Helper()
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: endpoint})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fails(r) {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// TestDeltaBaseStoreDown: a delta imported into a bucket whose store
// stops answering for the base's narinfo, or its NAR file, is refused as
// a store that did not answer (storage.ErrUnavailable), with no problem
// of the path: not a base that cannot be read, nor a damaged NAR to
// repair.
func TestDeltaBaseStoreDown(t *testing.T) {
	srv := s3test.Start(t)
	f := newDeltaFixture(t, false)
	for _, tt := range []struct {
		name string
		fail func(r *http.Request) bool
	}{
		{"narinfo", func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/"+cache.NarInfoFile(f.base.Hash)) }},
		{"NAR file", func(r *http.Request) bool { return r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/nar/") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bucket := srv.Bucket(t)
			copyCache(t, f.cacheDir, bucket)
			via := strings.Replace(bucket, "endpoint="+srv.Endpoint, "endpoint="+unavailable(t, srv.Endpoint, tt.fail), 1)
			_, err := bundle.Import(t.Context(), f.delta, via, bundle.ImportOptions{Keys: f.keys})
			var ve *bundle.VerifyError
			if !errors.Is(err, storage.ErrUnavailable) || !errors.As(err, &ve) || len(ve.Problems) > 0 {
				t.Errorf("import of the delta with the base's %s unavailable: %v; want the store down and no problem", tt.name, err)
			}
		})
	}
}

// copyCache puts the files of the cache at dir into the bucket at url.
func copyCache(t *testing.T, dir, url string) {
	t.Helper()
	b, err := storage.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() || strings.HasPrefix(d.Name(), ".") { // .lock
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		return b.Put(t.Context(), filepath.ToSlash(rel), bytes.NewReader(data), int64(len(data)))
	})
	if err != nil {
		t.Fatal(err)
	}
}
