// cuBLAS as moerun calls it (prototypes from CUDA 13.0's cublas_api.h, as the GPU host's
// header and ../shared/bench/gemm check them: CUDA_R_32F 0, CUDA_R_16BF 14,
// CUBLAS_COMPUTE_32F 68, CUBLAS_GEMM_DEFAULT -1, CUBLAS_OP_N 0, CUBLAS_OP_T 1), with its
// own function table and trampolines. Included once, by cublas.go.
#ifndef MOE_CUBLAS_TABLE_H
#define MOE_CUBLAS_TABLE_H
#include <stdint.h>
typedef int cublasStatus_t;
typedef void *cublasHandle_t;
static void *moe_cublas_fns[6];
static void moe_cublas_set(int i, void *p) { moe_cublas_fns[i] = p; }
static cublasStatus_t moe_cublasCreate(cublasHandle_t *h) { return ((cublasStatus_t (*)(cublasHandle_t *))moe_cublas_fns[0])(h); }
static cublasStatus_t moe_cublasDestroy(cublasHandle_t h) { return ((cublasStatus_t (*)(cublasHandle_t))moe_cublas_fns[1])(h); }
static cublasStatus_t moe_cublasSetStream(cublasHandle_t h, void *s) { return ((cublasStatus_t (*)(cublasHandle_t, void *))moe_cublas_fns[2])(h, s); }
static cublasStatus_t moe_cublasGetVersion(cublasHandle_t h, int *v) { return ((cublasStatus_t (*)(cublasHandle_t, int *))moe_cublas_fns[3])(h, v); }
// Scalars (alpha, beta) are float32 host values: compute type CUBLAS_COMPUTE_32F.
static cublasStatus_t moe_cublasGemmEx(cublasHandle_t h, int ta, int tb, int m, int n, int k, float alpha,
    uintptr_t a, int at, int lda, uintptr_t b, int bt, int ldb, float beta, uintptr_t c, int ct, int ldc) {
  return ((cublasStatus_t (*)(cublasHandle_t, int, int, int, int, int, const void *, const void *, int, int,
      const void *, int, int, const void *, void *, int, int, int, int))moe_cublas_fns[4])(
      h, ta, tb, m, n, k, &alpha, (const void *)a, at, lda, (const void *)b, bt, ldb, &beta, (void *)c, ct, ldc,
      68 /* CUBLAS_COMPUTE_32F */, -1 /* CUBLAS_GEMM_DEFAULT */);
}
// Pointer arrays live in device memory.
static cublasStatus_t moe_cublasGemmBatchedEx(cublasHandle_t h, int ta, int tb, int m, int n, int k, float alpha,
    uintptr_t a, int at, int lda, uintptr_t b, int bt, int ldb, float beta, uintptr_t c, int ct, int ldc, int count) {
  return ((cublasStatus_t (*)(cublasHandle_t, int, int, int, int, int, const void *, const void *const *, int, int,
      const void *const *, int, int, const void *, void *const *, int, int, int, int, int))moe_cublas_fns[5])(
      h, ta, tb, m, n, k, &alpha, (const void *const *)a, at, lda, (const void *const *)b, bt, ldb, &beta,
      (void *const *)c, ct, ldc, count, 68, -1);
}
#endif
