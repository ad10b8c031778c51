package tcp

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

const cmaSupported = true

// allowPeerReads lets the other ranks of this host read our memory with
// process_vm_readv. Under Yama's ptrace_scope 1 (Ubuntu's default) only an ancestor may,
// unless the process names a tracer; the workers are siblings, so name any.
func allowPeerReads() {
	unix.Prctl(unix.PR_SET_PTRACER, unix.PR_SET_PTRACER_ANY, 0, 0, 0)
}

// cmaRead copies len(dst) bytes at address remote in process pid into dst: one copy, from
// the peer's memory straight into ours (cross-memory attach, as Open MPI's vader uses).
func cmaRead(pid int, remote uintptr, dst []byte) error {
	for len(dst) > 0 {
		local := []unix.Iovec{{Base: unsafe.SliceData(dst)}}
		local[0].SetLen(len(dst))
		n, err := unix.ProcessVMReadv(pid, local, []unix.RemoteIovec{{Base: remote, Len: len(dst)}}, 0)
		if err != nil {
			return fmt.Errorf("process_vm_readv from pid %d: %w", pid, err)
		}
		if n == 0 {
			return fmt.Errorf("process_vm_readv from pid %d: no progress", pid)
		}
		dst = dst[n:]
		remote += uintptr(n)
	}
	return nil
}
