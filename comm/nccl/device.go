package nccl

import (
	"context"
	"fmt"
	"sync"

	"github.com/moerun/moerun/comm"
	"github.com/moerun/moerun/cuda"
	"github.com/moerun/moerun/dtype"
)

// device is the GPU of this process with the one stream that every communicator of the
// process enqueues on, so that collectives run in the order they were issued.
type device struct {
	gpu     *cuda.Device
	stream  *cuda.Stream
	scratch comm.Buffer // one float for Barrier
}

var (
	devMu   sync.Mutex
	devices = map[int]*device{}
)

// openDevice makes ordinal's primary context current on this thread and returns the
// process's device record (created once).
func openDevice(ordinal int) (*device, error) {
	if ordinal < 0 {
		return nil, fmt.Errorf("nccl: no GPU assigned to this rank (device %d)", ordinal)
	}
	drv, err := cuda.Load()
	if err != nil {
		return nil, err
	}
	devMu.Lock()
	defer devMu.Unlock()
	if d, ok := devices[ordinal]; ok {
		return d, d.gpu.MakeCurrent()
	}
	gpu, err := drv.Device(ordinal)
	if err != nil {
		return nil, err
	}
	if err := gpu.MakeCurrent(); err != nil {
		return nil, err
	}
	s, err := gpu.NewStream()
	if err != nil {
		return nil, err
	}
	p, err := gpu.Alloc(4)
	if err != nil {
		return nil, err
	}
	d := &device{gpu: gpu, stream: s, scratch: comm.DeviceBuffer(dtype.Float32, p, 1, ordinal)}
	devices[ordinal] = d
	return d, nil
}

// Memory gives callers device buffers on this communicator's GPU and moves data to and
// from them on its stream (comm.MemoryOf).
func (c *Comm) Memory() comm.Memory { return (*memory)(c) }

type memory Comm

func (m *memory) Alloc(t dtype.DType, n int) (comm.Buffer, error) {
	p, err := m.dev.gpu.Alloc(n * t.Size())
	if err != nil {
		return comm.Buffer{}, err
	}
	return comm.DeviceBuffer(t, p, n, m.dev.gpu.Ordinal), nil
}

func (m *memory) Free(b comm.Buffer) error { return m.dev.gpu.Free(b.Ptr()) }

func (m *memory) Upload(dst, src comm.Buffer) error {
	if dst.Bytes() != src.Bytes() {
		return fmt.Errorf("nccl: upload of %v into %v", src, dst)
	}
	if err := m.dev.stream.CopyHtoD(dst.Ptr(), src.Host()); err != nil {
		return err
	}
	return m.dev.stream.Synchronize()
}

func (m *memory) Download(dst, src comm.Buffer) error {
	if dst.Bytes() != src.Bytes() {
		return fmt.Errorf("nccl: download of %v into %v", src, dst)
	}
	if err := m.dev.stream.CopyDtoH(dst.Host(), src.Ptr()); err != nil {
		return err
	}
	return m.dev.stream.Synchronize()
}

func (m *memory) Sync(ctx context.Context) error { return (*Comm)(m).Sync(ctx) }

// CopyDevice enqueues a copy between two device buffers on the stream (comm.Self's
// collectives of one rank).
func (m *memory) CopyDevice(dst, src comm.Buffer) error {
	if dst.Bytes() != src.Bytes() || !dst.OnDevice() || !src.OnDevice() {
		return fmt.Errorf("nccl: device copy of %v into %v", src, dst)
	}
	return m.dev.stream.CopyDtoD(dst.Ptr(), src.Ptr(), dst.Bytes())
}

var _ comm.DeviceCopier = (*memory)(nil)

// CUDA is the GPU and the stream of this communicator, for compute that must run in order
// with its collectives.
func (c *Comm) CUDA() (*cuda.Device, *cuda.Stream) { return c.dev.gpu, c.dev.stream }
