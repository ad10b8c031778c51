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
