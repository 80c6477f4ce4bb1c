package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/nix-airgap/nix-airgap/internal/bundle"
)

// volumeSetHint adds to err, that src does not exist, the volumes beside
// it when src is a NAME.tar that pack --volume-size wrote as NAME.001.tar,
// …: pack's --out then names no file, and the volumes are what to give.
func volumeSetHint(err error, src string) error {
	if !errors.Is(err, fs.ErrNotExist) || !strings.HasSuffix(src, ".tar") {
		return err
	}
	vols := bundle.VolumeSet(src)
	switch len(vols) {
	case 0:
		return err
	case 1:
		return fmt.Errorf("%w; pack --volume-size wrote %s as volumes, such as %s", err, src, vols[0])
	}
	return fmt.Errorf("%w; pack --volume-size wrote %s as volumes, %s to %s (%s.*.tar)", err, src, vols[0], vols[len(vols)-1], strings.TrimSuffix(src, ".tar"))
}
