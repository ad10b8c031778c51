// Package cuda binds the CUDA driver API at run time (dlopen, no CUDA headers or libraries
// at build time): devices and their primary contexts, device memory and asynchronous
// copies, streams and events. Every driver error becomes a Go error carrying the driver's
// error name. CUDA contexts are current per OS thread: callers lock their goroutine to its
// thread (runtime.LockOSThread) and call Device.MakeCurrent before anything else.
package cuda

/*
#include <stdlib.h>
#include "driver_table.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"unsafe"

	"github.com/moerun/moerun/internal/dl"
)

// Result is a CUresult other than CUDA_SUCCESS.
type Result int

// Names of the codes moerun meets, for errors raised before the driver is loaded (the
// driver's cuGetErrorName names the rest). Values from cuda.h's cudaError_enum.
var resultNames = map[Result]string{
	1: "CUDA_ERROR_INVALID_VALUE", 2: "CUDA_ERROR_OUT_OF_MEMORY", 3: "CUDA_ERROR_NOT_INITIALIZED",
	4: "CUDA_ERROR_DEINITIALIZED", 100: "CUDA_ERROR_NO_DEVICE", 101: "CUDA_ERROR_INVALID_DEVICE",
	200: "CUDA_ERROR_INVALID_IMAGE", 201: "CUDA_ERROR_INVALID_CONTEXT", 209: "CUDA_ERROR_NO_BINARY_FOR_GPU",
	218: "CUDA_ERROR_INVALID_PTX", 400: "CUDA_ERROR_INVALID_HANDLE", 500: "CUDA_ERROR_NOT_FOUND",
	600: "CUDA_ERROR_NOT_READY", 700: "CUDA_ERROR_ILLEGAL_ADDRESS", 701: "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES",
	702: "CUDA_ERROR_LAUNCH_TIMEOUT", 719: "CUDA_ERROR_LAUNCH_FAILED", 999: "CUDA_ERROR_UNKNOWN",
}

// Name is the driver's name of the code.
func (r Result) Name() string {
	if n, ok := resultNames[r]; ok {
		return n
	}
	return fmt.Sprintf("CUDA error %d", int(r))
}

func (r Result) Error() string { return r.Name() }

// errNotReady is CUDA_ERROR_NOT_READY (cuStreamQuery of a busy stream).
const errNotReady Result = 600

// Driver is the loaded libcuda.
type Driver struct {
	lib    *dl.Library
	graphs bool // the CUDA graph functions were found
	once   sync.Once
	err    error
}

var (
	loadMu sync.Mutex
	loaded *Driver
)

// EnvDriverLib overrides the driver library's path.
const EnvDriverLib = "MOERUN_CUDA_LIB"

// Load opens libcuda (MOERUN_CUDA_LIB, else libcuda.so.1 through the loader cache), binds
// every function of the table and initialises the driver. It is safe to call many times;
// the first call decides.
func Load() (*Driver, error) {
	loadMu.Lock()
	defer loadMu.Unlock()
	if loaded != nil {
		return loaded, loaded.err
	}
	d := &Driver{}
	loaded = d
	d.err = d.load(dl.Candidates(EnvDriverLib, []string{"libcuda.so.1"}, nil, []string{"libcuda.so"}))
	return d, d.err
}

func (d *Driver) load(candidates []string) error {
	lib, err := dl.Open("the CUDA driver (libcuda.so.1)", candidates)
	if err != nil {
		return err
	}
	for i, name := range driverSymbols {
		p, err := lib.Sym(name)
		if name == "cuEventElapsedTime" {
			// CUDA 12.8 added _v2 (the name cuda.h maps to since CUDA 13); same signature.
			if p2, err2 := lib.Sym("cuEventElapsedTime_v2"); err2 == nil {
				p, err = p2, nil
			}
		}
		if err != nil {
			lib.Close()
			return fmt.Errorf("cuda: %w", err)
		}
		C.moe_cu_set(C.int(i), p)
	}
	d.graphs = true
	for i, name := range graphSymbols {
		p, err := lib.Sym(name)
		if err != nil {
			d.graphs = false
			break
		}
		C.moe_cu_graph_set(C.int(i), p)
	}
	d.lib = lib
	if err := d.check("cuInit", C.moe_cuInit(0)); err != nil {
		return err
	}
	return nil
}

// Path is the library that was loaded.
func (d *Driver) Path() string { return d.lib.Path }

func (d *Driver) check(op string, r C.CUresult) error {
	if r == 0 {
		return nil
	}
	res := Result(r)
	name := res.Name()
	var s *C.char
	if d.lib != nil && C.moe_cuGetErrorName(r, &s) == 0 && s != nil {
		name = C.GoString(s)
		resultNames[res] = name // cache, so errors name themselves without the driver
	}
	return &Error{Op: op, Code: res, Name: name}
}

// Error is a failed driver call.
type Error struct {
	Op   string
	Code Result
	Name string
}

func (e *Error) Error() string { return fmt.Sprintf("cuda: %s: %s", e.Op, e.Name) }
func (e *Error) Unwrap() error { return e.Code }

// Version is the driver's CUDA version, e.g. 13000 for 13.0.
func (d *Driver) Version() (int, error) {
	var v C.int
	return int(v), d.check("cuDriverGetVersion", C.moe_cuDriverGetVersion(&v))
}

// DeviceCount is the number of visible devices.
func (d *Driver) DeviceCount() (int, error) {
	var n C.int
	return int(n), d.check("cuDeviceGetCount", C.moe_cuDeviceGetCount(&n))
}

// Device is one GPU with its primary context.
type Device struct {
	d       *Driver
	Ordinal int
	dev     C.CUdevice
	ctx     C.CUcontext
}

// Device attributes (CUdevice_attribute in cuda.h).
const (
	attrMultiprocessors = 16
	attrCCMajor         = 75
	attrCCMinor         = 76
)

// Device retains device ordinal's primary context (shared with NCCL's and cuBLAS's runtime
// use of the device; cuCtxCreate is avoided: its ABI changed in CUDA 13).
func (d *Driver) Device(ordinal int) (*Device, error) {
	dev := &Device{d: d, Ordinal: ordinal}
	if err := d.check(fmt.Sprintf("cuDeviceGet(%d)", ordinal), C.moe_cuDeviceGet(&dev.dev, C.int(ordinal))); err != nil {
		return nil, err
	}
	if err := d.check("cuDevicePrimaryCtxRetain", C.moe_cuDevicePrimaryCtxRetain(&dev.ctx, dev.dev)); err != nil {
		return nil, err
	}
	return dev, nil
}

// Driver is the driver the device came from.
func (g *Device) Driver() *Driver { return g.d }

// MakeCurrent makes the device's context current on the calling OS thread (lock the
// goroutine to its thread first).
func (g *Device) MakeCurrent() error {
	return g.d.check("cuCtxSetCurrent", C.moe_cuCtxSetCurrent(g.ctx))
}

// Name is the device's marketing name.
func (g *Device) Name() (string, error) {
	buf := make([]byte, 256)
	if err := g.d.check("cuDeviceGetName", C.moe_cuDeviceGetName((*C.char)(unsafe.Pointer(&buf[0])), 256, g.dev)); err != nil {
		return "", err
	}
	return strings.TrimRight(string(buf), "\x00"), nil
}

func (g *Device) attr(a int) (int, error) {
	var v C.int
	return int(v), g.d.check("cuDeviceGetAttribute", C.moe_cuDeviceGetAttribute(&v, C.int(a), g.dev))
}

// ComputeCapability is the SM version, e.g. 90 for Hopper.
func (g *Device) ComputeCapability() (int, error) {
	major, err := g.attr(attrCCMajor)
	if err != nil {
		return 0, err
	}
	minor, err := g.attr(attrCCMinor)
	return 10*major + minor, err
}

// Multiprocessors is the number of SMs.
func (g *Device) Multiprocessors() (int, error) { return g.attr(attrMultiprocessors) }

// MemInfo is the free and total device memory in bytes.
func (g *Device) MemInfo() (free, total uint64, err error) {
	var f, t C.size_t
	err = g.d.check("cuMemGetInfo_v2", C.moe_cuMemGetInfo_v2(&f, &t))
	return uint64(f), uint64(t), err
}

// Alloc allocates n bytes of device memory (at least one byte, so that every buffer has a
// distinct address).
func (g *Device) Alloc(n int) (uintptr, error) {
	var p C.CUdeviceptr
	if err := g.d.check(fmt.Sprintf("cuMemAlloc_v2 (%d bytes) on device %d", n, g.Ordinal), C.moe_cuMemAlloc_v2(&p, C.size_t(max(n, 1)))); err != nil {
		return 0, err
	}
	return uintptr(p), nil
}

// Free releases device memory from Alloc.
func (g *Device) Free(p uintptr) error {
	if p == 0 {
		return nil
	}
	return g.d.check("cuMemFree_v2", C.moe_cuMemFree_v2(C.CUdeviceptr(p)))
}

// Synchronize waits for all work of the context.
func (g *Device) Synchronize() error { return g.d.check("cuCtxSynchronize", C.moe_cuCtxSynchronize()) }

// Stream is a CUDA stream.
type Stream struct {
	d *Driver
	s C.CUstream
}

// NewStream creates a stream that does not synchronise with the legacy default stream.
func (g *Device) NewStream() (*Stream, error) {
	s := &Stream{d: g.d}
	const nonBlocking = 1 // CU_STREAM_NON_BLOCKING
	return s, g.d.check("cuStreamCreate", C.moe_cuStreamCreate(&s.s, nonBlocking))
}

// Handle is the raw CUstream, for libraries (NCCL, cuBLAS) that take one.
func (s *Stream) Handle() unsafe.Pointer { return unsafe.Pointer(s.s) }

// Destroy releases the stream.
func (s *Stream) Destroy() error {
	return s.d.check("cuStreamDestroy_v2", C.moe_cuStreamDestroy_v2(s.s))
}

// Synchronize waits for the stream's work.
func (s *Stream) Synchronize() error {
	return s.d.check("cuStreamSynchronize", C.moe_cuStreamSynchronize(s.s))
}

// WaitEvent makes the stream's later work wait until e's recorded work has finished
// (on the device: the host does not wait). e may be recorded again after this returns.
func (s *Stream) WaitEvent(e *Event) error {
	return s.d.check("cuStreamWaitEvent", C.moe_cuStreamWaitEvent(s.s, e.e, 0))
}

// Done reports whether the stream's work has finished, without blocking.
func (s *Stream) Done() (bool, error) {
	r := C.moe_cuStreamQuery(s.s)
	if Result(r) == errNotReady {
		return false, nil
	}
	return r == 0, s.d.check("cuStreamQuery", r)
}

// CopyHtoD enqueues a copy of host bytes to device memory. The host memory must stay
// untouched until the stream reaches the copy (pageable memory makes it synchronous).
func (s *Stream) CopyHtoD(dst uintptr, src []byte) error {
	if len(src) == 0 {
		return nil
	}
	return s.d.check("cuMemcpyHtoDAsync_v2", C.moe_cuMemcpyHtoDAsync_v2(C.CUdeviceptr(dst), unsafe.Pointer(&src[0]), C.size_t(len(src)), s.s))
}

// CopyDtoH enqueues a copy of device memory into host bytes.
func (s *Stream) CopyDtoH(dst []byte, src uintptr) error {
	if len(dst) == 0 {
		return nil
	}
	return s.d.check("cuMemcpyDtoHAsync_v2", C.moe_cuMemcpyDtoHAsync_v2(unsafe.Pointer(&dst[0]), C.CUdeviceptr(src), C.size_t(len(dst)), s.s))
}

// CopyDtoD enqueues a device-to-device copy of n bytes.
func (s *Stream) CopyDtoD(dst, src uintptr, n int) error {
	if n == 0 {
		return nil
	}
	return s.d.check("cuMemcpyDtoDAsync_v2", C.moe_cuMemcpyDtoDAsync_v2(C.CUdeviceptr(dst), C.CUdeviceptr(src), C.size_t(n), s.s))
}

// Memset enqueues setting n bytes to v.
func (s *Stream) Memset(dst uintptr, v byte, n int) error {
	if n == 0 {
		return nil
	}
	return s.d.check("cuMemsetD8Async", C.moe_cuMemsetD8Async(C.CUdeviceptr(dst), C.uchar(v), C.size_t(n), s.s))
}

// Event marks a point in a stream, for timing.
type Event struct {
	d *Driver
	e C.CUevent
}

// NewEvent creates a timing event.
func (g *Device) NewEvent() (*Event, error) {
	e := &Event{d: g.d}
	return e, g.d.check("cuEventCreate", C.moe_cuEventCreate(&e.e, 0))
}

// Record enqueues the event on s.
func (e *Event) Record(s *Stream) error {
	return e.d.check("cuEventRecord", C.moe_cuEventRecord(e.e, s.s))
}

// Synchronize waits for the event.
func (e *Event) Synchronize() error {
	return e.d.check("cuEventSynchronize", C.moe_cuEventSynchronize(e.e))
}

// Since is the time in milliseconds from start to e (both recorded and complete).
func (e *Event) Since(start *Event) (float32, error) {
	var ms C.float
	return float32(ms), e.d.check("cuEventElapsedTime", C.moe_cuEventElapsedTime(&ms, start.e, e.e))
}

// Destroy releases the event.
func (e *Event) Destroy() error { return e.d.check("cuEventDestroy_v2", C.moe_cuEventDestroy_v2(e.e)) }

// ErrNoDevice is returned by callers that find no usable device.
var ErrNoDevice = errors.New("cuda: no GPU device")

// Module is device code loaded into the context (a cubin from NVRTC).
type Module struct {
	d *Driver
	m C.CUmodule
}

// LoadModule loads a cubin into the current context.
func (g *Device) LoadModule(cubin []byte) (*Module, error) {
	if len(cubin) == 0 {
		return nil, errors.New("cuda: empty module image")
	}
	m := &Module{d: g.d}
	return m, g.d.check("cuModuleLoadData", C.moe_cuModuleLoadData(&m.m, unsafe.Pointer(&cubin[0])))
}

// Unload releases the module.
func (m *Module) Unload() error { return m.d.check("cuModuleUnload", C.moe_cuModuleUnload(m.m)) }

// Function is a kernel of a module.
type Function struct {
	d    *Driver
	f    C.CUfunction
	Name string
}

// Function looks a kernel up by its (extern "C") name.
func (m *Module) Function(name string) (*Function, error) {
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	f := &Function{d: m.d, Name: name}
	return f, m.d.check("cuModuleGetFunction("+name+")", C.moe_cuModuleGetFunction(&f.f, m.m, cs))
}

// Launch enqueues the kernel on s. Arguments are passed by value in their order: uintptr
// (device pointers), int32, uint32, int64, uint64 and float32; int is passed as int32.
func (f *Function) Launch(s *Stream, grid, block [3]uint32, shmem uint32, args ...any) error {
	// C memory holds the values (8 bytes a slot) and the array of pointers to them that
	// cuLaunchKernel reads: Go memory must not be handed to C as an array of pointers.
	n := len(args)
	mem := C.calloc(C.size_t(max(n, 1)), 16)
	defer C.free(mem)
	ptrs := unsafe.Slice((*unsafe.Pointer)(unsafe.Add(mem, n*8)), max(n, 1))
	for i, a := range args {
		slot := unsafe.Add(mem, i*8)
		switch v := a.(type) {
		case uintptr:
			*(*uint64)(slot) = uint64(v)
		case uint64:
			*(*uint64)(slot) = v
		case int64:
			*(*int64)(slot) = v
		case int32:
			*(*int32)(slot) = v
		case int:
			*(*int32)(slot) = int32(v)
		case uint32:
			*(*uint32)(slot) = v
		case float32:
			*(*float32)(slot) = v
		default:
			return fmt.Errorf("cuda: launch %s: argument %d has unsupported type %T", f.Name, i, a)
		}
		ptrs[i] = slot
	}
	var params *unsafe.Pointer
	if n > 0 {
		params = &ptrs[0]
	}
	return f.d.check("cuLaunchKernel("+f.Name+")", C.moe_cuLaunchKernel(f.f, C.uint(grid[0]), C.uint(grid[1]), C.uint(grid[2]),
		C.uint(block[0]), C.uint(block[1]), C.uint(block[2]), C.uint(shmem), s.s, params, nil))
}

// ErrNoGraphs is returned by graph calls when the driver lacks the CUDA graph functions.
var ErrNoGraphs = errors.New("cuda: this driver has no CUDA graph functions")

// Graphs reports whether the driver has the CUDA graph functions.
func (d *Driver) Graphs() bool { return d.graphs }

// Graph is a captured sequence of work on a stream, ready to be replayed.
type Graph struct {
	d    *Driver
	g    C.CUgraph
	exec C.CUgraphExec
}

// Capture records the work that record enqueues on s (nothing runs) and instantiates it
// as a graph. Relaxed mode: other threads may keep calling CUDA meanwhile.
func (s *Stream) Capture(record func() error) (*Graph, error) {
	if !s.d.graphs {
		return nil, ErrNoGraphs
	}
	const relaxed = 2 // CU_STREAM_CAPTURE_MODE_RELAXED
	if err := s.d.check("cuStreamBeginCapture_v2", C.moe_cuStreamBeginCapture_v2(s.s, relaxed)); err != nil {
		return nil, err
	}
	recErr := record()
	g := &Graph{d: s.d}
	endErr := s.d.check("cuStreamEndCapture", C.moe_cuStreamEndCapture(s.s, &g.g))
	if recErr != nil || endErr != nil {
		if g.g != nil {
			C.moe_cuGraphDestroy(g.g)
		}
		return nil, errors.Join(recErr, endErr)
	}
	if err := s.d.check("cuGraphInstantiateWithFlags", C.moe_cuGraphInstantiateWithFlags(&g.exec, g.g, 0)); err != nil {
		C.moe_cuGraphDestroy(g.g)
		return nil, err
	}
	return g, nil
}

// Launch replays the graph on s.
func (g *Graph) Launch(s *Stream) error {
	return g.d.check("cuGraphLaunch", C.moe_cuGraphLaunch(g.exec, s.s))
}

// Destroy releases the graph.
func (g *Graph) Destroy() error {
	err := g.d.check("cuGraphExecDestroy", C.moe_cuGraphExecDestroy(g.exec))
	return errors.Join(err, g.d.check("cuGraphDestroy", C.moe_cuGraphDestroy(g.g)))
}
