package topology

import (
	"fmt"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// NVML is the part of go-nvml that discovery uses. nvml.New() satisfies it, and so do
// go-nvml's mocks (pkg/nvml/mock), which tests use.
type NVML interface {
	Init() nvml.Return
	Shutdown() nvml.Return
	Extensions() nvml.ExtendedInterface
	DeviceGetCount() (int, nvml.Return)
	DeviceGetHandleByIndex(int) (nvml.Device, nvml.Return)
}

var _ NVML = nvml.Interface(nil)

// guard calls go-nvml so that nothing can end the process. go-nvml calls the C library
// directly with its symbols bound lazily: a call made before a successful Init, or to a
// function the installed driver lacks (the 13.4 header declares functions that driver 580
// does not have), is a "symbol lookup error" that kills the process with exit 127. So guard
// calls nothing before Init succeeded, looks every symbol up in the loaded library before
// its first call (a missing one reads as ERROR_FUNCTION_NOT_FOUND), and turns a panic (a
// mock's unset method) into an error.
type guard struct {
	lib     NVML
	symbols map[string]bool
}

// nvmlError is a failed NVML call: the function and what it returned.
type nvmlError struct {
	fn  string // "" when msg says it all
	ret nvml.Return
	msg string // set instead of ret for a panic
}

func (e *nvmlError) Error() string {
	if e.fn == "" {
		return e.msg
	}
	if e.msg != "" {
		return e.fn + ": " + e.msg
	}
	return e.fn + ": " + returnName(e.ret)
}

// returnName names an NVML return code. go-nvml's own names come from the library once it
// is loaded ("Not Supported"); ours stay the constants' names, which are what NVML's
// documentation and issues use.
func returnName(r nvml.Return) string {
	if n, ok := returnNames[r]; ok {
		return n
	}
	return fmt.Sprintf("NVML error %d", int32(r))
}

var returnNames = map[nvml.Return]string{
	nvml.SUCCESS:                       "SUCCESS",
	nvml.ERROR_UNINITIALIZED:           "ERROR_UNINITIALIZED",
	nvml.ERROR_INVALID_ARGUMENT:        "ERROR_INVALID_ARGUMENT",
	nvml.ERROR_NOT_SUPPORTED:           "ERROR_NOT_SUPPORTED",
	nvml.ERROR_NO_PERMISSION:           "ERROR_NO_PERMISSION",
	nvml.ERROR_NOT_FOUND:               "ERROR_NOT_FOUND",
	nvml.ERROR_INSUFFICIENT_SIZE:       "ERROR_INSUFFICIENT_SIZE",
	nvml.ERROR_DRIVER_NOT_LOADED:       "ERROR_DRIVER_NOT_LOADED",
	nvml.ERROR_TIMEOUT:                 "ERROR_TIMEOUT",
	nvml.ERROR_LIBRARY_NOT_FOUND:       "ERROR_LIBRARY_NOT_FOUND",
	nvml.ERROR_FUNCTION_NOT_FOUND:      "ERROR_FUNCTION_NOT_FOUND",
	nvml.ERROR_GPU_IS_LOST:             "ERROR_GPU_IS_LOST",
	nvml.ERROR_LIB_RM_VERSION_MISMATCH: "ERROR_LIB_RM_VERSION_MISMATCH",
	nvml.ERROR_NO_DATA:                 "ERROR_NO_DATA",
	nvml.ERROR_UNKNOWN:                 "ERROR_UNKNOWN",
}

// versioned are the functions go-nvml binds to their newest version present (_v2, _v3):
// any one of the names makes the call safe.
var versioned = map[string]bool{
	"nvmlDeviceGetCount":               true,
	"nvmlDeviceGetHandleByIndex":       true,
	"nvmlDeviceGetPciInfo":             true,
	"nvmlDeviceGetNvLinkRemotePciInfo": true,
}

// has reports whether the loaded library exports fn (see versioned).
func (g *guard) has(fn string) bool {
	if ok, seen := g.symbols[fn]; seen {
		return ok
	}
	names := []string{fn}
	if versioned[fn] {
		names = append(names, fn+"_v2", fn+"_v3")
	}
	ok := false
	for _, n := range names {
		if g.lookup(n) {
			ok = true
			break
		}
	}
	g.symbols[fn] = ok
	return ok
}

func (g *guard) lookup(name string) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false // cannot tell: do not call it
		}
	}()
	return g.lib.Extensions().LookupSymbol(name) == nil
}

// call runs f, the NVML function fn, if the library has it; see guard.
func call[T any](g *guard, fn string, f func() (T, nvml.Return)) (v T, err error) {
	if !g.has(fn) {
		return v, &nvmlError{fn: fn, ret: nvml.ERROR_FUNCTION_NOT_FOUND}
	}
	defer func() {
		if r := recover(); r != nil {
			err = &nvmlError{fn: fn, msg: fmt.Sprintf("panic: %v", r)}
		}
	}()
	v, ret := f()
	if ret != nvml.SUCCESS {
		return v, &nvmlError{fn: fn, ret: ret}
	}
	return v, nil
}

// initNVML initialises the library, or says why it could not.
func initNVML(lib NVML) (g *guard, err error) {
	defer func() {
		if r := recover(); r != nil {
			g, err = nil, &nvmlError{fn: "nvmlInit", msg: fmt.Sprintf("panic: %v", r)}
		}
	}()
	if ret := lib.Init(); ret != nvml.SUCCESS {
		if ret == nvml.ERROR_LIBRARY_NOT_FOUND { // go-nvml's dlopen failed; it keeps no reason
			return nil, &nvmlError{ret: ret, msg: "libnvidia-ml.so.1 not found"}
		}
		return nil, &nvmlError{fn: "nvmlInit", ret: ret}
	}
	return &guard{lib: lib, symbols: map[string]bool{}}, nil
}

func (g *guard) shutdown() {
	call(g, "nvmlShutdown", func() (struct{}, nvml.Return) { return struct{}{}, g.lib.Shutdown() })
}

// cString reads a NUL-terminated C string from a fixed array.
func cString(a []int8) string {
	var b strings.Builder
	for _, c := range a {
		if c == 0 {
			break
		}
		b.WriteByte(byte(c))
	}
	return b.String()
}
