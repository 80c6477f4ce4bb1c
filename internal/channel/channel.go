// Package channel carries nixpkgs channels across the airgap, for the
// people who use nix-channel and NIX_PATH (`<nixpkgs>`) rather than
// flakes: the nixexprs.tar.xz that `nix-channel --update` and
// `-I nixpkgs=URL` fetch, made from a directory or taken from a tarball,
// and checked as Nix unpacks one.
//
// Every Nix from 2.3 to 2.34 updates a channel URL the same way
// (nix-channel.cc): it downloads URL itself, following redirects, and
// stores the body as a path named after URL's last component; then it
// downloads EFFECTIVE-URL/nixexprs.tar.xz (nixexprs.tar.bz2 if that
// fails) and unpacks it with the builtin unpack-channel builder, which
// wants exactly one top-level entry and renames it to the channel's name.
// binary-cache-url has not been fetched since Nix 2.3.
package channel

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/nix-airgap/nix-airgap/internal/compression"
)

// The layout of channels in a bundle and a cache (docs/bundle-format.md),
// and the URLs serve answers: Dir/NAME/FileName.
const (
	Dir      = "channels"
	FileName = "nixexprs.tar.xz"
)

// File is where the channel name's tarball lives in a bundle or cache,
// and its URL path below serve's root.
func File(name string) string { return Dir + "/" + name + "/" + FileName }

// NameOf returns the channel whose tarball rel is (File's inverse), and
// whether rel is one.
func NameOf(rel string) (string, bool) {
	rest, ok := strings.CutPrefix(rel, Dir+"/")
	if !ok {
		return "", false
	}
	name, file, ok := strings.Cut(rest, "/")
	if !ok || file != FileName || CheckName(name) != nil {
		return "", false
	}
	return name, true
}

// ErrBadName reports a channel name Nix or a URL cannot carry.
var ErrBadName = errors.New("invalid channel name")

// CheckName checks a channel name: it becomes a store path name
// (nix-channel stores the channel URL's body under it), a directory in
// the channels profile, and a URL path component, so it is a non-empty
// store path name without dots at the start: letters, digits and
// "+-._?=", at most 211 bytes.
func CheckName(name string) error {
	if name == "" || len(name) > 211 || name[0] == '.' {
		return fmt.Errorf("channel %q: %w: want letters, digits and +-._?= not starting with a dot", name, ErrBadName)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("+-._?=", c) >= 0) {
			return fmt.Errorf("channel %q: %w: want letters, digits and +-._?= not starting with a dot", name, ErrBadName)
		}
	}
	return nil
}

// ErrNotChannel reports a tarball Nix would not unpack as a channel.
var ErrNotChannel = errors.New("not a channel tarball")

// Check reads a channel tarball to its end, in any compression
// compression.Sniff tells, and checks what nix-channel's unpack-channel and NIX_PATH need:
// one top-level directory holding a default.nix, and no entry that is
// absolute or climbs out. It returns the top directory's name.
func Check(r io.Reader) (string, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	head, _ := br.Peek(compression.SniffSize)
	dr, err := compression.NewReader(br, compression.Sniff(head))
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNotChannel, err)
	}
	defer dr.Close()
	tr := tar.NewReader(dr)
	top, hasDefault := "", false
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("%w: %w", ErrNotChannel, err)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue // git archive's comment
		}
		name := strings.TrimPrefix(hdr.Name, "./")
		clean := path.Clean(name)
		if name == "" || clean == "." {
			continue
		}
		if path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
			return "", fmt.Errorf("%w: entry %q leaves the tarball", ErrNotChannel, hdr.Name)
		}
		first, rest, _ := strings.Cut(clean, "/")
		switch {
		case top == "":
			top = first
		case first != top:
			return "", fmt.Errorf("%w: more than one top-level entry (%q and %q); unpack-channel wants one directory", ErrNotChannel, top, first)
		}
		if rest == "" && hdr.Typeflag != tar.TypeDir {
			return "", fmt.Errorf("%w: the top-level entry %q is not a directory", ErrNotChannel, top)
		}
		if rest == "default.nix" {
			hasDefault = true
		}
	}
	switch {
	case top == "":
		return "", fmt.Errorf("%w: empty", ErrNotChannel)
	case !hasDefault:
		return "", fmt.Errorf("%w: %s/ has no default.nix, so <%s> would not evaluate", ErrNotChannel, top, top)
	}
	return top, nil
}

// FromDir writes the tree at dir as a channel tarball to w: one top-level
// directory named top, entries in lexical order with no owners or times,
// xz-compressed with opts. .git directories are left out; symlinks are
// kept as they are. A symlink dir (a channels profile entry) is followed.
func FromDir(ctx context.Context, w io.Writer, dir, top string, opts compression.WriterOptions) error {
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(root, "default.nix")); err != nil {
		return fmt.Errorf("%w: %s has no default.nix", ErrNotChannel, dir)
	}
	xw, err := compression.NewWriter(w, compression.XZ, opts)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(xw)
	err = filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if de.IsDir() && de.Name() == ".git" {
			return fs.SkipDir
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		return addEntry(tw, p, path.Join(top, filepath.ToSlash(rel)), de)
	})
	if err == nil {
		err = tw.Close()
	}
	if cerr := xw.Close(); err == nil {
		err = cerr
	}
	return err
}

// epoch is every entry's time: Nix resets them in the store anyway, and
// fixed ones make the same tree give the same tarball.
var epoch = time.Unix(1, 0).UTC()

func addEntry(tw *tar.Writer, p, name string, de fs.DirEntry) error {
	hdr := &tar.Header{Name: name, ModTime: epoch, Format: tar.FormatPAX}
	switch t := de.Type(); {
	case t.IsDir():
		hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, name+"/", 0o755
	case t&fs.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, target, 0o777
	case t.IsRegular():
		fi, err := de.Info()
		if err != nil {
			return err
		}
		hdr.Typeflag, hdr.Size, hdr.Mode = tar.TypeReg, fi.Size(), 0o644
		if fi.Mode()&0o111 != 0 {
			hdr.Mode = 0o755
		}
	default:
		return fmt.Errorf("%s: %s is neither a file, a directory nor a symlink", p, t)
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if hdr.Typeflag != tar.TypeReg {
		return nil
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := io.Copy(tw, io.LimitReader(f, hdr.Size)); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}

// FromTarball copies a channel tarball from r to w as xz: verbatim when it
// is xz already, else decompressed and compressed again with opts. It does
// not check the tarball: Check does.
func FromTarball(w io.Writer, r io.Reader, opts compression.WriterOptions) error {
	br := bufio.NewReaderSize(r, 1<<16)
	head, _ := br.Peek(compression.SniffSize)
	comp := compression.Sniff(head)
	if comp == compression.XZ {
		_, err := io.Copy(w, br)
		return err
	}
	dr, err := compression.NewReader(br, comp)
	if err != nil {
		return err
	}
	defer dr.Close()
	xw, err := compression.NewWriter(w, compression.XZ, opts)
	if err != nil {
		return err
	}
	if _, err := io.Copy(xw, dr); err != nil {
		xw.Close()
		return err
	}
	return xw.Close()
}
