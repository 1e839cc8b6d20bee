// Causal scaled-dot-product attention with grouped-query heads, flash style (fp32, SIMT, no
// tensor cores); the twin of src/backend/cpu/attention.cpp:
//   qkv (B,T,(H+2KV)*D), each row = [q heads | k heads | v heads], row stride R = (H+2KV)*D;
//   query head h reads kv head h / (H/KV); scale = 1/sqrt(D); out (B,T,H*D); lse (B,H,T).
//   forward:  S_ij = scale q_i.k_j (j <= i);  lse_i = log sum_j e^{S_ij};  out_i = sum_j P_ij v_j
//             with P_ij = e^{S_ij - lse_i}, by the online softmax: a running max m and sum l per
//             row, rescaled once per key tile; out = o / l, lse = m + log l at the end.
//   backward: P_ij = e^{S_ij - lse_i} recomputed from q, k and the saved lse;
//             delta_i = sum_d dO_id O_id;  dS_ij = P_ij (dO_i.v_j - delta_i);
//             dq_i = scale sum_j dS_ij k_j;  dk_j = scale sum_{h in group, i >= j} dS_ij q_i;
//             dv_j = sum_{h in group, i >= j} P_ij dO_i.  dqkv is overwritten (every element).
// No T x T matrix is ever stored, in global or shared memory.
// Launch: 64 threads (2 warps) per block; 4 consecutive lanes own one row (a query row in the
//   forward and dq kernels, a key row in the dkdv kernel) and split its D dims strided by 4
//   (lane g holds d = g, g+4, ..., up to 32 dims in registers); dot products are summed over the
//   4 lanes by two xor shuffles. So 16 rows per block.
//   forward, backward_dq: grid (B*H, ceil(T/16)); the block stages 32-key tiles of K and V
//     (keys 0 .. min(T, i0+16)-1, causality) in static shared memory (2 x 32 x 128 floats =
//     32 KiB). The dq kernel recomputes delta_i for its rows (one dot product of D).
//   backward_dkdv: grid (B*KV, ceil(T/16)); each block owns 16 keys of one kv head, loops over the
//     group's query heads and over 32-row tiles of q and dO (rows >= its first key) staged in
//     shared memory (32 KiB), recomputing delta for each staged tile (D per row per tile: the
//     rows are re-read once per key block anyway, so no workspace is needed).
//   Each dq, dk, dv element is written by exactly one thread: no atomics, deterministic.
// Numerics: fp32 throughout, expf / logf (the CPU uses a polynomial exp and a different
//   summation order: agreement to ~1e-5 relative, checked at 1e-4). Masked scores never enter
//   a sum (p = 0 exactly).
// Constraints: D <= 128 (register arrays of 32 per lane); grid.y = ceil(T/16) <= 65535, i.e.
//   T <= 1048560; B*H < 2^31. Not tuned: no tensor cores, no bf16, and the 32-float register
//   arrays are sized for D = 128 whatever D is (small D wastes nothing but registers).
#include "attention.cuh"

#if defined(__CUDACC__)
#define NURI_ATTN_UNROLL _Pragma("unroll")
#else
#define NURI_ATTN_UNROLL
#endif

namespace nuri::cuda {

namespace {
constexpr int kMaxD = 128;
constexpr int kLanesPerRow = 4;
constexpr int kDimsPerLane = kMaxD / kLanesPerRow;           // 32
constexpr unsigned kThreads = 64;
constexpr int kRowsPerBlock = int(kThreads) / kLanesPerRow;  // 16
constexpr int kTile = 32;                                    // rows staged in shared memory

// Sum over the 4 lanes that own one row (all 32 lanes of the warp call it).
__device__ __forceinline__ float row_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  v += __shfl_xor_sync(0xffffffffu, v, 2);
  return v;
}

// sh[r][0:D] = src row (r0 + r) for r < kTile (stride `stride`), zero past row `limit`.
__device__ __forceinline__ void load_tile(float (*sh)[kMaxD], const float* src, size_t stride,
                                          int r0, int limit, int D) {
  for (int idx = int(threadIdx.x); idx < kTile * D; idx += int(blockDim.x)) {
    const int r = idx / D, d = idx % D;
    sh[r][d] = r0 + r < limit ? src[size_t(r0 + r) * stride + d] : 0.0f;
  }
}

// reg[k] = row[lane + 4k] (0 past D or when !valid).
__device__ __forceinline__ void load_row(float (&reg)[kDimsPerLane], const float* row, bool valid,
                                         int lane, int D) {
  NURI_ATTN_UNROLL
  for (int k = 0; k < kDimsPerLane; ++k) {
    const int d = lane + kLanesPerRow * k;
    reg[k] = valid && d < D ? row[d] : 0.0f;
  }
}

// This lane's part of reg . sh_row.
__device__ __forceinline__ float partial_dot(const float (&reg)[kDimsPerLane], const float* sh_row,
                                             int lane, int D) {
  float s = 0.0f;
  NURI_ATTN_UNROLL
  for (int k = 0; k < kDimsPerLane; ++k) {
    const int d = lane + kLanesPerRow * k;
    if (d < D) s += reg[k] * sh_row[d];
  }
  return s;
}
}  // namespace

__global__ void attention_forward_kernel(float* out, float* lse, const float* qkv, int T, int H,
                                         int KV, int D, float scale) {
  __shared__ float ks[kTile][kMaxD];
  __shared__ float vs[kTile][kMaxD];
  const int bh = int(blockIdx.x), b = bh / H, h = bh % H, kvh = h / (H / KV);
  const size_t R = size_t(H + 2 * KV) * D, OS = size_t(H) * D;
  const float* base = qkv + size_t(b) * T * R;
  const float* K = base + size_t(H + kvh) * D;
  const float* V = base + size_t(H + KV + kvh) * D;
  const int lane = int(threadIdx.x) % kLanesPerRow;
  const int i0 = int(blockIdx.y) * kRowsPerBlock;
  const int i = i0 + int(threadIdx.x) / kLanesPerRow;
  const bool valid = i < T;
  float q[kDimsPerLane], o[kDimsPerLane];
  load_row(q, base + size_t(i) * R + size_t(h) * D, valid, lane, D);
  NURI_ATTN_UNROLL
  for (int k = 0; k < kDimsPerLane; ++k) o[k] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  // no row of the block looks past kend - 1
  const int kend = T < i0 + kRowsPerBlock ? T : i0 + kRowsPerBlock;
  for (int j0 = 0; j0 < kend; j0 += kTile) {
    __syncthreads();  // the previous tile is no longer read
    load_tile(ks, K, R, j0, kend, D);
    load_tile(vs, V, R, j0, kend, D);
    __syncthreads();
    float s[kTile];
    float tmax = -INFINITY;
    NURI_ATTN_UNROLL
    for (int jj = 0; jj < kTile; ++jj) {
      const float dot = row_sum(partial_dot(q, ks[jj], lane, D));
      const int j = j0 + jj;
      s[jj] = j <= i && j < kend ? scale * dot : -INFINITY;
      tmax = fmaxf(tmax, s[jj]);
    }
    const float mnew = fmaxf(m, tmax);
    if (mnew == -INFINITY) continue;  // nothing unmasked yet (no shuffles below)
    const float corr = expf(m - mnew);  // 0 on the first tile (m = -inf)
    l *= corr;
    NURI_ATTN_UNROLL
    for (int k = 0; k < kDimsPerLane; ++k) o[k] *= corr;
    NURI_ATTN_UNROLL
    for (int jj = 0; jj < kTile; ++jj) {
      if (s[jj] == -INFINITY) continue;
      const float p = expf(s[jj] - mnew);
      l += p;
      NURI_ATTN_UNROLL
      for (int k = 0; k < kDimsPerLane; ++k) {
        const int d = lane + kLanesPerRow * k;
        if (d < D) o[k] += p * vs[jj][d];
      }
    }
    m = mnew;
  }
  if (!valid) return;
  const float inv = 1.0f / l;
  float* orow = out + (size_t(b) * T + i) * OS + size_t(h) * D;
  NURI_ATTN_UNROLL
  for (int k = 0; k < kDimsPerLane; ++k) {
    const int d = lane + kLanesPerRow * k;
    if (d < D) orow[d] = o[k] * inv;
  }
  if (lane == 0) lse[(size_t(b) * H + h) * T + i] = m + logf(l);
}

__global__ void attention_backward_dq_kernel(float* dqkv, const float* dout, const float* qkv,
                                             const float* out, const float* lse, int T, int H,
                                             int KV, int D, float scale) {
  __shared__ float ks[kTile][kMaxD];
  __shared__ float vs[kTile][kMaxD];
  const int bh = int(blockIdx.x), b = bh / H, h = bh % H, kvh = h / (H / KV);
  const size_t R = size_t(H + 2 * KV) * D, OS = size_t(H) * D;
  const float* base = qkv + size_t(b) * T * R;
  const float* K = base + size_t(H + kvh) * D;
  const float* V = base + size_t(H + KV + kvh) * D;
  const int lane = int(threadIdx.x) % kLanesPerRow;
  const int i0 = int(blockIdx.y) * kRowsPerBlock;
  const int i = i0 + int(threadIdx.x) / kLanesPerRow;
  const bool valid = i < T;
  float q[kDimsPerLane], dO[kDimsPerLane], dq[kDimsPerLane];
  load_row(q, base + size_t(i) * R + size_t(h) * D, valid, lane, D);
  const size_t orow = (size_t(b) * T + i) * OS + size_t(h) * D;
  load_row(dO, dout + orow, valid, lane, D);
  float delta = 0.0f;
  {
    float o[kDimsPerLane];
    load_row(o, out + orow, valid, lane, D);
    NURI_ATTN_UNROLL
    for (int k = 0; k < kDimsPerLane; ++k) delta += dO[k] * o[k];
    delta = row_sum(delta);
  }
  const float li = valid ? lse[(size_t(b) * H + h) * T + i] : 0.0f;
  NURI_ATTN_UNROLL
  for (int k = 0; k < kDimsPerLane; ++k) dq[k] = 0.0f;
  const int kend = T < i0 + kRowsPerBlock ? T : i0 + kRowsPerBlock;
  for (int j0 = 0; j0 < kend; j0 += kTile) {
    __syncthreads();
    load_tile(ks, K, R, j0, kend, D);
    load_tile(vs, V, R, j0, kend, D);
    __syncthreads();
    NURI_ATTN_UNROLL
    for (int jj = 0; jj < kTile; ++jj) {
      const float sdot = row_sum(partial_dot(q, ks[jj], lane, D));
      const float pdot = row_sum(partial_dot(dO, vs[jj], lane, D));
      const int j = j0 + jj;
      if (!(valid && j <= i && j < kend)) continue;
      const float p = expf(scale * sdot - li);
      const float ds = p * (pdot - delta);
      NURI_ATTN_UNROLL
      for (int k = 0; k < kDimsPerLane; ++k) {
        const int d = lane + kLanesPerRow * k;
        if (d < D) dq[k] += ds * ks[jj][d];
      }
    }
  }
  if (!valid) return;
  float* dqrow = dqkv + (size_t(b) * T + i) * R + size_t(h) * D;
  NURI_ATTN_UNROLL
  for (int k = 0; k < kDimsPerLane; ++k) {
    const int d = lane + kLanesPerRow * k;
    if (d < D) dqrow[d] = scale * dq[k];
  }
}

__global__ void attention_backward_dkdv_kernel(float* dqkv, const float* dout, const float* qkv,
                                               const float* out, const float* lse, int T, int H,
                                               int KV, int D, float scale) {
  __shared__ float qs[kTile][kMaxD];
  __shared__ float dos[kTile][kMaxD];
  __shared__ float ls[kTile];
  __shared__ float deltas[kTile];
  const int bkv = int(blockIdx.x), b = bkv / KV, kvh = bkv % KV, group = H / KV;
  const size_t R = size_t(H + 2 * KV) * D, OS = size_t(H) * D;
  const float* base = qkv + size_t(b) * T * R;
  const int lane = int(threadIdx.x) % kLanesPerRow;
  const int j_first = int(blockIdx.y) * kRowsPerBlock;
  const int j = j_first + int(threadIdx.x) / kLanesPerRow;
  const bool valid = j < T;
  float kr[kDimsPerLane], vr[kDimsPerLane], dk[kDimsPerLane], dv[kDimsPerLane];
  load_row(kr, base + size_t(j) * R + size_t(H + kvh) * D, valid, lane, D);
  load_row(vr, base + size_t(j) * R + size_t(H + KV + kvh) * D, valid, lane, D);
  NURI_ATTN_UNROLL
  for (int k = 0; k < kDimsPerLane; ++k) dk[k] = dv[k] = 0.0f;
  for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
    const float* Q = base + size_t(h) * D;
    const float* dO = dout + size_t(b) * T * OS + size_t(h) * D;
    const float* O = out + size_t(b) * T * OS + size_t(h) * D;
    const float* L = lse + (size_t(b) * H + h) * T;
    for (int i0 = j_first; i0 < T; i0 += kTile) {  // rows i < j_first see none of these keys
      __syncthreads();
      load_tile(qs, Q, R, i0, T, D);
      load_tile(dos, dO, OS, i0, T, D);
      // delta of the tile's rows: each group of 4 lanes takes rows r, r + 16.
      for (int r = int(threadIdx.x) / kLanesPerRow; r < kTile; r += kRowsPerBlock) {
        const int i = i0 + r;
        float part = 0.0f;
        if (i < T)
          for (int d = lane; d < D; d += kLanesPerRow)
            part += dO[size_t(i) * OS + d] * O[size_t(i) * OS + d];
        part = row_sum(part);
        if (lane == 0) {
          deltas[r] = part;
          ls[r] = i < T ? L[i] : 0.0f;
        }
      }
      __syncthreads();
      for (int r = 0; r < kTile; ++r) {
        const float sdot = row_sum(partial_dot(kr, qs[r], lane, D));
        const float pdot = row_sum(partial_dot(vr, dos[r], lane, D));
        const int i = i0 + r;
        if (!(valid && i < T && i >= j)) continue;
        const float p = expf(scale * sdot - ls[r]);
        const float ds = p * (pdot - deltas[r]);
        NURI_ATTN_UNROLL
        for (int k = 0; k < kDimsPerLane; ++k) {
          const int d = lane + kLanesPerRow * k;
          if (d < D) {
            dv[k] += p * dos[r][d];
            dk[k] += ds * qs[r][d];
          }
        }
      }
    }
  }
  if (!valid) return;
  float* dkrow = dqkv + (size_t(b) * T + j) * R + size_t(H + kvh) * D;
  float* dvrow = dqkv + (size_t(b) * T + j) * R + size_t(H + KV + kvh) * D;
  NURI_ATTN_UNROLL
  for (int k = 0; k < kDimsPerLane; ++k) {
    const int d = lane + kLanesPerRow * k;
    if (d < D) {
      dkrow[d] = scale * dk[k];
      dvrow[d] = dv[k];
    }
  }
}

namespace {
bool attention_shape_ok(int B, int T, int H, int KV, int D) {
  if (B < 0 || T < 0 || H <= 0 || KV <= 0 || D <= 0 || D > kMaxD || H % KV != 0) return false;
  const size_t row_blocks = (size_t(T) + kRowsPerBlock - 1) / kRowsPerBlock;
  return row_blocks <= 65535 && size_t(B) * H <= size_t(0x7fffffff);
}
}  // namespace

cudaError_t attention_forward(float* out, float* lse, const float* qkv, int B, int T, int H,
                              int KV, int D, cudaStream_t stream) {
  NURI_NVTX_RANGE("attention_forward");
  if (!attention_shape_ok(B, T, H, KV, D)) return cudaErrorInvalidValue;
  if (B == 0 || T == 0) return cudaSuccess;
  const float scale = 1.0f / sqrtf(float(D));
  const dim3 grid(unsigned(B * H), blocks_for(size_t(T), kRowsPerBlock));
  NURI_LAUNCH(attention_forward_kernel, grid, kThreads, 0, stream, out, lse, qkv, T, H, KV, D,
              scale);
  return cudaGetLastError();
}

cudaError_t attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                               const float* lse, int B, int T, int H, int KV, int D,
                               cudaStream_t stream) {
  NURI_NVTX_RANGE("attention_backward");
  if (!attention_shape_ok(B, T, H, KV, D)) return cudaErrorInvalidValue;
  if (B == 0 || T == 0) return cudaSuccess;
  const float scale = 1.0f / sqrtf(float(D));
  const unsigned row_blocks = blocks_for(size_t(T), kRowsPerBlock);
  NURI_LAUNCH(attention_backward_dq_kernel, dim3(unsigned(B * H), row_blocks), kThreads, 0, stream,
              dqkv, dout, qkv, out, lse, T, H, KV, D, scale);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  NURI_LAUNCH(attention_backward_dkdv_kernel, dim3(unsigned(B * KV), row_blocks), kThreads, 0,
              stream, dqkv, dout, qkv, out, lse, T, H, KV, D, scale);
  return cudaGetLastError();
}

}  // namespace nuri::cuda
