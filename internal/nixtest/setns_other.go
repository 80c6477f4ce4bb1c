//go:build !linux

package nixtest

import "errors"

func setns(fd uintptr) error {
	return errors.New("network namespaces need Linux")
}
