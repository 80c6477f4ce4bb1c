package bundle

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/storage"
)

// Finished reads the manifest of the finished bundle that a pack into out
// would replace: DIR/manifest.json for a directory, FILE.tar itself, or
// NAME.001.tar of a volume set for NAME.tar when volumes is set. It
// returns the file it read, and nil for none there (a killed pack's
// leftovers hold none). An error is a file there that is no bundle, or
// one whose manifest cannot be read; the caller names the file.
func Finished(out string, volumes bool) (m *Manifest, file string, err error) {
	var data []byte
	switch {
	case volumes:
		// The first volume's digits depend on how many there are.
		for _, n := range []int{1, 1000, 10000} {
			if file = VolumeName(out, 1, n); fileExists(file) {
				break
			}
		}
		fallthrough
	case strings.HasSuffix(out, ".tar"):
		if file == "" {
			file = out
		}
		if fi, err := os.Stat(file); errors.Is(err, fs.ErrNotExist) {
			return nil, "", nil
		} else if err == nil && fi.IsDir() {
			return nil, file, errors.New("a directory, not a tar")
		}
		if data, _, err = ReadTarManifest(file); err != nil {
			return nil, file, storage.UnwrapPath(err)
		}
	default:
		file = filepath.Join(out, ManifestName)
		if data, err = os.ReadFile(file); errors.Is(err, fs.ErrNotExist) {
			return nil, "", nil
		} else if err != nil {
			return nil, file, storage.UnwrapPath(err)
		}
	}
	if m, err = ParseManifest(data); err != nil {
		return nil, file, err
	}
	return m, file, nil
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
