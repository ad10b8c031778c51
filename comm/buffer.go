package comm

import (
	"fmt"
	"unsafe"

	"github.com/moerun/moerun/dtype"
)

// Buffer is a typed, contiguous run of elements in host memory or in device memory.
// Host buffers view Go memory (a []float32 or []dtype.BF16 without copying); device
// buffers carry a raw device address that only a device backend may touch. A Buffer is a
// small value: pass it by value, slice it with Slice.
type Buffer struct {
	dt     dtype.DType
	n      int
	host   []byte // len n*dt.Size(); nil for device buffers
	dev    uintptr
	device int // device ordinal; -1 for host memory
}

// Float32s views s as a host buffer.
func Float32s(s []float32) Buffer {
	return Buffer{dt: dtype.Float32, n: len(s), host: bytesOf(unsafe.Pointer(unsafe.SliceData(s)), 4*len(s)), device: -1}
}

// BF16s views s as a host buffer.
func BF16s(s []dtype.BF16) Buffer {
	return Buffer{dt: dtype.BFloat16, n: len(s), host: bytesOf(unsafe.Pointer(unsafe.SliceData(s)), 2*len(s)), device: -1}
}

// Int32s views s as a host buffer.
func Int32s(s []int32) Buffer {
	return Buffer{dt: dtype.Int32, n: len(s), host: bytesOf(unsafe.Pointer(unsafe.SliceData(s)), 4*len(s)), device: -1}
}

// NewHost allocates a zeroed host buffer of n elements.
func NewHost(t dtype.DType, n int) Buffer {
	switch t {
	case dtype.Float32:
		return Float32s(make([]float32, n))
	case dtype.BFloat16:
		return BF16s(make([]dtype.BF16, n))
	case dtype.Int32:
		return Int32s(make([]int32, n))
	}
	return Buffer{dt: t, n: n, device: -1}
}

// DeviceBuffer describes n elements of type t at address ptr on device ordinal dev.
func DeviceBuffer(t dtype.DType, ptr uintptr, n, dev int) Buffer {
	return Buffer{dt: t, n: n, dev: ptr, device: dev}
}

func bytesOf(p unsafe.Pointer, n int) []byte {
	if n == 0 {
		return []byte{}
	}
	return unsafe.Slice((*byte)(p), n)
}

// DType is the element type.
func (b Buffer) DType() dtype.DType { return b.dt }

// Len is the number of elements.
func (b Buffer) Len() int { return b.n }

// Bytes is the size in bytes.
func (b Buffer) Bytes() int { return b.n * b.dt.Size() }

// OnDevice reports whether b lives in device memory.
func (b Buffer) OnDevice() bool { return b.device >= 0 }

// Device is the device ordinal, or -1 for host memory.
func (b Buffer) Device() int { return b.device }

// Ptr is the device address of a device buffer (0 for host buffers).
func (b Buffer) Ptr() uintptr { return b.dev }

// Host is the raw bytes of a host buffer (nil for device buffers). Writes go to the
// memory the buffer views.
func (b Buffer) Host() []byte { return b.host }

// Float32s views a float32 host buffer as a slice (nil otherwise).
func (b Buffer) Float32s() []float32 {
	if b.dt != dtype.Float32 || b.host == nil || b.n == 0 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(b.host))), b.n)
}

// BF16s views a bf16 host buffer as a slice (nil otherwise).
func (b Buffer) BF16s() []dtype.BF16 {
	if b.dt != dtype.BFloat16 || b.host == nil || b.n == 0 {
		return nil
	}
	return unsafe.Slice((*dtype.BF16)(unsafe.Pointer(unsafe.SliceData(b.host))), b.n)
}

// Int32s views an int32 host buffer as a slice (nil otherwise).
func (b Buffer) Int32s() []int32 {
	if b.dt != dtype.Int32 || b.host == nil || b.n == 0 {
		return nil
	}
	return unsafe.Slice((*int32)(unsafe.Pointer(unsafe.SliceData(b.host))), b.n)
}

// Slice is the n elements starting at element off. It panics on an out-of-range slice,
// like slicing a Go slice: callers slice only what they have checked.
func (b Buffer) Slice(off, n int) Buffer {
	if off < 0 || n < 0 || off+n > b.n {
		panic(fmt.Sprintf("comm: Slice(%d, %d) of a %d-element buffer", off, n, b.n))
	}
	s := b
	s.n = n
	if b.host != nil {
		sz := b.dt.Size()
		s.host = b.host[off*sz : (off+n)*sz : (off+n)*sz]
	} else {
		s.dev = b.dev + uintptr(off*b.dt.Size())
	}
	return s
}

// String describes the buffer for errors and logs.
func (b Buffer) String() string {
	if b.OnDevice() {
		return fmt.Sprintf("%d×%v on device %d", b.n, b.dt, b.device)
	}
	return fmt.Sprintf("%d×%v on host", b.n, b.dt)
}
