package cuda

/*
#include "cublas_table.h"
*/
import "C"

import (
	"fmt"
	"sync"

	"github.com/moerun/moerun/dtype"
	"github.com/moerun/moerun/internal/dl"
)

var cublasSymbols = []string{"cublasCreate_v2", "cublasDestroy_v2", "cublasSetStream_v2", "cublasGetVersion_v2", "cublasGemmEx", "cublasGemmBatchedEx"}

// EnvCublasLib overrides cuBLAS's path.
const EnvCublasLib = "MOERUN_CUBLAS_LIB"

var (
	cublasOnce sync.Once
	cublasLib  *dl.Library
	cublasErr  error
)

func loadCublas(candidates []string) (*dl.Library, error) {
	lib, err := dl.Open("cuBLAS (libcublas.so.13)", candidates)
	if err != nil {
		return nil, err
	}
	for i, name := range cublasSymbols {
		p, err := lib.Sym(name)
		if err != nil {
			lib.Close()
			return nil, fmt.Errorf("cublas: %w", err)
		}
		C.moe_cublas_set(C.int(i), p)
	}
	return lib, nil
}

// cuBLAS status names (cublas_api.h, cublasStatus_t).
var cublasStatus = map[int]string{
	1: "CUBLAS_STATUS_NOT_INITIALIZED", 3: "CUBLAS_STATUS_ALLOC_FAILED", 7: "CUBLAS_STATUS_INVALID_VALUE",
	8: "CUBLAS_STATUS_ARCH_MISMATCH", 11: "CUBLAS_STATUS_MAPPING_ERROR", 13: "CUBLAS_STATUS_EXECUTION_FAILED",
	14: "CUBLAS_STATUS_INTERNAL_ERROR", 15: "CUBLAS_STATUS_NOT_SUPPORTED", 16: "CUBLAS_STATUS_LICENSE_ERROR",
}

// BlasError is a failed cuBLAS call.
type BlasError struct {
	Op     string
	Status int
}

func (e *BlasError) Error() string {
	name, ok := cublasStatus[e.Status]
	if !ok {
		name = fmt.Sprintf("cublasStatus %d", e.Status)
	}
	return fmt.Sprintf("cublas: %s: %s", e.Op, name)
}

func blasCheck(op string, s C.cublasStatus_t) error {
	if s == 0 {
		return nil
	}
	return &BlasError{Op: op, Status: int(s)}
}

// Blas is a cuBLAS handle bound to one stream.
type Blas struct {
	h       C.cublasHandle_t
	Version int
	Path    string
}

// NewBlas loads cuBLAS once (MOERUN_CUBLAS_LIB, libcublas.so.13 through the loader cache,
// the toolkit's lib directory, the Python wheel, then .so.12) and creates a handle on s in
// the current context.
func NewBlas(s *Stream) (*Blas, error) {
	cublasOnce.Do(func() {
		cublasLib, cublasErr = loadCublas(dl.Candidates(EnvCublasLib, []string{"libcublas.so.13"}, toolkitDirs, []string{"libcublas.so.12"}))
	})
	if cublasErr != nil {
		return nil, cublasErr
	}
	b := &Blas{Path: cublasLib.Path}
	if err := blasCheck("cublasCreate_v2", C.moe_cublasCreate(&b.h)); err != nil {
		return nil, err
	}
	if err := blasCheck("cublasSetStream_v2", C.moe_cublasSetStream(b.h, s.Handle())); err != nil {
		return nil, err
	}
	var v C.int
	if err := blasCheck("cublasGetVersion_v2", C.moe_cublasGetVersion(b.h, &v)); err != nil {
		return nil, err
	}
	b.Version = int(v)
	return b, nil
}

// SetStream makes the handle's later calls run on s.
func (b *Blas) SetStream(s *Stream) error {
	return blasCheck("cublasSetStream_v2", C.moe_cublasSetStream(b.h, s.Handle()))
}

// Destroy releases the handle.
func (b *Blas) Destroy() error { return blasCheck("cublasDestroy_v2", C.moe_cublasDestroy(b.h)) }

// cudaDataType values (library_types.h).
func dataType(t dtype.DType) C.int {
	if t == dtype.BFloat16 {
		return 14 // CUDA_R_16BF
	}
	return 0 // CUDA_R_32F
}

// MatmulNT sets the row-major c [n, m] = alpha · a [n, k] · bᵀ (b [m, k]) + beta · c, with
// float32 accumulation: in cuBLAS's column-major terms cᵀ = b · aᵀ, i.e. GEMM(T, N) with the
// weight first, as the bench/gemm harness measured. Types may be bf16 or float32.
func (b *Blas) MatmulNT(n, m, k int, alpha float32, a uintptr, at dtype.DType, w uintptr, wt dtype.DType, beta float32, c uintptr, ct dtype.DType) error {
	if n == 0 || m == 0 {
		return nil
	}
	const opN, opT = 0, 1
	return blasCheck("cublasGemmEx", C.moe_cublasGemmEx(b.h, opT, opN, C.int(m), C.int(n), C.int(k), C.float(alpha),
		C.uintptr_t(w), dataType(wt), C.int(k), C.uintptr_t(a), dataType(at), C.int(k), C.float(beta), C.uintptr_t(c), dataType(ct), C.int(m)))
}

// BatchedMatmulNT is MatmulNT over count triples whose device addresses are in the device
// arrays as, ws and cs (one GEMM launch: the decode path's expert GEMMs).
func (b *Blas) BatchedMatmulNT(n, m, k int, alpha float32, as uintptr, at dtype.DType, ws uintptr, wt dtype.DType, beta float32, cs uintptr, ct dtype.DType, count int) error {
	if n == 0 || m == 0 || count == 0 {
		return nil
	}
	const opN, opT = 0, 1
	return blasCheck("cublasGemmBatchedEx", C.moe_cublasGemmBatchedEx(b.h, opT, opN, C.int(m), C.int(n), C.int(k), C.float(alpha),
		C.uintptr_t(ws), dataType(wt), C.int(k), C.uintptr_t(as), dataType(at), C.int(k), C.float(beta), C.uintptr_t(cs), dataType(ct), C.int(m), C.int(count)))
}
