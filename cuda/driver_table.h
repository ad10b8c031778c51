// The CUDA driver API as moerun calls it: our own prototypes with opaque handles and int
// enums (from CUDA 13.0's cuda.h, checked against the GPU host's header), one
// function-pointer table filled by dlsym (Go: driverSymbols, same order), and one static
// trampoline per function. Nothing is left for the dynamic linker to resolve, so -z now
// and LD_BIND_NOW are harmless and a missing symbol is an error at Load. Included once,
// by driver.go: static functions are per translation unit.
#ifndef MOE_CUDA_DRIVER_H
#define MOE_CUDA_DRIVER_H
#include <stddef.h>
#include <stdint.h>
typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef void *CUcontext, *CUstream, *CUevent, *CUmodule, *CUfunction;
static void *moe_cu_fns[31];
static void moe_cu_set(int i, void *p) { moe_cu_fns[i] = p; }
static CUresult moe_cuInit(unsigned int flags) { return ((CUresult (*)(unsigned int flags))moe_cu_fns[0])(flags); }
static CUresult moe_cuDriverGetVersion(int *v) { return ((CUresult (*)(int *v))moe_cu_fns[1])(v); }
static CUresult moe_cuDeviceGetCount(int *n) { return ((CUresult (*)(int *n))moe_cu_fns[2])(n); }
static CUresult moe_cuDeviceGet(CUdevice *d, int ordinal) { return ((CUresult (*)(CUdevice *d, int ordinal))moe_cu_fns[3])(d, ordinal); }
static CUresult moe_cuDeviceGetName(char *name, int len, CUdevice d) { return ((CUresult (*)(char *name, int len, CUdevice d))moe_cu_fns[4])(name, len, d); }
static CUresult moe_cuDeviceGetAttribute(int *v, int attr, CUdevice d) { return ((CUresult (*)(int *v, int attr, CUdevice d))moe_cu_fns[5])(v, attr, d); }
static CUresult moe_cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d) { return ((CUresult (*)(CUcontext *c, CUdevice d))moe_cu_fns[6])(c, d); }
static CUresult moe_cuCtxSetCurrent(CUcontext c) { return ((CUresult (*)(CUcontext c))moe_cu_fns[7])(c); }
static CUresult moe_cuCtxSynchronize(void) { return ((CUresult (*)(void))moe_cu_fns[8])(); }
static CUresult moe_cuMemAlloc_v2(CUdeviceptr *p, size_t n) { return ((CUresult (*)(CUdeviceptr *p, size_t n))moe_cu_fns[9])(p, n); }
static CUresult moe_cuMemFree_v2(CUdeviceptr p) { return ((CUresult (*)(CUdeviceptr p))moe_cu_fns[10])(p); }
static CUresult moe_cuMemGetInfo_v2(size_t *free, size_t *total) { return ((CUresult (*)(size_t *free, size_t *total))moe_cu_fns[11])(free, total); }
static CUresult moe_cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, CUstream s) { return ((CUresult (*)(CUdeviceptr dst, const void *src, size_t n, CUstream s))moe_cu_fns[12])(dst, src, n, s); }
static CUresult moe_cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n, CUstream s) { return ((CUresult (*)(void *dst, CUdeviceptr src, size_t n, CUstream s))moe_cu_fns[13])(dst, src, n, s); }
static CUresult moe_cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s) { return ((CUresult (*)(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s))moe_cu_fns[14])(dst, src, n, s); }
static CUresult moe_cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, CUstream s) { return ((CUresult (*)(CUdeviceptr dst, unsigned char v, size_t n, CUstream s))moe_cu_fns[15])(dst, v, n, s); }
static CUresult moe_cuStreamCreate(CUstream *s, unsigned int flags) { return ((CUresult (*)(CUstream *s, unsigned int flags))moe_cu_fns[16])(s, flags); }
static CUresult moe_cuStreamDestroy_v2(CUstream s) { return ((CUresult (*)(CUstream s))moe_cu_fns[17])(s); }
static CUresult moe_cuStreamSynchronize(CUstream s) { return ((CUresult (*)(CUstream s))moe_cu_fns[18])(s); }
static CUresult moe_cuStreamQuery(CUstream s) { return ((CUresult (*)(CUstream s))moe_cu_fns[19])(s); }
static CUresult moe_cuEventCreate(CUevent *e, unsigned int flags) { return ((CUresult (*)(CUevent *e, unsigned int flags))moe_cu_fns[20])(e, flags); }
static CUresult moe_cuEventDestroy_v2(CUevent e) { return ((CUresult (*)(CUevent e))moe_cu_fns[21])(e); }
static CUresult moe_cuEventRecord(CUevent e, CUstream s) { return ((CUresult (*)(CUevent e, CUstream s))moe_cu_fns[22])(e, s); }
static CUresult moe_cuEventSynchronize(CUevent e) { return ((CUresult (*)(CUevent e))moe_cu_fns[23])(e); }
static CUresult moe_cuEventElapsedTime(float *ms, CUevent a, CUevent b) { return ((CUresult (*)(float *ms, CUevent a, CUevent b))moe_cu_fns[24])(ms, a, b); }
static CUresult moe_cuModuleLoadData(CUmodule *m, const void *image) { return ((CUresult (*)(CUmodule *m, const void *image))moe_cu_fns[25])(m, image); }
static CUresult moe_cuModuleGetFunction(CUfunction *f, CUmodule m, const char *name) { return ((CUresult (*)(CUfunction *f, CUmodule m, const char *name))moe_cu_fns[26])(f, m, name); }
static CUresult moe_cuModuleUnload(CUmodule m) { return ((CUresult (*)(CUmodule m))moe_cu_fns[27])(m); }
static CUresult moe_cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by, unsigned int bz, unsigned int shmem, CUstream s, void **params, void **extra) { return ((CUresult (*)(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by, unsigned int bz, unsigned int shmem, CUstream s, void **params, void **extra))moe_cu_fns[28])(f, gx, gy, gz, bx, by, bz, shmem, s, params, extra); }
static CUresult moe_cuGetErrorName(int r, const char **s) { return ((CUresult (*)(int r, const char **s))moe_cu_fns[29])(r, s); }
// cuda.h: CUresult cuStreamWaitEvent(CUstream hStream, CUevent hEvent, unsigned int Flags)
// (as the public G-Watch/G-Watch hijack of it declares it; not yet grepped on a GPU host).
static CUresult moe_cuStreamWaitEvent(CUstream s, CUevent e, unsigned int flags) { return ((CUresult (*)(CUstream, CUevent, unsigned int))moe_cu_fns[30])(s, e, flags); }

// CUDA graphs (stream capture and replay), bound when the driver has them: the decode path
// replays one captured forward pass instead of launching its kernels one by one.
typedef void *CUgraph, *CUgraphExec;
static void *moe_cu_graph_fns[6];
static void moe_cu_graph_set(int i, void *p) { moe_cu_graph_fns[i] = p; }
static CUresult moe_cuStreamBeginCapture_v2(CUstream s, int mode) { return ((CUresult (*)(CUstream, int))moe_cu_graph_fns[0])(s, mode); }
static CUresult moe_cuStreamEndCapture(CUstream s, CUgraph *g) { return ((CUresult (*)(CUstream, CUgraph *))moe_cu_graph_fns[1])(s, g); }
static CUresult moe_cuGraphInstantiateWithFlags(CUgraphExec *e, CUgraph g, unsigned long long flags) { return ((CUresult (*)(CUgraphExec *, CUgraph, unsigned long long))moe_cu_graph_fns[2])(e, g, flags); }
static CUresult moe_cuGraphLaunch(CUgraphExec e, CUstream s) { return ((CUresult (*)(CUgraphExec, CUstream))moe_cu_graph_fns[3])(e, s); }
static CUresult moe_cuGraphExecDestroy(CUgraphExec e) { return ((CUresult (*)(CUgraphExec))moe_cu_graph_fns[4])(e); }
static CUresult moe_cuGraphDestroy(CUgraph g) { return ((CUresult (*)(CUgraph))moe_cu_graph_fns[5])(g); }
#endif
