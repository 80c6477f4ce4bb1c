package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"regexp"
	"strings"
)

// volumeNumber matches what follows NAME in a volume's name, NAME.001.tar.
var volumeNumber = regexp.MustCompile(`^\.[0-9]{3,}\.tar$`)

// volumeSetHint adds to err, that src does not exist, the volumes beside
// it when src is a NAME.tar that pack --volume-size wrote as NAME.001.tar,
// …: pack's --out then names no file, and the volumes are what to give.
func volumeSetHint(err error, src string) error {
	if !errors.Is(err, fs.ErrNotExist) || !strings.HasSuffix(src, ".tar") {
		return err
	}
	name := strings.TrimSuffix(src, ".tar")
	matches, _ := filepath.Glob(regexp.MustCompile(`[*?[\\]`).ReplaceAllString(name, `\$0`) + ".[0-9]*.tar")
	var vols []string
	for _, m := range matches {
		if volumeNumber.MatchString(strings.TrimPrefix(m, name)) {
			vols = append(vols, m)
		}
	}
	switch len(vols) {
	case 0:
		return err
	case 1:
		return fmt.Errorf("%w; pack --volume-size wrote %s as volumes, such as %s", err, src, vols[0])
	}
	return fmt.Errorf("%w; pack --volume-size wrote %s as volumes, %s to %s (%s.*.tar)", err, src, vols[0], vols[len(vols)-1], name)
}
