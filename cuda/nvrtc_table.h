// NVRTC as moerun calls it (prototypes from CUDA 13.0's nvrtc.h; nvrtcResult is an int
// enum, nvrtcProgram an opaque pointer), with its own function table and trampolines.
// Included once, by nvrtc.go.
#ifndef MOE_NVRTC_TABLE_H
#define MOE_NVRTC_TABLE_H
#include <stddef.h>
typedef int nvrtcResult;
typedef void *nvrtcProgram;
static void *moe_nvrtc_fns[9];
static void moe_nvrtc_set(int i, void *p) { moe_nvrtc_fns[i] = p; }
static nvrtcResult moe_nvrtcVersion(int *major, int *minor) { return ((nvrtcResult (*)(int *, int *))moe_nvrtc_fns[0])(major, minor); }
static nvrtcResult moe_nvrtcCreateProgram(nvrtcProgram *p, const char *src, const char *name) {
  return ((nvrtcResult (*)(nvrtcProgram *, const char *, const char *, int, const char *const *, const char *const *))moe_nvrtc_fns[1])(p, src, name, 0, NULL, NULL);
}
static nvrtcResult moe_nvrtcCompileProgram(nvrtcProgram p, int n, const char *const *opts) { return ((nvrtcResult (*)(nvrtcProgram, int, const char *const *))moe_nvrtc_fns[2])(p, n, opts); }
static nvrtcResult moe_nvrtcGetCUBINSize(nvrtcProgram p, size_t *n) { return ((nvrtcResult (*)(nvrtcProgram, size_t *))moe_nvrtc_fns[3])(p, n); }
static nvrtcResult moe_nvrtcGetCUBIN(nvrtcProgram p, char *out) { return ((nvrtcResult (*)(nvrtcProgram, char *))moe_nvrtc_fns[4])(p, out); }
static nvrtcResult moe_nvrtcGetProgramLogSize(nvrtcProgram p, size_t *n) { return ((nvrtcResult (*)(nvrtcProgram, size_t *))moe_nvrtc_fns[5])(p, n); }
static nvrtcResult moe_nvrtcGetProgramLog(nvrtcProgram p, char *out) { return ((nvrtcResult (*)(nvrtcProgram, char *))moe_nvrtc_fns[6])(p, out); }
static nvrtcResult moe_nvrtcDestroyProgram(nvrtcProgram *p) { return ((nvrtcResult (*)(nvrtcProgram *))moe_nvrtc_fns[7])(p); }
static const char *moe_nvrtcGetErrorString(nvrtcResult r) { return ((const char *(*)(nvrtcResult))moe_nvrtc_fns[8])(r); }
#endif
