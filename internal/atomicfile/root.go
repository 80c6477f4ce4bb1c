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

// Move renames from to name inside root, creating name's directory, and
// returns the directories whose fsync makes the rename durable: name's,
// and the parent of each directory it made.
func Move(root *os.Root, from, name string) ([]string, error) {
	dir := path.Dir(name)
	made, err := MkdirAllIn(root, dir)
	if err != nil {
		return nil, err
	}
	if err := root.Rename(from, name); err != nil {
		return nil, err
	}
	return append(made, dir), nil
}

// MkdirAllIn makes dir and its missing parents inside root, as
// os.MkdirAll does, and returns the parent of each directory it made:
// what to fsync for the new directories to survive a crash.
func MkdirAllIn(root *os.Root, dir string) ([]string, error) {
	var parents []string
	for d := dir; d != "." && d != "/"; d = path.Dir(d) {
		if _, err := root.Lstat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		parents = append(parents, path.Dir(d))
	}
	if len(parents) == 0 {
		return nil, nil
	}
	return parents, root.MkdirAll(dir, 0o755)
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
