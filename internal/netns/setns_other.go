//go:build !linux

package netns

import "errors"

func setns(fd uintptr) error {
	return errors.New("network namespaces need Linux")
}
