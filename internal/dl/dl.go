// Package dl opens shared libraries at run time (dlopen) and looks up their symbols, so
// that moerun builds with no GPU toolchain and runs on machines without one: a missing
// library or symbol is a Go error, never a crash. dlerror's state is per thread, so every
// dlopen/dlsym/dlerror sequence runs on a locked OS thread.
package dl

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"unsafe"
)

// Library is an opened shared library.
type Library struct {
	// Path is the name it was opened by (a soname resolved by the loader, or a full path).
	Path   string
	handle unsafe.Pointer
}

func dlerror() string {
	if e := C.dlerror(); e != nil {
		return C.GoString(e)
	}
	return "unknown dlopen error"
}

// Open tries each candidate in order and returns the first that loads. The error lists
// every candidate with the loader's reason.
func Open(what string, candidates []string) (*Library, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var reasons []string
	for _, c := range candidates {
		cs := C.CString(c)
		C.dlerror()
		h := C.dlopen(cs, C.RTLD_NOW|C.RTLD_GLOBAL)
		C.free(unsafe.Pointer(cs))
		if h != nil {
			return &Library{Path: c, handle: h}, nil
		}
		reasons = append(reasons, dlerror())
	}
	if len(candidates) == 0 {
		return nil, fmt.Errorf("%s: no candidate library", what)
	}
	return nil, fmt.Errorf("%s not found (tried %s): %s", what, strings.Join(candidates, ", "), reasons[0])
}

// Sym returns the address of a symbol.
func (l *Library) Sym(name string) (unsafe.Pointer, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	C.dlerror()
	p := C.dlsym(l.handle, cs)
	if p == nil {
		return nil, fmt.Errorf("symbol %q not found in %s: %s", name, l.Path, dlerror())
	}
	return p, nil
}

// Close releases the library (its symbols must no longer be called).
func (l *Library) Close() error {
	if l == nil || l.handle == nil {
		return nil
	}
	if C.dlclose(l.handle) != 0 {
		return errors.New(dlerror())
	}
	l.handle = nil
	return nil
}

// Candidates is the search order of ARCHITECTURE.md: the environment override, then the
// sonames through the loader cache, then each directory (the CUDA toolkit's lib directory,
// Python wheels' site-packages/nvidia/*/lib), then the fallback names (.so.12).
func Candidates(envVar string, sonames, dirs, fallbacks []string) []string {
	var out []string
	if v := os.Getenv(envVar); v != "" {
		return []string{v} // an explicit choice is not second-guessed
	}
	out = append(out, sonames...)
	for _, d := range dirs {
		matches, _ := filepath.Glob(d)
		for _, m := range matches {
			for _, s := range sonames {
				p := filepath.Join(m, s)
				if _, err := os.Stat(p); err == nil {
					out = append(out, p)
				}
			}
		}
	}
	return append(out, fallbacks...)
}
