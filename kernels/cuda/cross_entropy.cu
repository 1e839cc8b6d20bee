// Softmax cross-entropy over rows of logits; the twin of src/backend/cpu/cross_entropy_partial.cpp
// (the vocabulary-parallel halves) plus a fused single-slice loss and gradient:
//   cross_entropy_partial:   row_max[n] = max_v l[n,v];  row_sum[n] = sum_v e^{l[n,v] - row_max[n]}
//                            target_logit[n] = l[n, t_n - vocab_start] if in the slice, else 0
//   cross_entropy_partial_backward (in place):
//                            l[n,v] = scale e^{l[n,v] - lse[n]} - scale [v + vocab_start == t_n]
//                            (0 for ignored rows, t_n < 0)
//   cross_entropy_fused:     lse_n = m_n + log s_n;  losses[n] = lse_n - l[n, t_n]  (0 if t_n < 0)
//                            scale != 0: l[n,v] = scale e^{l[n,v] - lse_n} - scale [v == t_n]
//   cross_entropy_fused_bf16: the same loss, and that gradient rounded to bf16 into a separate
//                            (N, V) array, the logits untouched: the LM head's backward products
//                            read bf16, so this saves an fp32 write, a re-read and a cast launch.
// Layout: logits row-major (N, V) (a slice of V vocabulary ids); targets, lse, row_max, row_sum,
// target_logit, losses (N). fp32 throughout (the bf16 gradient rounded once, to nearest even),
// expf/logf.
// Launch: one block per row, grid N; about V/8 threads rounded up to a warp, between 32 and 1024
// (V = 1000: 128; V >= 7937: 1024, i.e. ~49 logits per thread for V = 50257, ~125 for 128256), so
// short rows do not hold idle warps. Threads stride over the row (coalesced). No dynamic shared
// memory.
//   Max and sum come from ONE pass (online softmax): each thread keeps (m, s) with s the sum of
//   e^{x - m} over its logits, rescaled when m grows; the pairs combine by
//   (max(m1, m2), s1 e^{m1 - m} + s2 e^{m2 - m}) across the warp (xor butterfly, the pair moved as one
//   64-bit shuffle: every lane gets the same bits) and then, with more than one warp, across the
//   warps through shared memory (2 x 32 floats). The order is fixed by the block shape, itself a
//   function of V, so results are deterministic. The fused kernel then makes a second pass that
//   writes the gradient (the row is usually still in L2).
// Numerics vs. the CPU (max first, then a sum of exp_poly): the online rescaling and the tree order
// differ by a few ulps; row_max is exact.
// Constraints: V > 0, vocab_start >= 0; any N >= 0. Follow-ups if profiles ask: vectorized (float4)
// loads when V % 4 == 0, and several rows per block for small V.
#include "cross_entropy.cuh"

#include <cmath>
#include <cstring>

namespace nuri::cuda {

namespace {
constexpr unsigned kLogitsPerThread = 8;
constexpr unsigned kMaxRowThreads = 1024;

// Threads per row block: ceil(V / 8) rounded up to a whole warp, at most 1024.
unsigned row_threads(int V) {
  const unsigned warps = blocks_for(blocks_for(size_t(V), kLogitsPerThread), kWarpSize);
  const unsigned threads = warps * kWarpSize;
  return threads < kMaxRowThreads ? threads : kMaxRowThreads;
}

// (m, s): the sum s of e^{x - m} over some logits x, with m their max. No logits: (-inf, 0).
struct MaxSum {
  float m;
  float s;
};

// Adds one logit to a running (m, s). From (-inf, 0) the first logit gives (x, 1).
__device__ __forceinline__ void online_add(MaxSum& r, float x) {
  if (x > r.m) {
    r.s = r.s * expf(r.m - x) + 1.0f;
    r.m = x;
  } else {
    r.s += expf(x - r.m);
  }
}

// Merges two pairs; symmetric in its arguments bit for bit. An empty pair (s == 0) contributes 0
// (its m = -inf would give e^{-inf + inf} = NaN).
__device__ __forceinline__ MaxSum combine(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.m, b.m);
  const float sa = a.s == 0.0f ? 0.0f : a.s * expf(a.m - m);
  const float sb = b.s == 0.0f ? 0.0f : b.s * expf(b.m - m);
  return {m, sa + sb};
}

// The pair moves as one 64-bit value (two 32-bit shuffles on the GPU).
__device__ __forceinline__ MaxSum shfl_xor_max_sum(MaxSum v, int offset) {
  static_assert(sizeof(MaxSum) == sizeof(unsigned long long), "MaxSum is two floats");
  unsigned long long bits;
  memcpy(&bits, &v, sizeof bits);
  bits = __shfl_xor_sync(0xffffffffu, bits, offset);
  MaxSum out;
  memcpy(&out, &bits, sizeof out);
  return out;
}

__device__ __forceinline__ MaxSum warp_reduce_max_sum(MaxSum v) {
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1)
    v = combine(v, shfl_xor_max_sum(v, offset));
  return v;
}

// Every thread of the block gets the block's (m, s). blockDim.x a multiple of 32 (<= 1024); all
// threads call it. Contains __syncthreads when the block has more than one warp.
__device__ inline MaxSum block_reduce_max_sum(MaxSum v) {
  __shared__ float part_m[kWarpSize];
  __shared__ float part_s[kWarpSize];
  const int lane = int(threadIdx.x) % kWarpSize;
  const int warp = int(threadIdx.x) / kWarpSize;
  const int nwarps = int(blockDim.x) / kWarpSize;
  v = warp_reduce_max_sum(v);
  if (nwarps == 1) return v;  // the same for the whole block
  __syncthreads();  // a previous call may still be reading the partials
  if (lane == 0) {
    part_m[warp] = v.m;
    part_s[warp] = v.s;
  }
  __syncthreads();
  v = lane < nwarps ? MaxSum{part_m[lane], part_s[lane]} : MaxSum{-INFINITY, 0.0f};
  return warp_reduce_max_sum(v);
}

// The (m, s) of one row of V logits, for every thread of the block.
__device__ inline MaxSum row_max_sum(const float* l, int V) {
  MaxSum r{-INFINITY, 0.0f};
  for (int v = int(threadIdx.x); v < V; v += int(blockDim.x)) online_add(r, l[v]);
  return block_reduce_max_sum(r);
}
}  // namespace

__global__ void cross_entropy_partial_kernel(float* row_max, float* row_sum, float* target_logit,
                                             const float* logits, const int32_t* targets, int V,
                                             int vocab_start) {
  const size_t row = blockIdx.x;
  const float* l = logits + row * size_t(V);  // (V)
  const MaxSum r = row_max_sum(l, V);
  if (threadIdx.x == 0) {
    row_max[row] = r.m;
    row_sum[row] = r.s;
    const int32_t t = targets[row];
    const int64_t local = int64_t(t) - vocab_start;
    target_logit[row] = t >= 0 && local >= 0 && local < V ? l[local] : 0.0f;
  }
}

__global__ void cross_entropy_partial_backward_kernel(float* logits, const float* lse,
                                                      const int32_t* targets, int V,
                                                      int vocab_start, float scale) {
  const size_t row = blockIdx.x;
  float* l = logits + row * size_t(V);  // (V)
  const int32_t t = targets[row];
  if (t < 0) {
    for (int v = int(threadIdx.x); v < V; v += int(blockDim.x)) l[v] = 0.0f;
    return;
  }
  const float m = lse[row];
  const int64_t local = int64_t(t) - vocab_start;  // outside [0, V): no onehot term here
  for (int v = int(threadIdx.x); v < V; v += int(blockDim.x)) {
    float g = scale * expf(l[v] - m);
    if (v == local) g -= scale;
    l[v] = g;
  }
}

namespace {
// The fused kernels' body for one row: the loss, then with scale != 0 the gradient into grad (V),
// which is the row itself (fp32, in place) or a bf16 row of its own. Every thread reads l[v]
// before it writes grad[v], and only its own v's.
template <typename G>
__device__ inline void fused_row(const float* l, G* grad, float* loss, int32_t t, int V,
                                 float scale) {
  if (t < 0) {  // the same for the whole block: no divergent barrier below
    if (threadIdx.x == 0) *loss = 0.0f;
    if (scale != 0.0f)
      for (int v = int(threadIdx.x); v < V; v += int(blockDim.x)) grad[v] = from_float<G>(0.0f);
    return;
  }
  // Read before the second pass overwrites the row (the reduction's barriers order the two).
  const float target = t < V ? l[t] : NAN;
  const MaxSum r = row_max_sum(l, V);
  const float lse = r.m + logf(r.s);
  if (threadIdx.x == 0) *loss = lse - target;
  if (scale == 0.0f) return;
  for (int v = int(threadIdx.x); v < V; v += int(blockDim.x)) {
    float g = scale * expf(l[v] - lse);
    if (v == t) g -= scale;
    grad[v] = from_float<G>(g);
  }
}
}  // namespace

__global__ void cross_entropy_fused_kernel(float* logits, float* losses, const int32_t* targets,
                                           int V, float scale) {
  const size_t row = blockIdx.x;
  float* l = logits + row * size_t(V);  // (V)
  fused_row(l, l, losses + row, targets[row], V, scale);
}

__global__ void cross_entropy_fused_bf16_kernel(__nv_bfloat16* grad, float* losses,
                                                const float* logits, const int32_t* targets,
                                                int V, float scale) {
  const size_t row = blockIdx.x;
  fused_row(logits + row * size_t(V), grad + row * size_t(V), losses + row, targets[row], V,
            scale);
}

cudaError_t cross_entropy_partial(float* row_max, float* row_sum, float* target_logit,
                                  const float* logits, const int32_t* targets, int N, int V,
                                  int vocab_start, cudaStream_t stream) {
  NURI_NVTX_RANGE("cross_entropy_partial");
  if (N < 0 || V <= 0 || vocab_start < 0) return cudaErrorInvalidValue;
  if (N == 0) return cudaSuccess;
  if (!row_max || !row_sum || !target_logit || !logits || !targets) return cudaErrorInvalidValue;
  NURI_LAUNCH(cross_entropy_partial_kernel, unsigned(N), row_threads(V), 0, stream, row_max,
              row_sum, target_logit, logits, targets, V, vocab_start);
  return cudaGetLastError();
}

cudaError_t cross_entropy_partial_backward(float* logits, const float* lse,
                                           const int32_t* targets, int N, int V, int vocab_start,
                                           float scale, cudaStream_t stream) {
  NURI_NVTX_RANGE("cross_entropy_partial_backward");
  if (N < 0 || V <= 0 || vocab_start < 0) return cudaErrorInvalidValue;
  if (N == 0) return cudaSuccess;
  if (!logits || !lse || !targets) return cudaErrorInvalidValue;
  NURI_LAUNCH(cross_entropy_partial_backward_kernel, unsigned(N), row_threads(V), 0, stream,
              logits, lse, targets, V, vocab_start, scale);
  return cudaGetLastError();
}

cudaError_t cross_entropy_fused(float* logits, float* losses, const int32_t* targets, int N, int V,
                                float scale, cudaStream_t stream) {
  NURI_NVTX_RANGE("cross_entropy_fused");
  if (N < 0 || V <= 0) return cudaErrorInvalidValue;
  if (N == 0) return cudaSuccess;
  if (!logits || !losses || !targets) return cudaErrorInvalidValue;
  NURI_LAUNCH(cross_entropy_fused_kernel, unsigned(N), row_threads(V), 0, stream, logits, losses,
              targets, V, scale);
  return cudaGetLastError();
}

cudaError_t cross_entropy_fused_bf16(__nv_bfloat16* grad, float* losses, const float* logits,
                                     const int32_t* targets, int N, int V, float scale,
                                     cudaStream_t stream) {
  NURI_NVTX_RANGE("cross_entropy_fused_bf16");
  if (N < 0 || V <= 0 || scale == 0.0f) return cudaErrorInvalidValue;
  if (N == 0) return cudaSuccess;
  if (!grad || !losses || !logits || !targets) return cudaErrorInvalidValue;
  NURI_LAUNCH(cross_entropy_fused_bf16_kernel, unsigned(N), row_threads(V), 0, stream, grad,
              losses, logits, targets, V, scale);
  return cudaGetLastError();
}

}  // namespace nuri::cuda
