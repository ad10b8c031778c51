//go:build !linux

package tcp

import "errors"

const cmaSupported = false

func allowPeerReads() {}

func cmaRead(pid int, remote uintptr, dst []byte) error {
	return errors.New("cross-memory attach needs Linux")
}
