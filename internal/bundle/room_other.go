//go:build !linux

package bundle

// fsSpace says nothing off Linux: import checks no free space there.
func fsSpace(string) (free, block int64, ok bool) { return 0, 0, false }
