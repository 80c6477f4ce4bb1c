package bundle

import "golang.org/x/sys/unix"

// fsSpace is the space an unprivileged writer has left on the file system
// holding dir, and its block size.
func fsSpace(dir string) (free, block int64, ok bool) {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil {
		return 0, 0, false
	}
	block = st.Frsize
	if block <= 0 {
		block = st.Bsize
	}
	return int64(st.Bavail) * block, block, true
}
