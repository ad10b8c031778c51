package cuda

/*
#include <stdlib.h>
#include "nvrtc_table.h"
*/
import "C"

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"unsafe"

	"github.com/moerun/moerun/internal/dl"
)

var nvrtcSymbols = []string{
	"nvrtcVersion", "nvrtcCreateProgram", "nvrtcCompileProgram", "nvrtcGetCUBINSize", "nvrtcGetCUBIN",
	"nvrtcGetProgramLogSize", "nvrtcGetProgramLog", "nvrtcDestroyProgram", "nvrtcGetErrorString",
}

// EnvNVRTCLib overrides NVRTC's path.
const EnvNVRTCLib = "MOERUN_NVRTC_LIB"

// Where the CUDA toolkit's and the Python wheels' libraries live on the GPU hosts.
var toolkitDirs = []string{
	"/usr/local/cuda/targets/x86_64-linux/lib", "/usr/local/cuda/lib64",
	"/usr/local/lib/python3*/dist-packages/nvidia/cu13/lib", "/opt/*/.venv/lib/python3*/site-packages/nvidia/cu13/lib",
}

// NVRTC compiles CUDA C to device code at run time, with the cubins cached in memory and on
// disk (keyed by source, architecture, options and NVRTC version).
type NVRTC struct {
	lib          *dl.Library
	Major, Minor int
	mu           sync.Mutex
	cache        map[string][]byte
	dir          string // on-disk cache, "" for none
}

var (
	nvrtcOnce sync.Once
	nvrtcLib  *NVRTC
	nvrtcErr  error
)

// LoadNVRTC opens NVRTC once.
func LoadNVRTC() (*NVRTC, error) {
	nvrtcOnce.Do(func() {
		nvrtcLib, nvrtcErr = loadNVRTC(dl.Candidates(EnvNVRTCLib, []string{"libnvrtc.so.13"}, toolkitDirs, []string{"libnvrtc.so.12"}))
	})
	return nvrtcLib, nvrtcErr
}

func loadNVRTC(candidates []string) (*NVRTC, error) {
	lib, err := dl.Open("NVRTC (libnvrtc.so.13)", candidates)
	if err != nil {
		return nil, err
	}
	for i, name := range nvrtcSymbols {
		p, err := lib.Sym(name)
		if err != nil {
			lib.Close()
			return nil, fmt.Errorf("nvrtc: %w", err)
		}
		C.moe_nvrtc_set(C.int(i), p)
	}
	n := &NVRTC{lib: lib, cache: map[string][]byte{}}
	var major, minor C.int
	if r := C.moe_nvrtcVersion(&major, &minor); r != 0 {
		return nil, n.err("nvrtcVersion", r)
	}
	n.Major, n.Minor = int(major), int(minor)
	if d, err := os.UserCacheDir(); err == nil {
		n.dir = filepath.Join(d, "moerun", "nvrtc")
	}
	return n, nil
}

// Path is the library that was loaded.
func (n *NVRTC) Path() string { return n.lib.Path }

// NVRTCError is a failed NVRTC call, with the compiler's log for compilation errors.
type NVRTCError struct {
	Op, Name, Log string
}

func (e *NVRTCError) Error() string {
	if e.Log != "" {
		return fmt.Sprintf("nvrtc: %s: %s\n%s", e.Op, e.Name, e.Log)
	}
	return fmt.Sprintf("nvrtc: %s: %s", e.Op, e.Name)
}

func (n *NVRTC) err(op string, r C.nvrtcResult) error {
	return &NVRTCError{Op: op, Name: C.GoString(C.moe_nvrtcGetErrorString(r))}
}

// Compile returns the cubin of src for compute capability cc (e.g. 90), from the cache
// when it has been compiled before.
func (n *NVRTC) Compile(name, src string, cc int, options ...string) ([]byte, error) {
	opts := append([]string{fmt.Sprintf("--gpu-architecture=sm_%d", cc), "--std=c++17", "-default-device"}, options...)
	h := sha256.New()
	fmt.Fprintf(h, "%d.%d\x00%d\x00%q\x00", n.Major, n.Minor, cc, opts)
	h.Write([]byte(src))
	key := hex.EncodeToString(h.Sum(nil))
	n.mu.Lock()
	defer n.mu.Unlock()
	if b, ok := n.cache[key]; ok {
		return b, nil
	}
	file := ""
	if n.dir != "" {
		file = filepath.Join(n.dir, key+".cubin")
		if b, err := os.ReadFile(file); err == nil && len(b) > 0 {
			n.cache[key] = b
			return b, nil
		}
	}
	b, err := n.compile(name, src, opts)
	if err != nil {
		return nil, err
	}
	n.cache[key] = b
	if file != "" && os.MkdirAll(n.dir, 0o755) == nil {
		// Write then rename, so that a concurrent reader never sees half a cubin.
		tmp := fmt.Sprintf("%s.%d.tmp", file, os.Getpid())
		if os.WriteFile(tmp, b, 0o644) == nil {
			os.Rename(tmp, file)
		}
	}
	return b, nil
}

func (n *NVRTC) compile(name, src string, opts []string) ([]byte, error) {
	csrc, cname := C.CString(src), C.CString(name)
	defer C.free(unsafe.Pointer(csrc))
	defer C.free(unsafe.Pointer(cname))
	var prog C.nvrtcProgram
	if r := C.moe_nvrtcCreateProgram(&prog, csrc, cname); r != 0 {
		return nil, n.err("nvrtcCreateProgram", r)
	}
	defer C.moe_nvrtcDestroyProgram(&prog)
	copts := C.malloc(C.size_t(len(opts)) * C.size_t(unsafe.Sizeof(uintptr(0))))
	defer C.free(copts)
	arr := unsafe.Slice((**C.char)(copts), len(opts))
	for i, o := range opts {
		arr[i] = C.CString(o)
		defer C.free(unsafe.Pointer(arr[i]))
	}
	if r := C.moe_nvrtcCompileProgram(prog, C.int(len(opts)), (**C.char)(copts)); r != 0 {
		e := n.err("nvrtcCompileProgram of "+name, r).(*NVRTCError)
		var size C.size_t
		if C.moe_nvrtcGetProgramLogSize(prog, &size) == 0 && size > 1 {
			buf := make([]byte, size)
			if C.moe_nvrtcGetProgramLog(prog, (*C.char)(unsafe.Pointer(&buf[0]))) == 0 {
				e.Log = string(buf[:size-1])
			}
		}
		return nil, e
	}
	var size C.size_t
	if r := C.moe_nvrtcGetCUBINSize(prog, &size); r != 0 {
		return nil, n.err("nvrtcGetCUBINSize", r)
	}
	out := make([]byte, size)
	if size > 0 {
		if r := C.moe_nvrtcGetCUBIN(prog, (*C.char)(unsafe.Pointer(&out[0]))); r != 0 {
			return nil, n.err("nvrtcGetCUBIN", r)
		}
	}
	return out, nil
}
