package bundle

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/cache"
	"github.com/nix-airgap/nix-airgap/internal/storage"
	"github.com/nix-airgap/nix-airgap/internal/storepath"
)

// Finished says, changing nothing, whether a bundle may be written at
// out, and reads the manifest of the finished bundle there that it would
// replace: DIR/manifest.json for a directory, FILE.tar itself, or
// NAME.001.tar of a volume set for NAME.tar when volumes is set. It
// returns the file it read, and nil for none there (a killed pack's
// leftovers hold none). An error is what is there instead of a bundle to
// write over (a file where a directory belongs, a directory of other
// things, a tar that is no bundle), or why out cannot be read, an OS
// error; file is then the file at fault, which the caller names. id is
// the bundle's ID, from the bytes read, for a caller that names the
// bundle it replaces without reading it again.
func Finished(out string, volumes bool) (m *Manifest, id storepath.Hash, file string, err error) {
	var data []byte
	switch {
	case volumes:
		if file = firstVolume(out); file == "" {
			// None there, or one that cannot be read: Stat says which.
			file = VolumeName(out, 1, 1)
		}
		fallthrough
	case strings.HasSuffix(out, ".tar"):
		if file == "" {
			file = out
		}
		if fi, err := os.Stat(file); errors.Is(err, fs.ErrNotExist) {
			return nil, id, "", nil
		} else if err == nil && fi.IsDir() {
			return nil, id, file, errors.New("a directory, not a tar")
		}
		if data, _, err = ReadTarManifest(file); err != nil {
			return nil, id, file, storage.UnwrapPath(err)
		}
	default:
		if err := checkDirOut(out); err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				return nil, id, pe.Path, pe.Err
			}
			return nil, id, out, err
		}
		file = filepath.Join(out, ManifestName)
		if data, err = os.ReadFile(file); errors.Is(err, fs.ErrNotExist) {
			return nil, id, "", nil
		} else if err != nil {
			return nil, id, file, storage.UnwrapPath(err)
		}
	}
	if m, err = ParseManifest(data); err != nil {
		return nil, id, file, err
	}
	return m, ID(data), file, nil
}

// checkDirOut says, changing nothing, whether a bundle may be written
// into the directory dirPath: a new or empty one, or one a pack wrote,
// finished or not, to pack over. Anything else the writer would empty is
// refused; an error that stops it looking is returned as it came, an
// *fs.PathError.
func checkDirOut(dirPath string) error {
	fi, err := os.Stat(dirPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case !fi.IsDir():
		return errors.New("a file, not a directory")
	}
	ents, err := os.ReadDir(dirPath)
	if err != nil {
		return err
	}
	// A killed pack's temp files (.tmp-*) do not count: it may have died
	// writing nix-cache-info.
	has := map[string]bool{}
	for _, e := range ents {
		if !isTemp(e) {
			has[e.Name()] = true
		}
	}
	switch {
	case len(has) == 0:
		return nil
	case !has[CacheInfo]:
		return errors.New("not empty and not a bundle")
	case has[recordRoot]:
		return fmt.Errorf("a long-lived cache (it has %s/), not a bundle", recordRoot)
	case has[ManifestName]:
		return nil
	}
	ours, err := packedInto(dirPath, has)
	if err != nil {
		return err
	}
	if !ours {
		return errors.New("a binary cache no pack made (nix copy --to file://… makes one), which a pack into it would empty")
	}
	return nil
}

// packedInto tells a directory without a manifest that a pack left, which
// the next pack goes on from, from a binary cache Nix made: a writer's
// nix-cache-info has its WantMassQuery and Priority, and Nix's own store
// makes log/ and realisations/ beside it. has is what the directory
// holds.
func packedInto(dirPath string, has map[string]bool) (bool, error) {
	if has["log"] || has["realisations"] {
		return false, nil
	}
	f, err := os.Open(filepath.Join(dirPath, CacheInfo))
	if err != nil {
		return false, err
	}
	defer f.Close()
	info, err := cache.ParseCacheInfo(f)
	return err == nil && info.WantMassQuery && info.Priority == Priority, nil
}

// VolumeFiles lists, sorted, the files beside out NAME.tar named as
// volumes of a set: NAME.NNN.tar, three digits or more.
func VolumeFiles(out string) ([]string, error) {
	dir, prefix := filepath.Split(strings.TrimSuffix(out, ".tar") + ".")
	if dir == "" {
		dir = "."
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range entries {
		name, ok := strings.CutPrefix(e.Name(), prefix)
		digits, tar := strings.CutSuffix(name, ".tar")
		if !ok || !tar || len(digits) < 3 || strings.Trim(digits, "0123456789") != "" {
			continue
		}
		files = append(files, filepath.Join(dir, e.Name()))
	}
	return files, nil // ReadDir sorts by name
}
