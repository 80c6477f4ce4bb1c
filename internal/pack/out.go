package pack

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
	"github.com/nix-airgap/nix-airgap/internal/plan"
	"github.com/nix-airgap/nix-airgap/internal/progress"
	"github.com/nix-airgap/nix-airgap/internal/role"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// What Options.Out may be is said here alone, by checkOut; every error it
// returns wraps one of these, which the command line reports as its own
// (exit 2).
var (
	// ErrNoOutput reports Options without an output.
	ErrNoOutput = errors.New("none given")
	// ErrOutTaken reports an --out that holds what pack would replace
	// and the user may still want: a finished bundle of other targets
	// or mode, or a file or directory that is no bundle.
	ErrOutTaken = errors.New("refusing to replace it")
	// ErrOutUnusable reports an --out pack cannot write: a compressed
	// archive's name, a terminal, a symlink that does not resolve or
	// to what is no FILE.tar, or one that cannot be read.
	ErrOutUnusable = errors.New("no place to write a bundle")
	// ErrSinceIsOut reports a base bundle that is also the output:
	// packing would replace the bundle it is meant to extend.
	ErrSinceIsOut = errors.New("the base bundle is the output")
)

// Advice that ends an --out error: a bundle of another pack may go; what
// is no bundle is the user's.
const (
	adviceRemove  = "remove it, or give another --out"
	adviceAnother = "give another --out: a new or empty directory, or FILE.tar"
)

// CheckOut says, changing nothing, whether a pack of opts may write its
// bundle at opts.Out, as far as it can without the targets: everything
// Pack refuses of opts.Out (Out, Stdout, VolumeSize and Since) but a
// finished bundle there of other targets or mode. A command line calls
// it before any work, and hands what it found to Pack (Options.OutCheck).
func CheckOut(opts Options) (*OutCheck, error) {
	out, olds, err := checkOut(opts)
	if err != nil {
		return nil, err
	}
	return &OutCheck{given: opts.Out, volumeSize: opts.VolumeSize, since: slices.Clone(opts.Since), out: out, olds: olds}, nil
}

// OutCheck is what CheckOut found at an --out, for the options it was
// given: Pack with the same options reads a finished bundle's manifest
// there (megabytes of JSON) only once.
type OutCheck struct {
	given      string
	volumeSize int64
	since      []string
	out        string
	olds       []found
}

// reuse returns what c found, when it was for opts and still holds: a
// finished bundle (a directory or a tar, not a volume set, whose
// volumes may have come or gone) whose manifest file is unchanged.
// Anything else is checked again: it costs no manifest to read.
func (c *OutCheck) reuse(opts Options) (string, []found, bool) {
	if c == nil || c.given != opts.Out || c.volumeSize != opts.VolumeSize || opts.VolumeSize > 0 || !slices.Equal(c.since, opts.Since) || len(c.olds) != 1 {
		return "", nil, false
	}
	fi, err := os.Stat(c.olds[0].file)
	if was := c.olds[0].fi; err != nil || was == nil || !os.SameFile(fi, was) || fi.Size() != was.Size() || !fi.ModTime().Equal(was.ModTime()) {
		return "", nil, false
	}
	return c.out, c.olds, true
}

// found is a finished bundle checkOut found where the pack would write:
// the file it read, as it was then, its manifest, and its ID.
type found struct {
	file string
	fi   fs.FileInfo
	m    *bundle.Manifest
	id   storepath.Hash
}

// resolve is what c found at opts.Out if it still holds, else checkOut's
// answer.
func (c *OutCheck) resolve(opts Options) (string, []found, error) {
	if out, olds, ok := c.reuse(opts); ok {
		return out, olds, nil
	}
	return checkOut(opts)
}

// checkOut is CheckOut. It returns the file a FILE.tar --out names
// (resolveOut), and the finished bundles there that the pack would
// replace, for refuseOther once the targets are known. Its errors name
// --out as given, and the file at fault when it is another: where a
// symlink points, a directory's manifest.json, a volume.
func checkOut(opts Options) (string, []found, error) {
	given, out := opts.Out, opts.Out
	switch {
	case out == "":
		return "", nil, fmt.Errorf("--out: %w; give a directory, FILE.tar, or - for stdout", ErrNoOutput)
	case out == "-":
		if f, ok := opts.Stdout.(*os.File); ok && progress.IsTerminal(f) {
			return "", nil, outError(out, "", errors.New("stdout is a terminal"), ErrOutUnusable, "redirect stdout to a file or a pipe, or give --out FILE.tar")
		}
		return out, nil, nil
	}
	// Endings that name a compressed or non-tar archive, which pack
	// does not write.
	for _, ext := range []string{".gz", ".tgz", ".zst", ".xz", ".bz2", ".lz4", ".zip", ".7z"} {
		if strings.HasSuffix(strings.ToLower(out), ext) {
			return "", nil, outError(out, "", errors.New("the name of a compressed or non-tar archive"), ErrOutUnusable,
				"pack writes a directory or an uncompressed FILE.tar (its NAR files are compressed already); to compress the stream anyway, pipe --out - through a compressor")
		}
	}
	out, err := resolveOut(out, opts.VolumeSize > 0)
	if err != nil {
		return "", nil, err
	}
	if err := checkOutDir(given, out); err != nil {
		return "", nil, err
	}
	var vols []string
	if strings.HasSuffix(out, ".tar") {
		// A volume set's volumes, which a pack into out replaces.
		if vols, err = bundle.VolumeFiles(out); err != nil {
			return "", nil, outError(given, "", err, ErrOutUnusable, adviceAnother)
		}
	}
	for _, s := range opts.Since {
		for _, o := range append([]string{out}, vols...) {
			if sameFile(s, o) || sameFile(filepath.Dir(s), o) && filepath.Base(s) == bundle.ManifestName {
				return "", nil, fmt.Errorf("--since %s: %w", s, ErrSinceIsOut)
			}
		}
	}
	var before fs.FileInfo // of the file read, taken first: a change after shows
	if opts.VolumeSize == 0 {
		name := filepath.Join(out, bundle.ManifestName)
		if strings.HasSuffix(out, ".tar") {
			name = out
		}
		before, _ = os.Stat(name)
	}
	m, id, file, err := bundle.Finished(out, opts.VolumeSize > 0)
	if err != nil {
		return "", nil, outError(given, file, err, nil, "")
	}
	var olds []found
	if m != nil {
		olds = append(olds, found{file, before, m, id})
	}
	if opts.VolumeSize == 0 {
		return out, olds, nil
	}
	others, err := otherVolumes(given, file, vols)
	if err != nil {
		return "", nil, err
	}
	return out, append(olds, others...), nil
}

// otherVolumes reads the volumes vols beside first, the set's first
// volume that checkOut read, for --out given: a volume set pack writes
// there replaces them all. Any NAME.NNN.tar that is a whole bundle tar
// is refused: the new set would overwrite it, or leave it mixed in with
// its own.
func otherVolumes(given, first string, vols []string) ([]found, error) {
	var olds []found
	for _, v := range vols {
		if v == first {
			continue
		}
		m, id, _, err := bundle.Finished(v, false)
		switch {
		case err != nil:
			return nil, outError(given, v, err, nil, "")
		case m == nil: // gone since it was listed
			continue
		case m.Volumes == nil:
			return nil, outError(given, v, errors.New("a bundle tar, not a volume of a set"), ErrOutTaken, adviceRemove)
		}
		olds = append(olds, found{v, nil, m, id})
	}
	return olds, nil
}

// replacedBundle names the finished bundle that a pack into out
// replaces, "sha256:ID (packed DATE)"; "" for none there. Its ID is of
// the manifest checkOut read, before the pack writes over it.
func replacedBundle(olds []found) string {
	if len(olds) == 0 {
		return ""
	}
	f := olds[0] // a volume set's first volume
	return f.id.String() + " (packed " + f.m.Created.UTC().Format("2006-01-02") + ")"
}

// sameContent reports whether bundles a and b carry the same store paths
// on the same bases: the same pack run again, whose bundle differs from
// the one it replaces only in when it was made.
func sameContent(a, b *bundle.Manifest) bool {
	key := func(m *bundle.Manifest) []string {
		var k []string
		for _, e := range m.Paths {
			k = append(k, e.Path.Hash)
		}
		for _, b := range m.Bases {
			k = append(k, "base "+b.ID.String())
		}
		slices.Sort(k)
		return k
	}
	return slices.Equal(key(a), key(b))
}

// refuseOther refuses a finished bundle checkOut found at out, --out as
// given, that is of another pack than one of targets in mode: the same
// pack again goes on, or packs over its own bundle.
func refuseOther(out string, olds []found, targets []plan.TargetSpec, mode role.Mode) error {
	for _, f := range olds {
		if what := otherPack(f.m, targets, mode); what != "" {
			return outError(out, f.file, errors.New("a finished bundle "+what), ErrOutTaken, adviceRemove)
		}
	}
	return nil
}

// outError is an error of --out out, "--out OUT[: FILE]: problem: kind;
// advice", naming file too when it is another: a directory's
// manifest.json, a volume. A nil kind is the kind of problem, a bundle's:
// an OS error is one reading it, ErrOutUnusable; anything else says what
// is there instead of a bundle to write over, ErrOutTaken.
func outError(out, file string, problem, kind error, advice string) error {
	subject := "--out " + out
	if file != "" && file != out {
		subject += ": " + file
	}
	if kind == nil {
		kind, advice = ErrOutTaken, adviceAnother
		if errors.As(problem, new(syscall.Errno)) {
			kind = ErrOutUnusable
		}
	}
	return fmt.Errorf("%s: %w: %w; %s", subject, problem, kind, advice)
}

// resolveOut is the file a FILE.tar out names: where a symlink points,
// as tar(1) writes, for the tar is written beside it and renamed over it,
// which would replace the link (the user's, unlike nix build's
// --out-link) with a file. A link whose target is missing is followed as
// tar follows it, into the target's directory; one whose directory is
// missing (a medium not mounted) or that names no FILE.tar is refused,
// as inventory and keygen refuse to replace a link. Volumes are written
// beside NAME.tar; a directory is written into.
func resolveOut(out string, volumes bool) (string, error) {
	if volumes || !strings.HasSuffix(out, ".tar") {
		return out, nil
	}
	if fi, err := os.Lstat(out); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		return out, nil
	}
	target, err := filepath.EvalSymlinks(out)
	dest, _ := os.Readlink(out)
	if err != nil && dest != "" {
		if !filepath.IsAbs(dest) {
			dest = filepath.Join(filepath.Dir(out), dest)
		}
		var dir string
		if dir, err = filepath.EvalSymlinks(filepath.Dir(dest)); err == nil {
			target = filepath.Join(dir, filepath.Base(dest))
			if _, err = os.Lstat(target); err == nil {
				err = errors.New("a symlink loop") // it is there, yet does not resolve
			} else if errors.Is(err, fs.ErrNotExist) {
				err = nil
			}
		}
	}
	switch {
	case err != nil:
		return "", outError(out, "", fmt.Errorf("a symlink to %s, which does not resolve (%w)", dest, storage.UnwrapPath(err)), ErrOutUnusable, "give the file to write")
	case !strings.HasSuffix(target, ".tar"):
		return "", outError(out, "", fmt.Errorf("a symlink to %s, not to a FILE.tar", target), ErrOutUnusable, "give the file to write")
	}
	return target, nil
}

// checkOutDir refuses an out, --out as given, whose directory does not
// exist (a medium not mounted), as cp -r and a shell's > do: pack would
// fail only once it writes, after planning and building, or fill the
// file system the mount point is on. That is FILE.tar's or a volume
// set's directory, and a bundle directory's parent: pack makes the
// bundle directory, not its parents.
func checkOutDir(given, out string) error {
	dir := filepath.Dir(filepath.Clean(out))
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return outError(given, "", fmt.Errorf("directory %s does not exist", dir), ErrOutUnusable, "create it (or mount the medium), or give another --out")
	}
	return nil
}

// otherPack says how the finished bundle m is of another pack than one of
// targets in mode: "of other targets (...)" or "of mode M, not N"; "" for
// the same pack, or no bundle.
func otherPack(m *bundle.Manifest, targets []plan.TargetSpec, mode role.Mode) string {
	if m == nil {
		return ""
	}
	had := map[string]bool{}
	for _, t := range m.Targets {
		had[t.Spec] = true
	}
	want := map[string]bool{}
	for _, t := range targets {
		want[t.Text] = true
	}
	if m.Mode == mode && maps.Equal(had, want) {
		return ""
	}
	if m.Mode != mode {
		return fmt.Sprintf("of mode %s, not %s", m.Mode, mode)
	}
	specs := slices.Sorted(maps.Keys(had))
	if len(specs) > 3 {
		specs = append(specs[:3], fmt.Sprintf("and %d more", len(specs)-3))
	}
	return fmt.Sprintf("of other targets (%s)", strings.Join(specs, " "))
}

// sameFile reports whether a and b name the same existing directory or
// file: a bundle directory, or a FILE.tar.
func sameFile(a, b string) bool {
	sa, err := os.Stat(a)
	if err != nil {
		return false
	}
	sb, err := os.Stat(b)
	return err == nil && os.SameFile(sa, sb)
}
