package nccl

import (
	"context"
	"runtime"
	"testing"

	"github.com/moerun/moerun/comm"
	"github.com/moerun/moerun/comm/commtest"
	"github.com/moerun/moerun/cuda"
)

// The conformance suite on real GPUs, one rank per GPU in this process: it runs on the GPU
// host from a test binary built here (go test -c) and skips elsewhere.
func TestConformanceOnGPUs(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	drv, err := cuda.Load()
	if err != nil {
		t.Skipf("no CUDA driver here: %v", err)
	}
	n, err := drv.DeviceCount()
	if err != nil || n == 0 {
		t.Skipf("no GPU here (%d, %v)", n, err)
	}
	lib, err := Load()
	if err != nil {
		t.Skipf("no NCCL here: %v", err)
	}
	t.Logf("NCCL %s from %s, %d GPU(s)", lib.VersionString(), lib.Path(), n)
	commtest.ConformanceUpTo(t, Open, n)
	// The same with the world created blocking (MOERUN_NCCL_WORLD=blocking).
	t.Run("blocking-world", func(t *testing.T) {
		commtest.ConformanceUpTo(t, func(ctx context.Context, cfg comm.Config) (comm.Communicator, error) {
			return open(ctx, cfg, true)
		}, n)
	})
}
