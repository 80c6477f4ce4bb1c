package bundle

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/progress"
	"github.com/nix-airgap/nix-airgap/internal/storage"
)

// What a path given for a bundle or a cache is, and what is wrong with it
// when it is neither, is said here for every command that reads one
// (verify, import, show, diff, inventory, pack --since, gc, check, serve), so
// that the same input gets the same exit code and the same words from
// each (docs/bundle-format.md §5):
//
//	nothing there, an empty directory              missing (5)
//	a directory a pack left without its manifest   missing (5)
//	a directory of nix-cache-info alone            an empty cache, where caches are read
//	a file or a directory of other things          not a bundle, not a cache (4)
//	a bundle where a cache belongs, or the reverse not a cache, not a bundle (4)
//	a cache inventory where neither takes one      not a bundle, not a cache (4)

// Shape is what a local path holds.
type Shape int

const (
	// ShapeFile is a file, or a pipe: a bundle tar, a volume, a
	// manifest.json or a cache inventory, as its reader finds.
	ShapeFile Shape = iota + 1
	// ShapeBundle is a bundle directory: it has manifest.json.
	ShapeBundle
	// ShapeCache is a long-lived cache: nix-cache-info and
	// nix-airgap/, no manifest.json.
	ShapeCache
	// ShapeBinaryCache has a bundle's files (nix-cache-info, narinfos,
	// NAR files) and no manifest.json: a bundle whose pack did not
	// finish, or a binary cache no import made.
	ShapeBinaryCache
	// ShapeInventory is a cache inventory (nix-airgap inventory --out),
	// which pack --since, plan --since, show and diff read.
	ShapeInventory
)

// ErrNotBundle reports input that is no bundle at all: a text file, a tar
// or a directory of other things, a cache where a bundle belongs.
// ErrNotCache reports a cache argument that is no cache: a file, a
// directory of other things, a bundle. Both exit 4, as corruption does.
var (
	ErrNotBundle = errors.New("not a bundle")
	ErrNotCache  = errors.New("not a cache")
)

// inputErr is what is wrong with a path that is not the bundle or
// cache a command wants: err is the kind (ErrMissing, ErrNotBundle,
// ErrNotCache), problem says what the path is instead.
type inputErr struct {
	err     error
	problem string
}

func (e *inputErr) Error() string { return e.err.Error() + ": " + e.problem }
func (e *inputErr) Unwrap() error { return e.err }

// kind is the kind of problem verify reports it as.
func (e *inputErr) kind() Kind {
	if errors.Is(e.err, ErrMissing) {
		return KindMissing
	}
	return KindCorrupt
}

func inputError(err error, format string, args ...any) error {
	return &inputErr{err: err, problem: fmt.Sprintf(format, args...)}
}

// errUnfinished reports a directory with a bundle's files but no
// manifest.json, which a pack writes last. It wraps ErrMissing.
var errUnfinished error = &inputErr{ErrMissing, "a bundle whose pack did not finish (it has no " + ManifestName + " yet); run that pack again to finish it"}

// errEmptyDir reports an empty directory: every file of a bundle or a
// cache is missing from it, as from a medium not mounted.
var errEmptyDir error = &inputErr{ErrMissing, "an empty directory (is the medium mounted?)"}

// otherThings is what a directory holds that has no file of a bundle or
// cache.
const otherThings = "a directory without " + ManifestName + ", " + CacheInfo + ", narinfos or NAR files"

// inventoryProblem says what a cache inventory is, where it does not
// belong: the guide keeps it on the medium beside the bundles.
const inventoryProblem = "a cache inventory (nix-airgap inventory --out): it goes to the connected side, for pack --since"

// InventoryError reports a cache inventory given where a bundle
// (ErrNotBundle) or a cache (ErrNotCache) belongs.
func InventoryError(want error) error { return inputError(want, inventoryProblem) }

// inventoryStart is how a cache inventory's file starts (CacheInventory.
// Marshal): its format first.
var inventoryStart = regexp.MustCompile(`^\s*\{\s*"format"\s*:\s*"` + regexp.QuoteMeta(InventoryFormat) + `"`)

// manifestStart is how a bundle's manifest.json starts: its format first.
var manifestStart = regexp.MustCompile(`^\s*\{\s*"format"\s*:\s*"` + regexp.QuoteMeta(Format) + `"`)

// manifestProblem says what a manifest.json given alone is, where a
// bundle belongs.
const manifestProblem = "a bundle's " + ManifestName + " alone, which show and diff read: give the bundle directory or tar it belongs to"

// isInventoryFile reports whether the regular file name starts as a
// cache inventory does.
func isInventoryFile(name string) bool { return inventoryStart.Match(fileHead(name)) }

// jsonNotBundle says what head, the start of a file or stream given as
// a bundle, is when it starts as a JSON file nix-airgap writes does: a
// cache inventory, or a bundle's manifest.json alone. nil otherwise.
func jsonNotBundle(head []byte) error {
	switch {
	case inventoryStart.Match(head):
		return InventoryError(ErrNotBundle)
	case manifestStart.Match(head):
		return inputError(ErrNotBundle, manifestProblem)
	}
	return nil
}

// fileHead is the first bytes of the regular file name, nil for anything
// else. A pipe is not read: opening one waits for its writer, and reading
// it takes what the reader of the stream must have.
func fileHead(name string) []byte {
	if fi, err := os.Stat(name); err != nil || !fi.Mode().IsRegular() {
		return nil
	}
	f, err := os.Open(name)
	if err != nil {
		return nil
	}
	defer f.Close()
	head := make([]byte, 512)
	n, _ := io.ReadFull(f, head)
	return head[:n]
}

// Identify says what the local path src holds. A path that is not there,
// an empty directory (hidden files aside: a killed pack's temp files), or
// a directory of other things is an error (fs.ErrNotExist, ErrMissing,
// ErrNotBundle) that does not name src: callers do.
func Identify(src string) (Shape, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return 0, storage.UnwrapPath(err)
	}
	if !fi.IsDir() {
		if fi.Mode().IsRegular() && isInventoryFile(src) {
			return ShapeInventory, nil
		}
		return ShapeFile, nil
	}
	if _, err := os.Stat(filepath.Join(src, ManifestName)); err == nil {
		return ShapeBundle, nil
	}
	switch c, err := isCache(src); {
	case err != nil:
		return 0, err
	case c:
		return ShapeCache, nil
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return 0, err
	}
	visible, nars := false, false
	for _, e := range ents {
		if isBundleFile(e.Name()) || e.Name() == recordRoot {
			return ShapeBinaryCache, nil
		}
		visible = visible || !strings.HasPrefix(e.Name(), ".")
		nars = nars || compressionOf(e.Name()) != "" || isDeltaFile(e.Name())
	}
	switch {
	case !visible:
		return 0, errEmptyDir
	case nars:
		// A cache's nar/, given for the cache by mistake.
		parent := ".."
		if abs, err := filepath.Abs(src); err == nil {
			parent = filepath.Dir(abs)
		}
		return 0, inputError(ErrNotBundle, "this looks like the %s/ directory of a cache or bundle (it holds NAR files): give its parent, %s", cache.NarDir, parent)
	}
	return 0, inputError(ErrNotBundle, "%s", otherThings)
}

// IdentifyBundle is Identify for a command that reads bundles (or
// caches too, with caches): a directory without a manifest is a bundle
// whose pack did not finish, or, where caches are not read, a cache is
// not a bundle. Where caches are read, a directory of nix-cache-info
// alone is an empty cache (one just made, or one import made and put
// nothing in), not an unfinished bundle: what it holds, nothing, is
// read as what it is.
func IdentifyBundle(src string, caches bool) (Shape, error) {
	s, err := Identify(src)
	switch {
	case err != nil:
		return 0, err
	case s == ShapeBinaryCache && caches && onlyCacheInfo(src):
		return ShapeCache, nil
	case s == ShapeBinaryCache:
		return 0, errUnfinished
	case s == ShapeCache && !caches:
		return 0, inputError(ErrNotBundle, "a long-lived cache (it has %s/): give a bundle", recordRoot)
	}
	return s, nil
}

// onlyCacheInfo reports whether the directory dir holds nix-cache-info
// and nothing else (hidden files aside: a lock, a killed writer's temp
// files).
func onlyCacheInfo(dir string) bool {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	info := false
	for _, e := range ents {
		switch {
		case e.Name() == CacheInfo:
			info = e.Type().IsRegular()
		case !strings.HasPrefix(e.Name(), "."):
			return false
		}
	}
	return info
}

// CacheUse is what a command does with a cache argument, which decides
// what else it takes there.
type CacheUse int

const (
	// CacheOnly reads a long-lived or binary cache (gc, inventory).
	CacheOnly CacheUse = iota
	// CacheToMake imports into one, made if it is not there yet or an
	// empty directory (import --cache).
	CacheToMake
	// CacheOrBundle reads a bundle directory too (serve, verify
	// --against).
	CacheOrBundle
)

// CheckCache says whether location may be given as a cache for use:
// anything not local (the store says), a long-lived or binary cache (with
// its nix-cache-info, unless it is to be made), and what use takes
// besides. The error does not name location: callers do.
func CheckCache(location string, use CacheUse) error {
	p, local := storage.LocalPath(location)
	if !local {
		return nil
	}
	s, err := Identify(p)
	switch {
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, errEmptyDir):
		if use == CacheToMake {
			return nil
		}
		return err
	case errors.Is(err, ErrNotBundle):
		problem := otherThings
		if ie := (*inputErr)(nil); errors.As(err, &ie) {
			problem = ie.problem
		}
		return inputError(ErrNotCache, "%s", problem)
	case err != nil:
		return err
	case s == ShapeInventory:
		return InventoryError(ErrNotCache)
	case s == ShapeFile && startsBundleTar(p):
		return inputError(ErrNotCache, "a bundle tar; give the cache import made (its --cache)")
	case s == ShapeFile:
		return inputError(ErrNotCache, "a file; a cache is a directory (import's --cache) or an s3:// URL")
	case s == ShapeBundle && use != CacheOrBundle:
		return inputError(ErrNotCache, "a bundle (it has %s); give the cache import made (its --cache)", ManifestName)
	case s == ShapeBinaryCache && use != CacheToMake:
		// Said here too, before gc writes its lock into it.
		if _, err := os.Stat(filepath.Join(p, CacheInfo)); errors.Is(err, fs.ErrNotExist) {
			return cache.ErrNoCacheInfo
		}
	}
	return nil
}

// startsBundleTar reports whether the file name starts as a bundle tar
// or volume does, with one of a bundle's files: a tar given where a cache
// belongs, named as such, without reading the rest.
func startsBundleTar(name string) bool {
	f, err := os.Open(name)
	if err != nil {
		return false
	}
	defer f.Close()
	hdr, err := tar.NewReader(f).Next()
	return err == nil && isBundleFile(hdr.Name)
}

// CacheOpenError is err, of opening the cache at location (cache.OpenStored,
// cache.OpenBackend) for the command cmd, as every command says it: "CMD
// LOCATION: problem" when the location is no binary cache
// (cache.ErrNoCacheInfo), as for CheckCache's errors, and otherwise "CMD:
// err", which names the file of location that failed.
func CacheOpenError(cmd, location string, err error) error {
	if errors.Is(err, cache.ErrNoCacheInfo) {
		return fmt.Errorf("%s %s: %w", cmd, location, cache.ErrNoCacheInfo)
	}
	return fmt.Errorf("%s: %w", cmd, err)
}

// isBundleFile reports whether name, in a bundle's top directory or its
// tar, is one of a bundle's own files.
func isBundleFile(name string) bool {
	_, narinfo := cache.NarInfoHashPart(name)
	return narinfo || name == CacheInfo || name == ManifestName || name == SigName ||
		name == cache.NarDir || strings.HasPrefix(name, cache.NarDir+"/")
}

// ReadTarManifest reads the manifest and its signature (nil when there
// is none) from the bundle tar or volume name, seeking over the rest, as
// show, diff and pack --since read a bundle. What is no bundle tar, or
// one cut short before its signature (docs/bundle-format.md §4), is an
// error that does not name the file: callers do.
func ReadTarManifest(name string) (data, sig []byte, err error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, nil, storage.UnwrapPath(err)
	}
	defer f.Close()
	v, err := scanTar(name, f)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case v.size == 0:
		return nil, nil, inputError(ErrNotBundle, "an empty file")
	case v.noTar:
		return nil, nil, inputError(ErrNotBundle, "not a tar stream")
	case v.data == nil && v.ended && !slices.ContainsFunc(v.order, isBundleFile):
		return nil, nil, inputError(ErrNotBundle, "a tar without %s, %s, narinfos or NAR files", ManifestName, CacheInfo)
	case v.data == nil && v.cut != "" && !strings.HasPrefix(v.cut, "it ends"):
		return nil, nil, fmt.Errorf("%w: no %s: %s", ErrCorrupt, ManifestName, v.cut)
	case v.data == nil:
		return nil, nil, fmt.Errorf("%w: no %s, which comes last, in the %s the tar ends after: cut short", ErrCorrupt, ManifestName, progress.Plural(len(v.order), "file"))
	case v.sig == nil && !v.ended:
		// The signature comes last: it went with the rest.
		return nil, nil, fmt.Errorf("%w: the tar ends after %s without its signature or tar's end-of-archive marker: cut short", ErrCorrupt, ManifestName)
	case len(v.data) > MaxManifestSize:
		return nil, nil, fmt.Errorf("%w: %s larger than %d bytes", ErrCorrupt, ManifestName, MaxManifestSize)
	}
	return v.data, v.sig, nil
}
