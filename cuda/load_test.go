package cuda

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeLib compiles C source into a shared library with gcc (skipping without gcc).
func fakeLib(t *testing.T, name, src string) string {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("gcc is needed to build a fake driver")
	}
	dir := t.TempDir()
	c := filepath.Join(dir, name+".c")
	so := filepath.Join(dir, name+".so")
	if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("gcc", "-shared", "-fPIC", "-o", so, c).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	return so
}

// A driver whose every function returns CUDA_ERROR_NO_DEVICE, and names it.
func fakeDriver(missing string) string {
	var b strings.Builder
	b.WriteString("#include <stddef.h>\n")
	for _, s := range driverSymbols {
		if s == missing {
			continue
		}
		if s == "cuGetErrorName" {
			b.WriteString("int cuGetErrorName(int r, const char **s) { *s = r == 100 ? \"CUDA_ERROR_NO_DEVICE\" : \"OTHER\"; return 0; }\n")
			continue
		}
		fmt.Fprintf(&b, "int %s() { return 100; }\n", s)
	}
	return b.String()
}

func TestLoadFailures(t *testing.T) {
	d := &Driver{}
	err := d.load([]string{"/nonexistent/libcuda.so.1"})
	if err == nil || !strings.Contains(err.Error(), "the CUDA driver (libcuda.so.1) not found (tried /nonexistent/libcuda.so.1)") {
		t.Errorf("missing library: %v", err)
	}

	missing := fakeLib(t, "libcuda-missing", fakeDriver("cuLaunchKernel"))
	err = (&Driver{}).load([]string{missing})
	if err == nil || !strings.Contains(err.Error(), `symbol "cuLaunchKernel" not found`) {
		t.Errorf("missing symbol: %v", err)
	}

	nodev := fakeLib(t, "libcuda-nodev", fakeDriver(""))
	err = (&Driver{}).load([]string{nodev})
	var ce *Error
	if !errors.As(err, &ce) || ce.Op != "cuInit" || ce.Name != "CUDA_ERROR_NO_DEVICE" || !errors.Is(err, Result(100)) {
		t.Errorf("cuInit failing: %v", err)
	}
	if err.Error() != "cuda: cuInit: CUDA_ERROR_NO_DEVICE" {
		t.Errorf("message %q", err.Error())
	}
}

func TestResultNames(t *testing.T) {
	if Result(2).Error() != "CUDA_ERROR_OUT_OF_MEMORY" || Result(12345).Error() != "CUDA error 12345" {
		t.Error(Result(2).Error(), Result(12345).Error())
	}
}

// NVRTC and cuBLAS refuse libraries that lack a symbol, naming it.
func TestToolkitLoadFailures(t *testing.T) {
	so := fakeLib(t, "libnvrtc-fake", "int nvrtcVersion(int *a, int *b) { *a = 13; *b = 0; return 0; }\n")
	if _, err := loadNVRTC([]string{so}); err == nil || !strings.Contains(err.Error(), `symbol "nvrtcCreateProgram" not found`) {
		t.Errorf("fake NVRTC: %v", err)
	}
	if _, err := loadCublas([]string{so}); err == nil || !strings.Contains(err.Error(), `symbol "cublasCreate_v2" not found`) {
		t.Errorf("fake cuBLAS: %v", err)
	}
	if _, err := loadNVRTC([]string{"/nonexistent/libnvrtc.so.13"}); err == nil || !strings.Contains(err.Error(), "NVRTC (libnvrtc.so.13) not found") {
		t.Errorf("missing NVRTC: %v", err)
	}
	e := &BlasError{Op: "cublasGemmEx", Status: 7}
	if e.Error() != "cublas: cublasGemmEx: CUBLAS_STATUS_INVALID_VALUE" {
		t.Error(e.Error())
	}
}

// The graph functions are optional: a driver without them loads, says so, and Capture
// returns ErrNoGraphs; with them, Graphs reports true.
func TestGraphsOptional(t *testing.T) {
	var b strings.Builder
	for _, s := range driverSymbols {
		fmt.Fprintf(&b, "int %s() { return 0; }\n", s) // a driver whose every call succeeds
	}
	without := fakeLib(t, "libcuda-nographs", b.String())
	d := &Driver{}
	if err := d.load([]string{without}); err != nil {
		t.Fatal(err)
	}
	if d.Graphs() {
		t.Error("graphs reported without the graph functions")
	}
	if _, err := (&Stream{d: d}).Capture(func() error { return nil }); !errors.Is(err, ErrNoGraphs) {
		t.Errorf("capture without graphs: %v", err)
	}
	for _, s := range graphSymbols {
		fmt.Fprintf(&b, "int %s() { return 0; }\n", s)
	}
	with := fakeLib(t, "libcuda-graphs", b.String())
	d = &Driver{}
	if err := d.load([]string{with}); err != nil || !d.Graphs() {
		t.Errorf("with the graph functions: graphs %v, %v", d.Graphs(), err)
	}
}
