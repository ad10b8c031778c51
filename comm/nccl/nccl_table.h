// NCCL as moerun calls it: our own prototypes (from NCCL 2.28's nccl.h, checked against the
// GPU host's /usr/include/nccl.h), a function-pointer table filled by dlsym (Go: symbols in
// nccl.go, same order), and one static trampoline per function. Included once, by nccl.go.
#ifndef MOE_NCCL_TABLE_H
#define MOE_NCCL_TABLE_H
#include <stddef.h>
#include <limits.h>
#include <stdint.h>

typedef int ncclResult_t;
typedef void *ncclComm_t;
typedef void *cudaStream_t;
typedef struct { char internal[128]; } ncclUniqueId;

// The leading fields of ncclConfig_t, through trafficClass (nccl.h since 2.25; `size`
// tells NCCL how much of its own, longer struct we filled: it copies `size` bytes over
// NCCL_CONFIG_INITIALIZER, so later fields keep their defaults, and `version` below 2.25
// makes it reset trafficClass to its default as well).
typedef struct {
  size_t size;
  unsigned int magic;
  unsigned int version;
  int blocking;
  int cgaClusterSize;
  int minCTAs;
  int maxCTAs;
  const char *netName;
  int splitShare;
  int trafficClass;
} moe_ncclConfig;

// share: splitShare, 1 to let a split child use its parent's channels and connections
// (much cheaper to create; parent and child must not run concurrently, and here they share
// one stream), INT_MIN for NCCL's default.
static void moe_nccl_config_init(moe_ncclConfig *c, int blocking, int share) {
  c->size = sizeof(moe_ncclConfig);
  c->magic = 0xcafebeef;              // NCCL_API_MAGIC
  c->version = 21800;                 // NCCL_VERSION(2,18,0): every field above is known
  c->blocking = blocking;
  c->cgaClusterSize = INT_MIN;        // NCCL_CONFIG_UNDEF_INT
  c->minCTAs = INT_MIN;
  c->maxCTAs = INT_MIN;
  c->netName = NULL;                  // NCCL_CONFIG_UNDEF_PTR
  c->splitShare = share;
  c->trafficClass = INT_MIN;
}

static void *moe_nccl_fns[19];
static void moe_nccl_set(int i, void *p) { moe_nccl_fns[i] = p; }

static ncclResult_t moe_ncclGetVersion(int *v) { return ((ncclResult_t (*)(int *))moe_nccl_fns[0])(v); }
static ncclResult_t moe_ncclGetUniqueId(ncclUniqueId *id) { return ((ncclResult_t (*)(ncclUniqueId *))moe_nccl_fns[1])(id); }
// ncclUniqueId is passed by value (128 bytes); Go hands us a pointer.
static ncclResult_t moe_ncclCommInitRankConfig(ncclComm_t *c, int n, ncclUniqueId *id, int r, moe_ncclConfig *cfg) {
  return ((ncclResult_t (*)(ncclComm_t *, int, ncclUniqueId, int, moe_ncclConfig *))moe_nccl_fns[2])(c, n, *id, r, cfg);
}
static ncclResult_t moe_ncclCommGetAsyncError(ncclComm_t c, ncclResult_t *e) { return ((ncclResult_t (*)(ncclComm_t, ncclResult_t *))moe_nccl_fns[3])(c, e); }
static ncclResult_t moe_ncclCommAbort(ncclComm_t c) { return ((ncclResult_t (*)(ncclComm_t))moe_nccl_fns[4])(c); }
static ncclResult_t moe_ncclCommDestroy(ncclComm_t c) { return ((ncclResult_t (*)(ncclComm_t))moe_nccl_fns[5])(c); }
static ncclResult_t moe_ncclCommFinalize(ncclComm_t c) { return ((ncclResult_t (*)(ncclComm_t))moe_nccl_fns[6])(c); }
static ncclResult_t moe_ncclCommSplit(ncclComm_t c, int color, int key, ncclComm_t *out, moe_ncclConfig *cfg) {
  return ((ncclResult_t (*)(ncclComm_t, int, int, ncclComm_t *, moe_ncclConfig *))moe_nccl_fns[7])(c, color, key, out, cfg);
}
static ncclResult_t moe_ncclAllGather(uintptr_t s, uintptr_t r, size_t n, int dt, ncclComm_t c, cudaStream_t st) {
  return ((ncclResult_t (*)(const void *, void *, size_t, int, ncclComm_t, cudaStream_t))moe_nccl_fns[8])((const void *)s, (void *)r, n, dt, c, st);
}
static ncclResult_t moe_ncclReduceScatter(uintptr_t s, uintptr_t r, size_t n, int dt, int op, ncclComm_t c, cudaStream_t st) {
  return ((ncclResult_t (*)(const void *, void *, size_t, int, int, ncclComm_t, cudaStream_t))moe_nccl_fns[9])((const void *)s, (void *)r, n, dt, op, c, st);
}
static ncclResult_t moe_ncclAllReduce(uintptr_t s, uintptr_t r, size_t n, int dt, int op, ncclComm_t c, cudaStream_t st) {
  return ((ncclResult_t (*)(const void *, void *, size_t, int, int, ncclComm_t, cudaStream_t))moe_nccl_fns[10])((const void *)s, (void *)r, n, dt, op, c, st);
}
static ncclResult_t moe_ncclBroadcast(uintptr_t s, uintptr_t r, size_t n, int dt, int root, ncclComm_t c, cudaStream_t st) {
  return ((ncclResult_t (*)(const void *, void *, size_t, int, int, ncclComm_t, cudaStream_t))moe_nccl_fns[11])((const void *)s, (void *)r, n, dt, root, c, st);
}
static ncclResult_t moe_ncclReduce(uintptr_t s, uintptr_t r, size_t n, int dt, int op, int root, ncclComm_t c, cudaStream_t st) {
  return ((ncclResult_t (*)(const void *, void *, size_t, int, int, int, ncclComm_t, cudaStream_t))moe_nccl_fns[12])((const void *)s, (void *)r, n, dt, op, root, c, st);
}
static ncclResult_t moe_ncclGroupStart(void) { return ((ncclResult_t (*)(void))moe_nccl_fns[13])(); }
static ncclResult_t moe_ncclGroupEnd(void) { return ((ncclResult_t (*)(void))moe_nccl_fns[14])(); }
static const char *moe_ncclGetErrorString(ncclResult_t r) { return ((const char *(*)(ncclResult_t))moe_nccl_fns[15])(r); }
static const char *moe_ncclGetLastError(ncclComm_t c) { return ((const char *(*)(ncclComm_t))moe_nccl_fns[16])(c); }
static ncclResult_t moe_ncclCommCount(ncclComm_t c, int *n) { return ((ncclResult_t (*)(ncclComm_t, int *))moe_nccl_fns[17])(c, n); }
static ncclResult_t moe_ncclCommUserRank(ncclComm_t c, int *r) { return ((ncclResult_t (*)(ncclComm_t, int *))moe_nccl_fns[18])(c, r); }
#endif
