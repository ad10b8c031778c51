// Device kernels of moe/gpu, compiled at first use by NVRTC for the device's architecture.
// Element types: dt 0 = float32, 1 = bf16 (raw bits in unsigned short).

typedef unsigned long long u64;
typedef unsigned int u32;

__device__ __forceinline__ float bf16_to_f32(unsigned short b) { return __uint_as_float(((u32)b) << 16); }

// Round to nearest even, as dtype.FromFloat32 (NaN kept quiet).
__device__ __forceinline__ unsigned short f32_to_bf16(float f) {
  u32 u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (unsigned short)(u >> 16);
}

__device__ __forceinline__ float load(const void *p, long long i, int dt) {
  return dt == 1 ? bf16_to_f32(((const unsigned short *)p)[i]) : ((const float *)p)[i];
}

__device__ __forceinline__ void store(void *p, long long i, float v, int dt) {
  if (dt == 1) ((unsigned short *)p)[i] = f32_to_bf16(v);
  else ((float *)p)[i] = v;
}

// moe.Uniform: three SplitMix64 steps, 24 random bits to [-1, 1).
__device__ __forceinline__ u64 mix(u64 z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

__device__ __forceinline__ float uniform(u64 seed, u32 t, int expert, int row, int col) {
  u64 h = mix(seed ^ ((u64)t << 32));
  h = mix(h ^ (u64)(u32)expert);
  h = mix(h ^ (((u64)(u32)row) << 32) ^ (u64)(u32)col);
  return (float)((long long)(h >> 40) - (1ll << 23)) / 8388608.0f;
}

// moe.Gen.At for every element of a rows×cols tensor (experts: device array or null).
extern "C" __global__ void moe_fill(void *out, int dt, int rows, int cols, u64 seed, u32 ta, u32 tb,
                                    int blockRows, int splitAt, const int *experts, int rowOffset,
                                    int colOffset, int validRows, int validCols, float scale) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (long long)rows * cols) return;
  int r = (int)(i / cols), c = (int)(i % cols);
  int b = 0, j = r;
  if (blockRows > 0) { b = r / blockRows; j = r % blockRows; }
  float v = 0.0f;
  if (!((validCols > 0 && c >= validCols) || (validRows > 0 && j >= validRows))) {
    int expert = experts ? experts[b] : b;
    u32 t = ta;
    if (splitAt > 0 && j >= splitAt) { t = tb; j -= splitAt; }
    v = uniform(seed, t, expert, j + rowOffset, c + colOffset) * scale;
  }
  store(out, i, v, dt);
}

// dst = a·dst + b·src, computed in float32.
extern "C" __global__ void moe_axpby(void *dst, const void *src, int dt, long long n, float a, float b) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) store(dst, i, a * load(dst, i, dt) + b * load(src, i, dt), dt);
}

// The leading columns of src into dst, zeroing dst's other columns (element size esz bytes).
extern "C" __global__ void moe_copycols(unsigned char *dst, const unsigned char *src, int rows, int dcols, int scols, int esz) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  long long rowBytes = (long long)dcols * esz;
  if (i >= (long long)rows * rowBytes) return;
  long long r = i / rowBytes, byteInRow = i % rowBytes;
  long long col = byteInRow / esz;
  dst[i] = col < scols ? src[r * (long long)scols * esz + byteInRow] : 0;
}

// a [n, I] = act(h[:, :I]) ⊙ h[:, I:], h [n, 2I]; act 0 = silu, 1 = exact-erf gelu.
extern "C" __global__ void moe_gated(const void *h, void *a, int dt, int n, int inter, int act) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (long long)n * inter) return;
  long long t = i / inter, j = i % inter;
  float g = load(h, t * 2 * inter + j, dt), u = load(h, t * 2 * inter + inter + j, dt);
  float y = act == 1 ? 0.5f * g * (1.0f + erff(g * 0.70710678118654752f)) : g / (1.0f + expf(-g));
  store(a, i, y * u, dt);
}

// moe/router.Route on the device: one thread per token, the same arithmetic (scores in
// double rounded to float, sums in float in index order, ties to the lower expert id, NaN
// last), so that the GPU picks the experts the CPU router picks.
#define MOE_MAX_EXPERTS 512
#define MOE_MAX_TOPK 32

__device__ __forceinline__ bool beats(float a, float b) { return a > b || (b != b && a == a); }

__device__ void topk_insert(float v, int i, int k, int *n, float *val, int *idx) {
  if (*n == k && !beats(v, val[k - 1])) return;
  int pos = *n;
  if (*n < k) (*n)++; else pos = k - 1;
  while (pos > 0 && beats(v, val[pos - 1])) { val[pos] = val[pos - 1]; idx[pos] = idx[pos - 1]; pos--; }
  val[pos] = v; idx[pos] = i;
}

extern "C" __global__ void moe_route(const float *logits, float *weights, int *ids, int T, int E, int K,
                                     int scoring, int renorm, float scale, const float *bias, int grouped,
                                     int groups, int keepGroups) {
  int tok = blockIdx.x * blockDim.x + threadIdx.x;
  if (tok >= T) return;
  const float *z = logits + (long long)tok * E;
  float p[MOE_MAX_EXPERTS];
  if (scoring == 0) {  // softmax
    float m = z[0];
    for (int i = 1; i < E; i++) if (z[i] > m) m = z[i];
    float sum = 0.0f;
    for (int i = 0; i < E; i++) { p[i] = (float)exp((double)(z[i] - m)); sum += p[i]; }
    for (int i = 0; i < E; i++) p[i] /= sum;
  } else if (scoring == 1) {  // sigmoid
    for (int i = 0; i < E; i++) p[i] = (float)(1.0 / (1.0 + exp(-(double)z[i])));
  } else {  // sqrt(softplus)
    for (int i = 0; i < E; i++) {
      double x = (double)z[i];
      if (x <= 20.0) x = log1p(exp(x));
      p[i] = (float)sqrt(x);
    }
  }
  // q = p + bias (selection only); computed on the fly.
  bool keep[MOE_MAX_TOPK];
  int groupSize = grouped ? E / groups : E;
  if (grouped) {
    float gval[MOE_MAX_TOPK]; int gidx[MOE_MAX_TOPK]; int gn = 0;
    for (int g = 0; g < groups; g++) {
      float a, b, s;
      for (int j = 0; j < groupSize; j++) {
        int e = g * groupSize + j;
        float q = bias ? p[e] + bias[e] : p[e];
        if (j == 0) { a = q; b = q; continue; }
        if (bias) {
          if (j == 1) { if (beats(q, a)) { b = a; a = q; } else { b = q; } continue; }
          if (beats(q, a)) { b = a; a = q; } else if (beats(q, b)) { b = q; }
        } else if (beats(q, a)) { a = q; }
      }
      s = bias ? (groupSize > 1 ? a + b : a) : a;
      topk_insert(s, g, keepGroups, &gn, gval, gidx);
      keep[g] = false;
    }
    for (int j = 0; j < keepGroups; j++) keep[gidx[j]] = true;
  }
  float val[MOE_MAX_TOPK]; int idx[MOE_MAX_TOPK]; int n = 0;
  for (int e = 0; e < E; e++) {
    if (grouped && !keep[e / groupSize]) continue;
    float q = bias ? p[e] + bias[e] : p[e];
    topk_insert(q, e, K, &n, val, idx);
  }
  float sum = 0.0f;
  float *w = weights + (long long)tok * K;
  int *id = ids + (long long)tok * K;
  for (int j = 0; j < K; j++) { w[j] = p[idx[j]]; sum += w[j]; id[j] = idx[j]; }
  if (renorm) {
    if (scoring == 2) { if (sum < 1e-20f) sum = 1e-20f; }
    else if (!(sum > 0.0f)) sum = 1.0f;
    for (int j = 0; j < K; j++) w[j] /= sum;
  }
  if (scale != 1.0f) for (int j = 0; j < K; j++) w[j] *= scale;
}

// The common router (softmax top-k, no groups, no bias: Mixtral, Qwen3, moe_ref.py's
// layer) with one warp per token instead of one thread: each lane scores E/32 experts,
// the max and the sum are warp reductions, and K rounds of a warp arg-max pick the experts
// with moe_route's order (larger first, ties to the lower id, NaN last). The sum's order
// differs from moe_route's, so weights can differ in the last bit; ids cannot, except
// when two different exponentials round to the same probability.
#define ROUTE_PER_LANE (MOE_MAX_EXPERTS / 32)
extern "C" __global__ void moe_route_softmax(const float *logits, float *weights, int *ids, int T, int E, int K,
                                             int renorm, float scale) {
  int tok = (int)(((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5), lane = threadIdx.x & 31;
  if (tok >= T) return;
  const float *z = logits + (long long)tok * E;
  float e[ROUTE_PER_LANE];
  const float ninf = __int_as_float(0xff800000);
  float m = ninf;
#pragma unroll
  for (int q = 0; q < ROUTE_PER_LANE; q++) {
    int i = lane + 32 * q;
    e[q] = i < E ? z[i] : ninf;
    if (i < E && e[q] > m) m = e[q];
  }
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  float sum = 0.0f;
#pragma unroll
  for (int q = 0; q < ROUTE_PER_LANE; q++) {
    int i = lane + 32 * q;
    e[q] = i < E ? (float)exp((double)(e[q] - m)) : 0.0f;
    sum += e[q];
  }
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  unsigned taken = 0;
  float wsum = 0.0f;
  float *w = weights + (long long)tok * K;
  int *id = ids + (long long)tok * K;
  for (int j = 0; j < K; j++) {
    float bv = 0.0f;
    int bi = -1;
#pragma unroll
    for (int q = 0; q < ROUTE_PER_LANE; q++) {
      int i = lane + 32 * q;
      if (i < E && !(taken & (1u << q)) && (bi < 0 || beats(e[q], bv))) { bv = e[q]; bi = i; }
    }
    for (int o = 16; o > 0; o >>= 1) {
      float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (oi >= 0 && (bi < 0 || beats(ov, bv) || (!beats(bv, ov) && oi < bi))) { bv = ov; bi = oi; }
    }
    if ((bi & 31) == lane) taken |= 1u << (bi >> 5);
    float p = bv / sum;
    wsum += p;
    if (lane == 0) { w[j] = p; id[j] = bi; }
  }
  if (lane == 0) {
    float d = renorm ? (wsum > 0.0f ? wsum : 1.0f) : 1.0f;
    for (int j = 0; j < K; j++) w[j] = w[j] / d * scale;
  }
}

// Grouped experts, with no host round trip. Slots (token t, choice j) are bucketed by local
// expert into tiles of R rows: expert e owns tiles [start_e, start_e + ceil(count_e/R)) of
// an expert-major, tile-padded layout. moe_expert_count counts the slots per expert;
// moe_expert_plan (one block) scans the tile counts, sets each expert's first row (the
// scatter cursor), and writes the device pointer arrays of the two batched GEMMs (one
// entry per tile: weights, input rows, output rows). Entries past the used tiles repeat the
// last used tile's weights and inputs and write into a spare output tile, so that a GEMM
// over a fixed number of entries (sized on the host from n, k and the expert count alone)
// stays correct and reads no new weights (adjacent duplicates hit L2). moe_expert_scatter
// places each slot (perm: row -> slot or -1 for padding; pos: slot -> row, -1 for experts
// elsewhere), moe_gather copies the rows (scaled by the router weight when it goes on the
// input, zero for padding), and moe_combine sums the weighted expert outputs of each token
// in slot order in float32.
__device__ __forceinline__ int local_expert(const int *ids, const int *map, int slot) {
  int e = ids[slot];
  return map ? map[e] : e;
}

extern "C" __global__ void moe_expert_count(const int *ids, const int *map, int slots, int *counts) {
  int s = blockIdx.x * blockDim.x + threadIdx.x;
  if (s >= slots) return;
  int l = local_expert(ids, map, s);
  if (l >= 0) atomicAdd(&counts[l], 1);
}

#define MOE_PLAN_THREADS 1024

// ptrs holds 6 arrays of maxTiles addresses: gate_up weights, inputs, outputs; down
// weights, inputs, outputs. used[0] receives the number of tiles in use, tileRows each
// tile's real rows (0 for spare tiles).
extern "C" __global__ void moe_expert_plan(const int *counts, int local, int R, int maxTiles, int *cursor,
                                           u64 *ptrs, int *used, u64 w13, u64 w13Stride, u64 w2, u64 w2Stride,
                                           u64 xg, u64 xgTile, u64 h, u64 hTile, u64 a, u64 aTile, u64 y,
                                           u64 yTile, u64 hSpare, u64 ySpare, int *tileRows) {
  __shared__ int scan[MOE_PLAN_THREADS];
  __shared__ int lastExpert;
  int t = threadIdx.x;
  int tiles = t < local ? (counts[t] + R - 1) / R : 0;
  scan[t] = tiles;
  if (t == 0) lastExpert = 0;
  __syncthreads();
  for (int off = 1; off < MOE_PLAN_THREADS; off <<= 1) {
    int v = t >= off ? scan[t - off] : 0;
    __syncthreads();
    scan[t] += v;
    __syncthreads();
  }
  int total = scan[MOE_PLAN_THREADS - 1];
  int begin = scan[t] - tiles;
  u64 *A13 = ptrs, *B13 = ptrs + maxTiles, *C13 = ptrs + 2 * maxTiles;
  u64 *A2 = ptrs + 3 * maxTiles, *B2 = ptrs + 4 * maxTiles, *C2 = ptrs + 5 * maxTiles;
  if (t < local) {
    cursor[t] = begin * R;
    for (int j = 0; j < tiles; j++) {
      int tile = begin + j;
      if (tile >= maxTiles) break;  // cannot happen: maxTiles bounds every routing
      A13[tile] = w13 + (u64)t * w13Stride;
      B13[tile] = xg + (u64)tile * xgTile;
      C13[tile] = h + (u64)tile * hTile;
      A2[tile] = w2 + (u64)t * w2Stride;
      B2[tile] = a + (u64)tile * aTile;
      C2[tile] = y + (u64)tile * yTile;
      int left = counts[t] - j * R;
      tileRows[tile] = left < R ? left : R;
    }
    if (tiles > 0 && begin + tiles == total) lastExpert = t;
  }
  if (t == 0) used[0] = total < maxTiles ? total : maxTiles;
  __syncthreads();
  int last = total > 0 ? (total < maxTiles ? total : maxTiles) - 1 : 0;
  for (int tile = total + t; tile < maxTiles; tile += MOE_PLAN_THREADS) {
    A13[tile] = w13 + (u64)lastExpert * w13Stride;
    B13[tile] = xg + (u64)last * xgTile;
    C13[tile] = hSpare;
    A2[tile] = w2 + (u64)lastExpert * w2Stride;
    B2[tile] = a + (u64)last * aTile;
    C2[tile] = ySpare;
    tileRows[tile] = 0;
  }
}

extern "C" __global__ void moe_expert_scatter(const int *ids, const int *map, int slots, int *cursor, int *perm, int *pos) {
  int s = blockIdx.x * blockDim.x + threadIdx.x;
  if (s >= slots) return;
  int l = local_expert(ids, map, s);
  if (l < 0) { pos[s] = -1; return; }
  int p = atomicAdd(&cursor[l], 1);
  perm[p] = s;
  pos[s] = p;
}

extern "C" __global__ void moe_gather(const void *x, const int *perm, const float *w, int onInput, int k, int h,
                                      long long rows, int dt, void *xg) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= rows * h) return;
  long long p = i / h, c = i % h;
  int s = perm[p];
  float v = 0.0f;
  if (s >= 0) {
    v = load(x, (long long)(s / k) * h + c, dt);
    if (onInput) v *= w[s];
  }
  store(xg, i, v, dt);
}

extern "C" __global__ void moe_combine(const void *y, const int *pos, const float *w, int onInput, int n, int k, int h,
                                       int dt, void *out) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (long long)n * h) return;
  long long t = i / h, c = i % h;
  float acc = 0.0f;
  for (int j = 0; j < k; j++) {
    int p = pos[t * k + j];
    if (p < 0) continue;
    float scale = onInput ? 1.0f : w[t * k + j];
    acc += scale * load(y, (long long)p * h + c, dt);
  }
  store(out, i, acc, dt);
}

// The decode GEMM: for every used tile t (tiles past used[0] return at once, so a fixed
// grid costs nothing extra), Y_t [rows_t, N] = X_t [rows_t, K] · W_tᵀ with W_t [N, K]
// row-major, float32 accumulation, bf16 in and out, through the pointer arrays of
// moe_expert_plan; rows_t (1..8, from tileRows) are the tile's real rows, so padding costs
// no arithmetic. The work is streaming W once: each warp owns GEMV_ROWS rows of W, loads
// them in 16-byte pieces (all loads of a step issued before any use) and reuses each piece
// for the tile's rows (served from L1/L2). Tiles are the grid's fast axis, so tiles of the
// same expert run side by side and share its weights in L2. Needs K % 8 == 0 and 16-byte
// aligned rows (R = 8 bf16 tiles are).
#define GEMV_TILE_ROWS 8
#define GEMV_ROWS 4
#define GEMV_WARPS 8

__device__ __forceinline__ void bf16x8(uint4 v, float *f) {
  f[0] = __uint_as_float(v.x << 16); f[1] = __uint_as_float(v.x & 0xffff0000u);
  f[2] = __uint_as_float(v.y << 16); f[3] = __uint_as_float(v.y & 0xffff0000u);
  f[4] = __uint_as_float(v.z << 16); f[5] = __uint_as_float(v.z & 0xffff0000u);
  f[6] = __uint_as_float(v.w << 16); f[7] = __uint_as_float(v.w & 0xffff0000u);
}

template <int NR>
__device__ __forceinline__ void gemv_rows(const unsigned short *w, const unsigned short *x, unsigned short *y,
                                          int n0, int N, int K, int lane) {
  float acc[GEMV_ROWS][NR];
#pragma unroll
  for (int j = 0; j < GEMV_ROWS; j++)
#pragma unroll
    for (int r = 0; r < NR; r++) acc[j][r] = 0.0f;
#pragma unroll 2
  for (int k = lane * 8; k < K; k += 32 * 8) {
    uint4 wv[GEMV_ROWS];
#pragma unroll
    for (int j = 0; j < GEMV_ROWS; j++) {
      wv[j].x = wv[j].y = wv[j].z = wv[j].w = 0u;
      if (n0 + j < N) wv[j] = __ldg((const uint4 *)(w + (long long)(n0 + j) * K + k));
    }
    float wf[GEMV_ROWS][8];
#pragma unroll
    for (int j = 0; j < GEMV_ROWS; j++) bf16x8(wv[j], wf[j]);
#pragma unroll
    for (int r = 0; r < NR; r++) {
      float xf[8];
      bf16x8(*(const uint4 *)(x + (long long)r * K + k), xf);
#pragma unroll
      for (int j = 0; j < GEMV_ROWS; j++) {
        float s = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; e++) s = fmaf(wf[j][e], xf[e], s);
        acc[j][r] += s;
      }
    }
  }
#pragma unroll
  for (int j = 0; j < GEMV_ROWS; j++)
#pragma unroll
    for (int r = 0; r < NR; r++)
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) acc[j][r] += __shfl_xor_sync(0xffffffffu, acc[j][r], o);
  if (lane == 0) {
#pragma unroll
    for (int j = 0; j < GEMV_ROWS; j++)
      if (n0 + j < N)
#pragma unroll
        for (int r = 0; r < NR; r++) y[(long long)r * N + n0 + j] = f32_to_bf16(acc[j][r]);
  }
}

extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32)
moe_expert_gemv(const u64 *A, const u64 *B, const u64 *Cp, const int *used, const int *tileRows, int N, int K) {
  int tile = blockIdx.x;
  if (tile >= used[0]) return;
  const unsigned short *w = (const unsigned short *)A[tile];
  const unsigned short *x = (const unsigned short *)B[tile];
  unsigned short *y = (unsigned short *)Cp[tile];
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int n0 = (blockIdx.y * GEMV_WARPS + warp) * GEMV_ROWS;
  if (n0 >= N) return;
  switch (tileRows[tile]) {
    case 1: gemv_rows<1>(w, x, y, n0, N, K, lane); break;
    case 2: gemv_rows<2>(w, x, y, n0, N, K, lane); break;
    case 3: gemv_rows<3>(w, x, y, n0, N, K, lane); break;
    case 4: gemv_rows<4>(w, x, y, n0, N, K, lane); break;
    case 5: gemv_rows<5>(w, x, y, n0, N, K, lane); break;
    case 6: gemv_rows<6>(w, x, y, n0, N, K, lane); break;
    case 7: gemv_rows<7>(w, x, y, n0, N, K, lane); break;
    case 8: gemv_rows<8>(w, x, y, n0, N, K, lane); break;
  }
}

// Vectorised element-wise kernels for bf16 rows whose width is a multiple of 8: each
// thread moves 16 bytes (8 values), so the prefill-size gather, gated activation and
// combine run near the memory's speed instead of at 2-byte accesses. Same arithmetic as
// their scalar twins (moe_gather, moe_gated, moe_combine), element by element.
__device__ __forceinline__ uint4 pack8(const float *f) {
  uint4 v;
  v.x = (u32)f32_to_bf16(f[0]) | ((u32)f32_to_bf16(f[1]) << 16);
  v.y = (u32)f32_to_bf16(f[2]) | ((u32)f32_to_bf16(f[3]) << 16);
  v.z = (u32)f32_to_bf16(f[4]) | ((u32)f32_to_bf16(f[5]) << 16);
  v.w = (u32)f32_to_bf16(f[6]) | ((u32)f32_to_bf16(f[7]) << 16);
  return v;
}

extern "C" __global__ void moe_gather_v8(const uint4 *x, const int *perm, const float *w, int onInput, int k, int h8,
                                         long long rows, uint4 *xg) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= rows * h8) return;
  long long p = i / h8;
  int c = (int)(i - p * h8);
  int s = perm[p];
  uint4 v;
  v.x = v.y = v.z = v.w = 0u;
  if (s >= 0) {
    v = x[(long long)(s / k) * h8 + c];
    if (onInput) {
      float f[8];
      bf16x8(v, f);
      for (int e = 0; e < 8; e++) f[e] *= w[s];
      v = pack8(f);
    }
  }
  xg[i] = v;
}

extern "C" __global__ void moe_gated_v8(const uint4 *h, uint4 *a, long long n, int i8, int act) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n * i8) return;
  long long t = i / i8;
  int j = (int)(i - t * i8);
  float g[8], u[8], y[8];
  bf16x8(h[t * 2 * i8 + j], g);
  bf16x8(h[t * 2 * i8 + i8 + j], u);
  for (int e = 0; e < 8; e++) {
    float z = act == 1 ? 0.5f * g[e] * (1.0f + erff(g[e] * 0.70710678118654752f)) : g[e] / (1.0f + expf(-g[e]));
    y[e] = z * u[e];
  }
  a[i] = pack8(y);
}

extern "C" __global__ void moe_combine_v8(const uint4 *y, const int *pos, const float *w, int onInput, long long n, int k,
                                          int h8, uint4 *out) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n * h8) return;
  long long t = i / h8;
  int c = (int)(i - t * h8);
  float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  for (int j = 0; j < k; j++) {
    int p = pos[t * k + j];
    if (p < 0) continue;
    float scale = onInput ? 1.0f : w[t * k + j];
    float f[8];
    bf16x8(y[(long long)p * h8 + c], f);
    for (int e = 0; e < 8; e++) acc[e] += scale * f[e];
  }
  out[i] = pack8(acc);
}

// The decode grouped GEMM on tensor cores: for every local expert e with m_e > 0 rows
// (expert-major rows from cursor[e] − counts[e], cursor as moe_expert_scatter leaves it),
// Y_e [m_e, N] = X_e [m_e, K] · W_eᵀ with W_e [N, K] row-major (expert e at w + e·wStride),
// float32 accumulation, bf16 in and out. Each expert's weights are read once however many
// rows it has (up to MMA_PASS_ROWS per pass; more rows take more passes): the cost is
// streaming the touched experts' weights, which padded tiles (one read per tile) multiply.
// A warp owns MT·16 rows of W and computes mma.sync m16n8k16 tiles with the weights as the
// 16-row A operand and 8 token rows as B, so one token row costs as much as eight.
// K is summed in a lane-friendly order: in each chunk of P·32 columns a lane holds, for
// its rows, k = 32p + 8t + [0,8) for p < P (t = lane % 4) in A and B alike, so every
// operand comes from 16-byte loads, a warp's loads cover P·64 contiguous bytes of each
// row, and no shuffles or shared memory are needed; the sum is the same, only its order
// differs. The next chunk's weights load while this one multiplies (double buffering in
// registers); weights bypass L1 (read once), optionally asking L2 for 256-byte lines
// (HINT), while X rows stay in L1 for the block's warps.
// Grid: x = N-slices of MMA_WARPS·MT·16 rows, y = local experts. Needs K % (P·32) == 0,
// N % 16 == 0, 16-byte aligned rows, sm_80 or newer.
#define MMA_WARPS 4
#define MMA_PASS_ROWS 64

template <bool HINT>
__device__ __forceinline__ uint4 ld_stream(const unsigned short *p) {
  uint4 v;
  if (HINT)
    asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
  else
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
  return v;
}

__device__ __forceinline__ u32 word8(const uint4 *v, int i) {
  const uint4 &q = v[i >> 2];
  switch (i & 3) {
    case 0: return q.x;
    case 1: return q.y;
    case 2: return q.z;
    default: return q.w;
  }
}

__device__ __forceinline__ void mma_bf16(float *c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
#if __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#endif
}

template <int MT, int P, bool HINT>
struct MMA {
  // One chunk of a warp's tile: a[mt][h][p] are the weight pieces (rows
  // n0 + 16·mt + g + 8·h), x the chunk's first column.
  template <int NT>
  static __device__ __forceinline__ void chunk(float (*acc)[NT][4], const uint4 (*a)[2][P], const unsigned short *x,
                                               int K, int m, int g, int t) {
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
      int row = nt * 8 + g;
      uint4 b[P];
#pragma unroll
      for (int p = 0; p < P; p++) b[p].x = b[p].y = b[p].z = b[p].w = 0u;
      if (row < m) {
        const unsigned short *xr = x + (long long)row * K + 8 * t;
#pragma unroll
        for (int p = 0; p < P; p++) b[p] = __ldg((const uint4 *)(xr + 32 * p));
      }
#pragma unroll
      for (int j = 0; j < 2 * P; j++) {
        u32 b0 = word8(b, 2 * j), b1 = word8(b, 2 * j + 1);
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
          mma_bf16(acc[mt][nt], word8(a[mt][0], 2 * j), word8(a[mt][1], 2 * j), word8(a[mt][0], 2 * j + 1),
                   word8(a[mt][1], 2 * j + 1), b0, b1);
      }
    }
  }

  static __device__ __forceinline__ void load(uint4 (*a)[2][P], const unsigned short *w, int n0, int N, int K, int k0,
                                              int g, int t) {
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        int n = n0 + 16 * mt + 8 * h + g;
        const unsigned short *q = w + (long long)n * K + k0 + 8 * t;
#pragma unroll
        for (int p = 0; p < P; p++) {
          if (n < N) a[mt][h][p] = ld_stream<HINT>(q + 32 * p);
          else a[mt][h][p].x = a[mt][h][p].y = a[mt][h][p].z = a[mt][h][p].w = 0u;
        }
      }
  }

  template <int NT>
  static __device__ __forceinline__ void pass(const unsigned short *w, const unsigned short *x, unsigned short *y, int n0,
                                              int N, int K, int m, int lane) {
    int g = lane >> 2, t = lane & 3;
    float acc[MT][NT][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int nt = 0; nt < NT; nt++) acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.0f;
    uint4 cur[MT][2][P], nxt[MT][2][P];
    load(cur, w, n0, N, K, 0, g, t);
    int k0 = 0;
    for (; k0 + 32 * P < K; k0 += 32 * P) {
      load(nxt, w, n0, N, K, k0 + 32 * P, g, t);
      chunk<NT>(acc, cur, x + k0, K, m, g, t);
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++)
#pragma unroll
          for (int p = 0; p < P; p++) cur[mt][h][p] = nxt[mt][h][p];
    }
    chunk<NT>(acc, cur, x + k0, K, m, g, t);
    // c0, c1: weight row g, token rows 2t, 2t+1; c2, c3: weight row g + 8.
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int c = 0; c < 4; c++) {
          int n = n0 + 16 * mt + g + 8 * (c >> 1), r = nt * 8 + 2 * t + (c & 1);
          if (n < N && r < m) y[(long long)r * N + n] = f32_to_bf16(acc[mt][nt][c]);
        }
  }

  static __device__ __forceinline__ void run(const unsigned short *w, long long wStride, const unsigned short *x,
                                             unsigned short *y, const int *counts, const int *cursor, int N, int K) {
    int e = blockIdx.y;
    int rows = counts[e];
    if (rows == 0) return;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int n0 = (blockIdx.x * MMA_WARPS + warp) * MT * 16;
    if (n0 >= N) return;
    long long start = cursor[e] - rows;
    w += (long long)e * wStride;
    for (int p = 0; p < rows; p += MMA_PASS_ROWS) {
      int m = min(rows - p, MMA_PASS_ROWS);
      const unsigned short *xp = x + (start + p) * K;
      unsigned short *yp = y + (start + p) * N;
      switch ((m + 7) >> 3) {
        case 1: pass<1>(w, xp, yp, n0, N, K, m, lane); break;
        case 2: pass<2>(w, xp, yp, n0, N, K, m, lane); break;
        case 3: case 4: pass<4>(w, xp, yp, n0, N, K, m, lane); break;
        default: pass<8>(w, xp, yp, n0, N, K, m, lane); break;
      }
    }
  }
};

// The variants measured (docs/DECISIONS.md): rows per warp (MT·16), columns per chunk
// (P·32), the L2 256-byte hint. moe_expert_mma is the one chosen: on one H100 it beat the
// others at every decode row of deepseek-v3, qwen3 and mixtral (7.40 ms against 8.44 for
// MT 2, P 2 at 128 deepseek tokens): the longer run of each weight row per chunk and
// the 256-byte L2 fetches keep more of HBM's bandwidth.
#define MMA_KERNEL(name, MT, P, HINT)                                                                  \
  extern "C" __global__ void __launch_bounds__(MMA_WARPS * 32)                                        \
  name(const unsigned short *w, long long wStride, const unsigned short *x, unsigned short *y,        \
       const int *counts, const int *cursor, int N, int K) {                                          \
    MMA<MT, P, HINT>::run(w, wStride, x, y, counts, cursor, N, K);                                    \
  }
MMA_KERNEL(moe_expert_mma, 1, 4, true)
MMA_KERNEL(moe_expert_mma_m2, 2, 2, false)
MMA_KERNEL(moe_expert_mma_m2h, 2, 2, true)
MMA_KERNEL(moe_expert_mma_nohint, 1, 4, false)
