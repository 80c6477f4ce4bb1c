package bundle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/progress"
	"github.com/nix-airgap/nix-airgap/internal/signing"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// VerifyOptions configure Verify. The zero value trusts no key and so
// refuses every bundle.
type VerifyOptions struct {
	// Keys are the trusted public keys.
	Keys *signing.Keyring
	// AllowUnsigned accepts a manifest no trusted key signed (reported
	// as a warning). Everything else is still checked.
	AllowUnsigned bool
	// Against are caches where references outside the bundle may
	// resolve, such as the cache an import goes into.
	Against []cache.Source
	// Deep also decompresses every NAR file of a bundle and checks its
	// NarHash, NarSize and flat hashes against the manifest, as Nix
	// checks a NAR it substitutes. The zero value checks each NAR file's
	// size and sha256 (FileHash) only: a signed manifest's FileHash pins
	// every byte, so that finds any damage as surely, at the speed of the
	// disk. A file without a FileHash is always checked deeply.
	Deep bool
	// Jobs is how many files a directory is checked with at once; 0
	// means GOMAXPROCS.
	Jobs int
	// Stdin is read when the source is "-".
	Stdin io.Reader
	// Log receives progress at debug level; nil discards it.
	Log *slog.Logger
	// Progress, when set, hears how far verification has got.
	Progress Progress

	// TempDir is where base NARs of binary deltas are spooled, and a
	// stream's delta files until its manifest is trusted; "" means
	// os.TempDir().
	TempDir string

	// into is, for import, the cache the bundle goes into: every
	// reference must resolve in it or the bundle, and its records say
	// which bundles once carried a path it lacks.
	into storage.Backend
	// repair is import --repair's: a delta is rebuilt unless the cache's
	// copy of its path is trusted and intact (checker.holds).
	repair bool
	// room, for import, refuses a manifest read before any file whose
	// files would not fit in the cache (room.check).
	room func(m *Manifest, manifestSize, jobs int) error
}

// Progress hears how far a verification (or an import) has got, as
// internal/progress's Reporter shows it: a phase with the store paths
// and bytes expected (0 when not known yet), then bytes as they are read
// and each store path's NAR file once checked.
type Progress interface {
	Phase(name string, paths int, bytes int64)
	Step(path, source string, bytes int64)
}

// The phases Progress hears: PhaseLock while import waits for another
// process to release the cache's lock.
const (
	PhaseLock   = "lock"
	PhaseVerify = "verify"
	PhaseRepair = "repair"
	PhaseImport = "import"
)

type nopProgress struct{}

func (nopProgress) Phase(string, int, int64)   {}
func (nopProgress) Step(string, string, int64) {}

// Verify checks the bundle at src, a directory, a .tar file, or "-" for a
// tar stream on opts.Stdin, as docs/bundle-format.md §5 says, and names
// every bad file. A directory that is a binary cache without manifest.json
// is checked as a long-lived cache (§6): record signatures, narinfo
// signatures, NAR files and references. A bundle that fails gives the
// report and a *VerifyError; any other error (an unreadable source, a
// cancelled ctx) is returned as it is.
func Verify(ctx context.Context, src string, opts VerifyOptions) (*Report, error) {
	c, err := check(ctx, src, opts, nil)
	if c == nil {
		return nil, err
	}
	return c.report, err
}

// VerifyVolumes checks volumes of one set (§8), as many as are given: each
// verifies on its own, a file split across given volumes is checked whole
// too, and a volume of another set, one given twice or one cut short is a
// problem naming it. The report says which volumes of the set were given.
func VerifyVolumes(ctx context.Context, volumes []string, opts VerifyOptions) (*Report, error) {
	c, err := checkVolumes(ctx, volumes, opts, nil, nil)
	if c == nil {
		return nil, err
	}
	return c.report, err
}

// check runs a verification, its bytes going to sk, and returns its
// state; the error is a *VerifyError when the bundle is bad.
func check(ctx context.Context, src string, opts VerifyOptions, sk sink) (*checker, error) {
	return checkScanned(ctx, src, nil, opts, sk)
}

// checkScanned is check of src, a whole tar whose headers scanned holds
// when it is not nil: one scan of a tar file serves to tell it from a
// volume and to read it.
func checkScanned(ctx context.Context, src string, scanned *volumeFile, opts VerifyOptions, sk sink) (*checker, error) {
	return checkWith(ctx, src, opts, sk, func(c *checker) error { return c.runOn(src, scanned) })
}

// checkVolumes is check for volumes of a set; keptFor, for import, gives
// what the cache has of the set besides them.
func checkVolumes(ctx context.Context, volumes []string, opts VerifyOptions, sk sink, keptFor func(storepath.Hash) keptFiles) (*checker, error) {
	name := VolumesName(volumes)
	return checkWith(ctx, name, opts, sk, func(c *checker) error {
		s, err := openVolumes(volumes, c.opts.Jobs, c.opts.Keys, keptFor)
		if err != nil {
			return fmt.Errorf("%s: %w", c.op(), err)
		}
		defer s.close()
		c.countFiles = true
		return c.run(s)
	})
}

func checkWith(ctx context.Context, src string, opts VerifyOptions, sk sink, run func(*checker) error) (*checker, error) {
	if opts.Jobs <= 0 {
		opts.Jobs = runtime.GOMAXPROCS(0)
	}
	if opts.Progress == nil {
		opts.Progress = nopProgress{}
	}
	c := newChecker(ctx, src, opts, sk)
	defer c.removeKept()
	start := time.Now()
	err := run(c)
	c.report.Elapsed = progress.Seconds(time.Since(start))
	if err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	slices.SortStableFunc(c.report.Problems, func(a, b Problem) int { return strings.Compare(a.File, b.File) })
	if c.down != nil {
		c.report.Stopped = fmt.Sprintf("%s: %v", StoreDownNote, c.down)
	}
	if len(c.report.Problems) > 0 || c.down != nil {
		return c, &VerifyError{Source: src, Problems: c.report.Problems, Down: c.down, unsigned: c.unsigned}
	}
	return c, nil
}

// runOn opens the source src names, or takes the whole tar scanned,
// and checks it.
func (c *checker) runOn(src string, scanned *volumeFile) error {
	if err := jsonNotBundle(fileHead(src)); err != nil {
		c.problem(filepath.Base(src), KindCorrupt, "%v", err)
		return nil
	}
	if scanned != nil {
		fi, err := scanned.f.Stat()
		if err != nil {
			scanned.f.Close()
			return fmt.Errorf("%s %s: %w", c.op(), src, err)
		}
		return c.runTar(src, fi, scanned.f, scanned)
	}
	if src == "-" {
		if c.opts.Stdin == nil {
			return errors.New("verify -: no input stream")
		}
		c.opts.Progress.Phase(PhaseVerify, 0, 0)
		return c.run(&tarSource{r: ProgressReader{c.opts.Stdin, c.opts.Progress}})
	}
	if _, local := storage.LocalPath(src); !local {
		return c.cacheAt(src)
	}
	fi, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("%s %s: %w", c.op(), src, storage.UnwrapPath(err))
	}
	if fi.IsDir() {
		switch isC, err := isCache(src); {
		case err != nil:
			return fmt.Errorf("%s %s: %w", c.op(), src, err)
		case isC:
			return c.cacheAt(src)
		}
		d, err := openDirSource(src, c.opts.Jobs)
		if err != nil {
			return fmt.Errorf("%s %s: %w", c.op(), src, err)
		}
		defer d.close()
		c.countFiles = true
		return c.run(d)
	}
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("%s %s: %w", c.op(), src, err)
	}
	// One scan of a file's headers, seeking over the data, tells a
	// volume from a whole tar and finds a whole tar's manifest; a pipe
	// is read once, as a stream.
	var v *volumeFile
	if fi.Mode().IsRegular() {
		if v, err = scanTar(src, f); err != nil {
			f.Close()
			return fmt.Errorf("%s %s: %w", c.op(), src, err)
		}
	}
	if v != nil && v.isVolume() {
		s := newVolumeSource([]*volumeFile{v}, c.opts.Jobs, c.opts.Keys, nil)
		defer s.close()
		c.countFiles = true
		return c.run(s)
	}
	return c.runTar(src, fi, f, v)
}

// runTar checks the tar file f, named src, no volume; v is its scanned
// headers, or nil for a pipe.
func (c *checker) runTar(src string, fi os.FileInfo, f *os.File, v *volumeFile) error {
	name := filepath.Base(src)
	defer f.Close()
	if v != nil && v.cut == "" && v.ended {
		// Progress counts the files the manifest sizes, as a
		// directory's.
		c.countFiles = true
		return c.run(&tarFileSource{tarSource: tarSource{r: f, name: name}, data: v.data, sig: v.sig})
	}
	// A stream's progress is how far into it the reading is.
	c.opts.Progress.Phase(PhaseVerify, 0, fi.Size())
	return c.run(&tarSource{r: progressSeeker{ProgressReader{f, c.opts.Progress}, f}, name: name})
}

// op is what the checker's errors say it does: import verifies too.
func (c *checker) op() string {
	if c.opts.into != nil {
		return "import"
	}
	return "verify"
}

// scanRegular scans the tar headers of the regular file name, or
// returns nil: a pipe is not scanned (that would consume it), and what
// does not scan is left to the check to report.
func scanRegular(name string) *volumeFile {
	if fi, err := os.Stat(name); err != nil || !fi.Mode().IsRegular() {
		return nil
	}
	v, err := scanVolume(name)
	if err != nil {
		return nil
	}
	return v
}

// isVolume reports whether the scanned tar file is a volume of a set: its
// manifest describes volumes, or it has none and is named as a volume or
// holds pieces of split files.
func (v *volumeFile) isVolume() bool {
	if v.data == nil {
		return volumeNameRE.MatchString(v.path) || slices.ContainsFunc(v.order, pieceNameRE.MatchString)
	}
	var head struct {
		Volumes []json.RawMessage `json:"volumes"`
	}
	return json.Unmarshal(v.data, &head) == nil && len(head.Volumes) > 0
}

// volumeNameRE matches the names pack gives volumes: NAME.001.tar.
var volumeNameRE = regexp.MustCompile(`\.[0-9]{3,}\.tar$`)
