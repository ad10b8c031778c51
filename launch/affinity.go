package launch

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// The CPU affinity of the calling OS thread (pid 0 is the calling thread for
// sched_getaffinity and sched_setaffinity). A child forked by a thread starts with that
// thread's affinity and keeps it across exec, and every thread it creates inherits it: so
// Run binds a rank by setting its own locked thread's affinity around the fork. The Go
// runtime starts no thread from a locked one (it asks its template thread), so none of the
// launcher's other threads is bound by accident.

// maskCPUs is the size of the masks used: the CPU numbers a topology may hold.
const maskCPUs = 1 << 16

// threadCPUs returns the CPUs the calling thread may run on, ascending.
func threadCPUs() ([]int, error) {
	s := unix.NewCPUSet(maskCPUs)
	if err := unix.SchedGetaffinityDynamic(0, s); err != nil {
		return nil, fmt.Errorf("sched_getaffinity: %w", err)
	}
	var cpus []int
	for c := range maskCPUs {
		if s.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return cpus, nil
}

// setThreadCPUs restricts the calling thread to cpus (each below maskCPUs). The caller
// must hold its thread (runtime.LockOSThread).
func setThreadCPUs(cpus []int) error {
	s := unix.NewCPUSet(maskCPUs)
	for _, c := range cpus {
		s.Set(c)
	}
	if err := unix.SchedSetaffinityDynamic(0, s); err != nil {
		return fmt.Errorf("sched_setaffinity: %w", err)
	}
	return nil
}
