package atomicfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path"
)

// The same steps inside an os.Root, for a cache directory, where no name
// or symlink may lead outside. They come in halves, so that many files can
// share the syncs (a bundle writer's group commit) or be published long
// after they were written (import's staged files):
//
//	CreateTemp, write, Seal        the data, durable under a temp name
//	Move                           the rename into place
//	SyncDirIn                      the rename, durable
//
// Publish does the last three for one file.

// TempPrefix starts the names of CreateTemp's files.
const TempPrefix = ".tmp-"

// CreateTemp creates a new file named .tmp-RANDOM in dir inside root
// (readers skip names starting with ".") and returns it with its name.
func CreateTemp(root *os.Root, dir string) (*os.File, string, error) {
	for range 10 {
		name := path.Join(dir, TempPrefix+randomHex())
		f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, "", err
		}
		return f, name, nil
	}
	return nil, "", errors.New("cannot create a temp file")
}

// randomHex is the random part of a new temp name.
func randomHex() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Seal fsyncs f and closes it.
func Seal(f *os.File) error {
	err := f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Move renames from to name inside root, creating name's directory.
func Move(root *os.Root, from, name string) error {
	if dir := path.Dir(name); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	return root.Rename(from, name)
}

// SyncDirIn fsyncs the directory dir inside root, so that renames and
// creations in it survive a crash.
func SyncDirIn(root *os.Root, dir string) error {
	d, err := root.Open(dir)
	return syncDir(d, err, dir)
}

// Publish puts the temp file f, named tmp, in place as name inside root:
// sealed, moved and the directory synced when durable; without durable,
// only closed and moved, and the caller makes it durable later (as
// syncfs(2) does for a group commit). On error the temp file is removed.
func Publish(root *os.Root, f *os.File, tmp, name string, durable bool) error {
	var err error
	if durable {
		err = Seal(f)
	} else {
		err = f.Close()
	}
	if err == nil {
		err = root.Rename(tmp, name)
	}
	if err != nil {
		root.Remove(tmp)
		return err
	}
	if !durable {
		return nil
	}
	return SyncDirIn(root, path.Dir(name))
}
